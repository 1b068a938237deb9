"""Readers for the OVO-Bench and StreamingBench annotation formats -> timed multiple-choice questions.

Both benchmarks ask questions at a moment of a video; a streaming model sees the video up to that
moment. The readers turn their annotation files into one common list of `TimedQuestion`
{video, time_s, question, options, answer, task} and score a model's reply by the option letter it
names (or, failing that, the one option whose text it contains). Videos are not shipped; the harness
entry `run_benchmark` (below) reads them from a user-given root.

OVO-Bench (one JSON list, `ovo_bench_new.json`), as written from its public schema:
- backward / real-time tasks (EPM, ASI, HLD, STU, OJR, ATR, ACR, OCR, FPD): {"id", "task", "video",
  "realtime": seconds, "question", "options": [text, ...], "gt": index of the right option};
- forward tasks, one question per `test_info` entry, each at its own "realtime":
  REC {"activity", "test_info": [{"realtime", "count"}]} -> "how many times" (numeric answer);
  SSR {"test_info": [{"realtime", "step", "type": 1 if the step is being done}]} -> yes/no;
  CRR {"question", "test_info": [{"realtime", "type": 1 if answerable now}]} -> yes/no.
StreamingBench (one JSON list of videos): {"video_path" | "video", "questions": [{"task_type",
"question", "time_stamp": "HH:MM:SS" | seconds, "options": ["A. text", ...] | [text, ...],
"answer": "A" | text}]}; a flat list of questions with "video_path" each is read too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import protocol as P
from engine.eval.text import normalise

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class TimedQuestion:
    video: str  # path relative to the video root
    time_s: float  # the question is asked at this moment of the video
    question: str
    options: tuple[str, ...]  # option texts without letters; () for an open (numeric) answer
    answer: str  # the right letter ("A".."J"), or the expected text of an open answer
    task: str
    qid: str = ""

    def prompt(self) -> str:
        if not self.options:
            return self.question
        lines = [self.question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options)]
        return "\n".join(lines) + "\nAnswer with the option's letter."

    def to_dict(self) -> dict:
        return asdict(self)


def seconds(stamp: Any) -> float:
    """ "HH:MM:SS(.s)", "MM:SS", or a number -> seconds."""
    if isinstance(stamp, int | float):
        return float(stamp)
    parts = [float(p) for p in str(stamp).strip().split(":")]
    s = 0.0
    for p in parts:
        s = s * 60 + p
    return s


_LETTERED = re.compile(r"^\s*\(?([A-J])[\.\):]\s*(.*)$", re.S)


def _strip_letter(option: str) -> str:
    m = _LETTERED.match(str(option))
    return m.group(2).strip() if m else str(option).strip()


def _letter_of(answer: Any, options: list[str]) -> str:
    a = str(answer).strip()
    if re.fullmatch(r"\(?[A-J]\)?\.?", a):
        return a.strip("().")
    m = _LETTERED.match(a)
    if m:
        return m.group(1)
    texts = [_strip_letter(o).lower() for o in options]
    if a.lower() in texts:
        return LETTERS[texts.index(a.lower())]
    raise ValueError(f"answer {answer!r} is neither a letter nor one of the options")


# ---------------------------------------------------------------------------------------------
# Readers

_YES_NO = ("Yes", "No")


def read_ovo_bench(data: list | str | Path) -> list[TimedQuestion]:
    items = _load(data)
    out: list[TimedQuestion] = []
    for it in items:
        task, video, qid = str(it.get("task", "")), str(it["video"]), str(it.get("id", ""))
        if "test_info" not in it:  # backward / real-time
            opts = [_strip_letter(o) for o in it["options"]]
            gt = it["gt"]
            letter = LETTERS[int(gt)] if isinstance(gt, int) or str(gt).isdigit() else _letter_of(gt, opts)
            out.append(
                TimedQuestion(video, seconds(it["realtime"]), it["question"], tuple(opts), letter, task, qid)
            )
            continue
        for j, ti in enumerate(it["test_info"]):
            t = seconds(ti["realtime"])
            sub = f"{qid}.{j}"
            if task == "REC":
                q = f"How many times have they done the following activity so far: {it['activity']}?"
                out.append(TimedQuestion(video, t, q, (), str(int(ti["count"])), task, sub))
            elif task == "SSR":
                q = f"Are they doing this step now: {ti['step']}?"
                out.append(
                    TimedQuestion(video, t, q, _YES_NO, "A" if int(ti["type"]) == 1 else "B", task, sub)
                )
            elif task == "CRR":
                q = f"Can this question be answered now from what you have seen: {it['question']}?"
                out.append(
                    TimedQuestion(video, t, q, _YES_NO, "A" if int(ti["type"]) == 1 else "B", task, sub)
                )
            else:
                raise ValueError(f"unknown OVO-Bench forward task {task!r}")
    return out


def read_streamingbench(data: list | str | Path) -> list[TimedQuestion]:
    items = _load(data)
    out: list[TimedQuestion] = []
    for vi, it in enumerate(items):
        qs = it.get("questions")
        if qs is None:  # a flat list of questions
            qs, video = [it], it.get("video_path") or it.get("video")
        else:
            video = it.get("video_path") or it.get("video")
        for qi, q in enumerate(qs):
            opts = [_strip_letter(o) for o in q["options"]]
            stamp = q.get("time_stamp", q.get("timestamp"))
            out.append(
                TimedQuestion(
                    str(q.get("video_path") or video),
                    seconds(stamp),
                    q["question"],
                    tuple(opts),
                    _letter_of(q["answer"], q["options"]),
                    str(q.get("task_type", q.get("task", ""))),
                    str(q.get("id", f"{vi}.{qi}")),
                )
            )
    return out


def _load(data: list | str | Path) -> list:
    if isinstance(data, list):
        return data
    obj = json.loads(Path(data).read_text(encoding="utf-8"))
    if isinstance(obj, dict):  # some releases key the list by split or task
        lists = [v for v in obj.values() if isinstance(v, list)]
        obj = [x for v in lists for x in v]
    return obj


READERS: dict[str, Callable[[Any], list[TimedQuestion]]] = {
    "ovo": read_ovo_bench,
    "streamingbench": read_streamingbench,
}

# ---------------------------------------------------------------------------------------------
# Scoring


def chosen_letter(reply: str, options: Iterable[str]) -> str | None:
    """The option a reply names: a standalone letter ("B", "(B)", "B.", "Answer: B"), else the only
    option whose text it contains."""
    options = list(options)
    letters = LETTERS[: len(options)]
    m = re.search(rf"(?:^|[^A-Za-z])\(?([{letters}])(?:[\.\):,]|\s|$)", reply.strip())
    if m and letters:
        return m.group(1)
    low = reply.lower()
    hits = [LETTERS[i] for i, o in enumerate(options) if o and re.search(rf"\b{re.escape(o.lower())}\b", low)]
    return hits[0] if len(hits) == 1 else None


def is_correct(q: TimedQuestion, reply: str) -> bool:
    if not q.options:  # open numeric answer
        nums = re.findall(r"\d+", normalise(reply))
        return bool(nums) and nums[0] == q.answer
    return chosen_letter(reply, q.options) == q.answer


@dataclass
class BenchResults:
    per_task: dict[str, list[int]] = field(default_factory=dict)  # task -> [n, correct]
    replies: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        n = sum(v[0] for v in self.per_task.values())
        return sum(v[1] for v in self.per_task.values()) / n if n else None

    def markdown(self) -> str:
        out = ["| task | n | accuracy |", "|---|---|---|"]
        for t, (n, c) in sorted(self.per_task.items()):
            out.append(f"| {t} | {n} | {100 * c / n:.1f}% |")
        acc = self.accuracy
        n = sum(v[0] for v in self.per_task.values())
        out.append(f"| **all** | {n} | {'-' if acc is None else f'{100 * acc:.1f}%'} |")
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {"per_task": self.per_task, "accuracy": self.accuracy, "replies": self.replies}


def evaluate(questions: Iterable[TimedQuestion], answer: Callable[[TimedQuestion], str]) -> BenchResults:
    """answer(question) -> the model's reply; scored by option letter."""
    res = BenchResults()
    for q in questions:
        reply = answer(q)
        ok = is_correct(q, reply)
        t = res.per_task.setdefault(q.task, [0, 0])
        t[0] += 1
        t[1] += int(ok)
        res.replies.append({"qid": q.qid, "task": q.task, "reply": reply, "answer": q.answer, "correct": ok})
    return res


def run_benchmark(
    ckpt,
    questions,
    video_root,
    system_prompt: str | None = None,
    fps: float = 1.0,
    max_frames: int = 256,
    answer_fn: Callable | None = None,
):
    """Each timed question: the video up to time_s at `fps` through the decoder, ask, score by letter.
    answer_fn(frames, prompt) -> text replaces the model (tests). Returns BenchResults."""
    from engine.eval.harness import read_video_frames, stream_answer

    root = Path(video_root)

    def answer(q) -> str:
        frames = read_video_frames(root / q.video, q.time_s, fps, max_frames)
        prompt = q.prompt()
        if answer_fn is not None:
            return answer_fn(frames, prompt)
        return stream_answer(ckpt, frames, prompt, system_prompt or P.REALTIME_SYSTEM_PROMPT)

    return evaluate(questions, answer)
