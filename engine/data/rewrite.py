"""Paraphrasing questions and answers of the synthesised records (off by default): any
OpenAI-compatible server rewrites the wording; an answer keeps every value it must say, or stays as it
was. Used by `python -m engine.data.synth --rewrite-url ...`.
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import replace
from typing import Protocol

from engine.data.layout import _MARKUP
from engine.data.plans import Plan


class Rewriter(Protocol):
    """Paraphrases one question or answer; must keep its meaning (values are checked for answers)."""

    def rewrite(self, text: str, role: str) -> str:  # role: "question" or "answer"
        ...


_REWRITE_PROMPT = (
    "Paraphrase the user's {role} for a video assistant dataset. Keep its meaning, every number, colour, "
    "shape and position word. Reply with the paraphrase only, one sentence."
)


def _clean(text: str) -> str:
    text = _MARKUP.sub("", text).strip().strip('"').strip()
    return " ".join(text.split())


def _rewrite_plan(plan: Plan, rewriter: Rewriter, answers: bool) -> Plan:
    q = _clean(rewriter.rewrite(plan.text, "question")) or plan.text
    speeches = plan.speeches
    if answers:
        out = []
        for s in speeches:
            new = _clean(rewriter.rewrite(s.text, "answer"))
            keeps = all(re.search(rf"\b{re.escape(x)}\b", new, re.I) for x in s.accept)
            out.append(replace(s, text=new) if new and keeps else s)  # never trade a value for style
        speeches = tuple(out)
    return replace(plan, text=q, speeches=speeches)


class OpenAIRewriter:
    """Any OpenAI-compatible server (vLLM, llama.cpp, ...): POST {base_url}/v1/chat/completions."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, temperature: float = 0.7):
        base = base_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.model, self.api_key, self.temperature = model, api_key, temperature

    def rewrite(self, text: str, role: str) -> str:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": _REWRITE_PROMPT.format(role=role)},
                {"role": "user", "content": text},
            ],
            "temperature": self.temperature,
            "max_tokens": 96,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            out = json.loads(r.read().decode("utf-8"))
        return out["choices"][0]["message"]["content"]
