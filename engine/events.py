"""Events that leave the runtime: the only thing the GUI, the terminal printer and transcripts see.

Every event is a frozen dataclass with `t`, a time in seconds on the stream clock (0 = when the
session started). They cross threads, so they are immutable. This module knows nothing of tensors,
threads or Qt; `to_dict`/`from_dict` give the JSON form written to transcripts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    t: float  # stream-clock seconds

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


@dataclass(frozen=True)
class SessionStart(Event):
    session_id: str  # folder-safe id, also the transcript's name
    source: str  # what the user chose: a path, "webcam:0", "screen:1", "demo", "synthetic"
    model: str  # model folder or hub id
    trained: bool = True  # False when the model is an untrained random model (tests, no bundled weights)
    mode: str = ""  # "moss" or "stock": how the checkpoint is run (engine.config.detect_mode or the user's)
    decoding: str = ""  # how tokens are chosen, e.g. "greedy (...)" or "sampling (temperature 1, ...)"


@dataclass(frozen=True)
class FrameSeen(Event):
    index: int  # frame number in the stream (0, 1, 2, ...), counting only frames that entered the model
    source_t: float  # the frame's own time in the source (file position, or capture time)
    text_pos: int = -1  # position of its <|image|> token in the text stream (-1 until committed)


@dataclass(frozen=True)
class TurnStart(Event):
    turn: int  # 0 is the silent opening turn, 1.. are user questions
    question: str  # the user's text ("" for the opening turn)


@dataclass(frozen=True)
class TurnEnd(Event):
    turn: int
    interrupted: bool  # True when a new question cut the answer (barge-in)


@dataclass(frozen=True)
class Token(Event):
    turn: int
    segment: int  # speech segment id, unique within the session
    text: str  # decoded text piece (may be "" for a byte-fragment that completes later)


@dataclass(frozen=True)
class Silence(Event):
    turn: int
    frame: int  # the frame the model chose to stay silent after


@dataclass(frozen=True)
class SpeechStart(Event):
    turn: int
    segment: int
    revises: int | None = None  # id of the earlier segment under the same question this one revises


@dataclass(frozen=True)
class SpeechEnd(Event):
    turn: int
    segment: int
    text: str  # the whole segment
    interrupted: bool = False  # cut by barge-in or stop


@dataclass(frozen=True)
class Revision(Event):
    """A second (third, ...) speech segment under the same question after a silence."""

    turn: int
    segment: int
    revises: int  # the segment it supersedes
    previous_text: str


@dataclass(frozen=True)
class Stats(Event):
    perception_fps: float  # frames encoded per second, recent window
    lag_s: float  # now minus the capture time of the newest frame in memory
    frames_in_memory: int
    frames_dropped: int  # total, by mailbox replacement and full ring
    tokens_per_s: float  # decode speed, recent window
    memory_mb: float  # visual memory + text cache, allocated
    rss_mb: float = 0.0  # process resident memory


@dataclass(frozen=True)
class Compacted(Event):
    """Old parts of the stream left the model's memory (the user should know what it still sees)."""

    what: str  # "frames": the visual memory is full and slides; "context": the text was compacted
    frames_kept: int  # frames the model still attends to
    message: str  # one sentence for the user


@dataclass(frozen=True)
class Unfamiliar(Event):
    """The video left (or came back to) the world the model knows (engine.novelty): outside it the
    model stays quiet and answers a question with its checkpoint's plain sentence."""

    frame: int  # the frame at which it changed
    outside: bool  # True: the video is unlike the model's world from this frame on
    message: str  # one sentence for the user


@dataclass(frozen=True)
class Error(Event):
    message: str  # one sentence a user can act on
    where: str = ""  # "source", "perception", "generation", "model", ...
    fatal: bool = False  # True when the session stopped because of it


@dataclass(frozen=True)
class SessionEnd(Event):
    reason: str = "stopped"  # "stopped", "source ended", "duration", "error"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        SessionStart,
        FrameSeen,
        TurnStart,
        TurnEnd,
        Token,
        Silence,
        SpeechStart,
        SpeechEnd,
        Revision,
        Stats,
        Compacted,
        Unfamiliar,
        Error,
        SessionEnd,
    )
}


def from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form; unknown kinds or fields raise ValueError."""
    if not isinstance(d, dict):
        raise ValueError("an event must be a JSON object")
    kind = d.get("kind")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    extra = set(kwargs) - names
    if extra:
        raise ValueError(f"{kind} has unknown fields {sorted(extra)}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{kind}: {e}") from None


__all__ = [name for name in EVENT_TYPES] + ["Event", "EVENT_TYPES", "from_dict", "field"]
