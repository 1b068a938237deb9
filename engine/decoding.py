"""Decoding: how the next token is chosen from the logits (greedy, or sampling as transformers does it).

Owns `Sampling` (the settings), reading a checkpoint's `generation_config.json` into it the way its
authors' scripts use it, and the choice itself. The sampling order and cut-offs are transformers'
(`generate` with do_sample: repetition penalty, temperature, top-k, top-p, then one multinomial draw),
so a published checkpoint decodes with the distribution its authors' code draws from (a test compares
with transformers' logits processors). It knows nothing of streams, threads or models.

One deliberate difference: the repetition penalty looks at the speech segment in progress, not at the
whole stream (a real-time stream repeats its protocol tokens by design; penalising them would push
the model off `<|silence|>`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

CHOICES = ("auto", "greedy", "sample")
GENERATION_CONFIG = "generation_config.json"
MAX_CONFIG_BYTES = 1 << 20  # a generation_config.json is a few hundred bytes; never read more than this

# transformers' GenerationConfig defaults for the fields we use
HF_DEFAULTS = {
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
}
# Our bundled model (no generation_config.json) decodes greedily with a guard against token loops: a
# small model can fall into "large large large ..." until the segment cap on input unlike its world.
BUNDLED_NO_REPEAT_NGRAM = 4


class DecodingError(ValueError):
    """A decoding setting or generation_config.json a user gave us is unusable (one sentence)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy (argmax); > 0 = sample
    top_k: int = 0  # keep the k most likely tokens (0 = all)
    top_p: float = 1.0  # keep the smallest set whose probability reaches top_p (1 = all)
    repetition_penalty: float = 1.0  # over the current speech segment (1 = none)
    seed: int = 0  # the sampling generator's seed: the same stream says the same words
    origin: str = "default"  # where these settings come from, for the session's record
    # never say the same n tokens twice in one answer (0 = off): stops "large large large ..." loops
    no_repeat_ngram: int = 0

    def __post_init__(self):
        if not (self.temperature >= 0 and self.temperature < float("inf")):
            raise DecodingError(
                f"temperature must be 0 (greedy) or a positive number, not {self.temperature}."
            )
        if self.top_k < 0:
            raise DecodingError(f"top-k must be 0 (off) or a positive whole number, not {self.top_k}.")
        if not 0 < self.top_p <= 1:
            raise DecodingError(f"top-p must be above 0 and at most 1, not {self.top_p}.")
        if not (self.repetition_penalty > 0 and self.repetition_penalty < float("inf")):
            raise DecodingError(
                f"repetition penalty must be a positive number, not {self.repetition_penalty}."
            )

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def describe(self) -> str:
        """One line for the session's record, e.g. 'sampling (temperature 1, top-k 50, seed 0; ...)'."""
        rep = f", repetition penalty {self.repetition_penalty:g}" if self.repetition_penalty != 1.0 else ""
        if self.no_repeat_ngram:
            rep += f", no repeated {self.no_repeat_ngram}-grams"
        if self.greedy:
            return f"greedy{rep} ({self.origin})"
        parts = [f"temperature {self.temperature:g}"]
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.top_p < 1.0:
            parts.append(f"top-p {self.top_p:g}")
        return f"sampling ({', '.join(parts)}{rep}, seed {self.seed}; {self.origin})"


def read_generation_config(folder: str | Path) -> dict | None:
    """The checkpoint's generation_config.json as a dict, or None when it has none (bounded read)."""
    from engine.files import FileProblem, read_bounded

    f = Path(folder) / GENERATION_CONFIG
    if not f.exists():
        return None
    try:
        raw = read_bounded(f, MAX_CONFIG_BYTES, GENERATION_CONFIG)
    except FileProblem as e:
        raise DecodingError(str(e)) from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DecodingError(f"{f} is not valid JSON ({e}).") from None
    if not isinstance(d, dict):
        raise DecodingError(f"{f} must hold a JSON object.")
    return d


def checkpoint_defaults(gen_config: dict | None, mode: str) -> Sampling:
    """What the checkpoint's authors decode with.

    No generation_config.json (our bundled model, a bare folder): greedy, what our evaluation uses.
    A MOSS checkpoint: its authors' real-time scripts call generate with sampling on, so the file's
    temperature / top-k / top-p apply (transformers' defaults, 1.0 / 50 / 1.0, where it is silent).
    Any other checkpoint (stock Llama-3.2-Vision): exactly what the file says, as `generate` reads it
    (greedy unless it sets do_sample).
    """
    if gen_config is None:
        return Sampling(origin="no generation_config.json", no_repeat_ngram=BUNDLED_NO_REPEAT_NGRAM)
    g = {**HF_DEFAULTS, **{k: v for k, v in gen_config.items() if k in HF_DEFAULTS and v is not None}}
    try:
        sample = mode == "moss" or bool(g["do_sample"])
        temperature = float(g["temperature"]) if sample else 0.0
        s = Sampling(
            temperature=temperature,
            top_k=int(g["top_k"]) if sample else 0,
            top_p=float(g["top_p"]) if sample else 1.0,
            repetition_penalty=float(g["repetition_penalty"]),
            no_repeat_ngram=int(g["no_repeat_ngram_size"]),
            origin=GENERATION_CONFIG
            + (" with sampling, as the MOSS real-time scripts run" if mode == "moss" else ""),
        )
    except (TypeError, ValueError) as e:
        raise DecodingError(f"{GENERATION_CONFIG} has an unusable value ({e}).") from None
    if sample and s.temperature == 0:  # transformers treats do_sample with temperature 0 as greedy
        s = replace(s, top_k=0, top_p=1.0)
    return s


def choose(
    choice: str,
    defaults: Sampling,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int = 0,
) -> Sampling:
    """The user's choice over the checkpoint's defaults: "auto" (the checkpoint's), "greedy" or
    "sample" (the checkpoint's sampling settings, or transformers' 1.0 / top-k 50 when it is greedy);
    explicit numbers win over both."""
    if choice not in CHOICES:
        raise DecodingError(f"decoding must be one of {', '.join(CHOICES)}, not {choice!r}.")
    s = replace(defaults, seed=seed)
    if choice == "greedy":
        s = replace(s, temperature=0.0, top_k=0, top_p=1.0, origin="chosen: greedy")
    elif choice == "sample" and s.greedy:
        s = replace(s, temperature=1.0, top_k=HF_DEFAULTS["top_k"], top_p=1.0, origin="chosen: sampling")
    elif choice == "sample":
        s = replace(s, origin=f"chosen: sampling with {s.origin}")
    over = {
        k: v
        for k, v in dict(
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty
        ).items()
        if v is not None
    }
    if over:
        s = replace(s, **over, origin=s.origin + ", with overrides")
    return s


def penalise(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """transformers' repetition penalty: divide positive scores of seen tokens, multiply negative ones."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(set(seen)), device=logits.device)
    vals = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def filtered_probs(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """(V,) float logits -> (V,) probabilities after temperature, top-k and top-p (sampling only)."""
    scores = logits.float() / s.temperature
    if s.top_k and s.top_k < scores.numel():
        kth = torch.topk(scores, s.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if s.top_p < 1.0:
        order = scores.argsort()  # ascending, as transformers does
        cum = scores[order].softmax(-1).cumsum(-1)
        drop = cum <= 1 - s.top_p
        drop[-1] = False  # always keep the most likely token
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return scores.softmax(-1)


def repeated_ngram_tokens(seen: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in `seen` (transformers' no_repeat_ngram_size)."""
    if n <= 0 or len(seen) < n:
        return []
    prefix = tuple(seen[len(seen) - n + 1 :]) if n > 1 else ()
    return sorted({seen[i + n - 1] for i in range(len(seen) - n + 1) if tuple(seen[i : i + n - 1]) == prefix})


def next_token(logits: torch.Tensor, s: Sampling, seen: list[int], generator: torch.Generator) -> int:
    """Choose one token id from (V,) logits (banned tokens already at -inf)."""
    logits = penalise(logits.float(), seen, s.repetition_penalty)
    banned = repeated_ngram_tokens(seen, s.no_repeat_ngram)
    if banned:
        logits = logits.clone()
        logits[torch.tensor(banned, device=logits.device)] = float("-inf")
    if s.greedy:
        return int(logits.argmax())
    probs = filtered_probs(logits, s).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))
