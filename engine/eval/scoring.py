"""Scoring a replayed stream: what the model said at each frame (`Trace`), and how it is judged against
the record's ground truth (answers at asking, revisions within a window of a change, watch requests,
silence, false speech), tallied per kind in `Results` with its tables. Knows nothing of models.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.eval.text import matches

REVISION_WINDOW = 2  # frames after a change within which a revision must start


@dataclass
class Segment:
    sid: int
    turn: int
    start_frame: int
    end_frame: int = -1
    text: str = ""
    interrupted: bool = False


@dataclass
class Trace:
    """What the model did, per frame interval (the interval after frame f's <|image|>)."""

    n_frames: int
    text: list[str]  # speech text spoken in each interval
    spoke: list[bool]  # any speech token in the interval
    segments: list[Segment] = field(default_factory=list)
    turn_of: dict[int, int] = field(default_factory=dict)  # qid -> decoder turn
    tokens: int = 0  # decode steps (speech + silence)

    def under(self, qid: int) -> list[Segment]:
        t = self.turn_of.get(qid)
        return sorted((s for s in self.segments if s.turn == t), key=lambda s: (s.start_frame, s.sid))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Scores


@dataclass
class Tally:
    n: int = 0
    ok: int = 0

    def add(self, ok: bool) -> None:
        self.n += 1
        self.ok += bool(ok)

    @property
    def rate(self) -> float | None:
        return self.ok / self.n if self.n else None

    def merge(self, other: Tally) -> None:
        self.n += other.n
        self.ok += other.ok


def _tallies() -> dict[str, Tally]:
    return {}


@dataclass
class Results:
    answer: dict[str, Tally] = field(default_factory=_tallies)  # kind -> accuracy at asking
    revision: dict[str, Tally] = field(default_factory=_tallies)  # kind -> revision recall
    watch: Tally = field(default_factory=Tally)  # event comes: named within one frame of it
    watch_timing: Tally = field(default_factory=Tally)  # same, timing only (any words)
    watch_never: Tally = field(default_factory=Tally)  # event never comes: stayed silent
    events: Tally = field(default_factory=Tally)  # narrate: speech within one frame of each event
    false_speech: Tally = field(default_factory=Tally)  # silent frames (n) with speech (ok)
    offline: dict[str, Tally] = field(default_factory=_tallies)  # offline records, per kind
    offline_rt: dict[str, Tally] = field(default_factory=_tallies)  # real-time questions asked offline
    records: int = 0
    offline_records: int = 0
    frames: int = 0
    tokens: int = 0
    seconds: float = 0.0
    model: str = ""
    failures: list[dict] = field(default_factory=list)  # a few wrong answers, for reading

    def merge(self, other: Results) -> None:
        for name in ("answer", "revision", "offline", "offline_rt"):
            mine = getattr(self, name)
            for k, t in getattr(other, name).items():
                mine.setdefault(k, Tally()).merge(t)
        for name in ("watch", "watch_timing", "watch_never", "events", "false_speech"):
            getattr(self, name).merge(getattr(other, name))
        for name in ("records", "offline_records", "frames", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        self.failures = (self.failures + other.failures)[:50]

    @classmethod
    def from_dict(cls, d: dict) -> Results:
        """Inverse of dataclasses.asdict (worker processes send their Results this way)."""
        res = cls()
        for name in ("answer", "revision", "offline", "offline_rt"):
            setattr(res, name, {k: Tally(**t) for k, t in d[name].items()})
        for name in ("watch", "watch_timing", "watch_never", "events", "false_speech"):
            setattr(res, name, Tally(**d[name]))
        for name in ("records", "offline_records", "frames", "tokens", "seconds", "model", "failures"):
            setattr(res, name, d[name])
        return res

    def group(self, kinds: Iterable[str], which: str = "answer") -> Tally:
        t = Tally()
        for k in kinds:
            t.merge(getattr(self, which).get(k, Tally()))
        return t

    # ---- output --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        def tal(t: Tally) -> dict:
            return {"n": t.n, "ok": t.ok, "rate": t.rate}

        d: dict[str, Any] = {"model": self.model}
        for name in ("answer", "revision", "offline", "offline_rt"):
            d[name] = {k: tal(t) for k, t in sorted(getattr(self, name).items())}
        for name in ("watch", "watch_timing", "watch_never", "events", "false_speech"):
            d[name] = tal(getattr(self, name))
        d["answer_all"] = tal(self.group(self.answer))
        d["revision_all"] = tal(self.group(self.revision, "revision"))
        d["count_colour_presence"] = tal(self.group(("count", "colour", "presence")))
        for name in ("records", "offline_records", "frames", "tokens", "seconds"):
            d[name] = getattr(self, name)
        d["failures"] = self.failures
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def markdown(self) -> str:
        def pct(t: Tally | None) -> str:
            return "-" if t is None or t.rate is None else f"{100 * t.rate:.1f}% ({t.ok}/{t.n})"

        out = []
        if self.records:
            out += [
                f"Real-time ({self.records} records, {self.frames} frames, {self.tokens} decode steps, "
                f"{self.seconds:.1f} s)",
                "",
                "| kind | answer accuracy at asking | revision recall (<= 2 frames) |",
                "|---|---|---|",
            ]
            for k in sorted(set(self.answer) | set(self.revision)):
                out.append(f"| {k} | {pct(self.answer.get(k))} | {pct(self.revision.get(k))} |")
            out.append(
                f"| **all** | {pct(self.group(self.answer))} | {pct(self.group(self.revision, 'revision'))} |"
            )
            out += [
                "",
                "| metric | value | target |",
                "|---|---|---|",
                f"| answer accuracy, count + colour + presence | {pct(self.group(('count', 'colour', 'presence')))} | >= 90% |",
                f"| watch answered within 1 frame of the event (naming it) | {pct(self.watch)} | >= 90% |",
                f"| watch: speech within 1 frame (timing only) | {pct(self.watch_timing)} | |",
                f"| watch that never comes: stays silent | {pct(self.watch_never)} | |",
                f"| revisions within 2 frames of a change | {pct(self.group(self.revision, 'revision'))} | >= 85% |",
                f"| narrate: events spoken within 1 frame | {pct(self.events)} | |",
                f"| false-speech rate (speech on silent frames) | {pct(self.false_speech)} | <= 5% |",
            ]
        for title, table in (
            (f"Offline QA ({self.offline_records} offline records)", self.offline),
            ("Offline QA on the real-time questions (video up to the answer frame)", self.offline_rt),
        ):
            if not table:
                continue
            out += ["", title, "", "| kind | accuracy |", "|---|---|"]
            for k in sorted(table):
                out.append(f"| {k} | {pct(table[k])} |")
            rest = [k for k in table if k not in ("spatial", "order")]
            out.append(f"| **all but spatial/order** | {pct(self.group(rest, _attr(self, table)))} |")
            out.append(f"| **all** | {pct(self.group(table, _attr(self, table)))} |")
        return "\n".join(out).strip("\n")


def _attr(res: Results, table: dict) -> str:
    return "offline" if table is res.offline else "offline_rt"


def answer_at_asking(q: dict, trace: Trace) -> bool | None:
    """Was the question answered right when asked: its first speech at most a frame after the answer
    was due, saying an accepted value? None for a question with no answer to score (watch, narrate,
    or no answer in its ground truth)."""
    if q["kind"] in ("watch", "narrate"):
        return None
    answers = [s for s in q.get("speech", []) if s.get("spoken_frame") is not None and s["type"] == "answer"]
    if q.get("answer_frame") is None or not answers:
        return None
    segs = trace.under(int(q["qid"]))
    first = segs[0] if segs else None
    accept = answers[0].get("accept") or q.get("accept") or []
    return (
        first is not None
        and first.start_frame <= int(q["answer_frame"]) + 1
        and matches(first.text, accept, q["kind"])
    )


def score_record(
    meta: dict, trace: Trace, res: Results | None = None, window: int = REVISION_WINDOW
) -> Results:
    """Score one real-time record's trace into res (a new Results if None)."""
    res = res if res is not None else Results()
    res.records += 1
    res.frames += trace.n_frames
    res.tokens += trace.tokens
    for f in meta.get("silent_frames", []):
        if 0 <= f < trace.n_frames:
            res.false_speech.add(trace.spoke[f])
    for q in meta.get("questions", []):
        kind, qid = q["kind"], int(q["qid"])
        segs = trace.under(qid)
        speech = [s for s in q.get("speech", []) if s.get("spoken_frame") is not None]
        first = segs[0] if segs else None
        if kind == "watch":
            info = q.get("info") or {}
            if info.get("comes"):
                due = [s for s in speech if s["type"] == "watch"]
                if due:
                    fe = int(due[0]["frame"])
                    timely = first is not None and fe <= first.start_frame <= fe + 1
                    res.watch_timing.add(timely)
                    res.watch.add(timely and matches(first.text, due[0]["accept"]))
            else:
                res.watch_never.add(not segs)
            continue
        if kind == "narrate":
            for s in speech:
                if s["type"] == "event":
                    f = int(s["frame"])
                    res.events.add(any(f <= g.start_frame <= f + 1 for g in segs))
            continue
        answers = [s for s in speech if s["type"] == "answer"]
        ok = answer_at_asking(q, trace)
        if ok is not None:
            res.answer.setdefault(kind, Tally()).add(ok)
            if not ok and len(res.failures) < 50:
                res.failures.append(
                    {
                        "seed": meta.get("seed"),
                        "kind": kind,
                        "question": q["text"],
                        "expected": answers[0]["text"],
                        "said": first.text if first else None,
                        "at": first.start_frame if first else None,
                        "due": q["answer_frame"],
                    }
                )
        for s in speech:
            if s["type"] != "revision":
                continue
            r = int(s["frame"])
            hit = any(r <= g.start_frame <= r + window and matches(g.text, s["accept"], kind) for g in segs)
            res.revision.setdefault(kind, Tally()).add(hit)
    return res
