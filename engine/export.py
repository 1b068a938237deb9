"""A session as a conversation, and what it is exported to: SRT, WebVTT and Markdown.

Owns how the events of a session become a conversation (questions, answer segments with their
revisions and interruptions, silent stretches, errors) and every export of it; subtitle cues never
overlap, stay up for their reading time and end with the stream. Times are on the stream clock. It
knows nothing of files' durability (`engine.transcript` writes and reads sessions) or of Qt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.events import (
    Compacted,
    Error,
    Event,
    Revision,
    SessionEnd,
    SessionStart,
    Silence,
    SpeechEnd,
    SpeechStart,
    Token,
    TurnEnd,
    TurnStart,
    Unfamiliar,
)
from engine.files import write_text_atomic

# -- the conversation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    t: float  # when the user asked (stream clock)
    turn: int
    text: str


@dataclass(frozen=True)
class AnswerSegment:
    turn: int  # the question it answers (0 = the opening turn, unprompted commentary)
    segment: int  # unique within the session
    start: float
    end: float | None  # None when the transcript stops before the segment ended (a crash)
    text: str
    interrupted: bool  # cut by barge-in, stop, or the end of the session
    revises: int | None  # the earlier segment under the same question that this one replaces
    superseded_by: int | None  # the later segment that revises this one


@dataclass(frozen=True)
class SilentStretch:
    start: float  # first Silence event of the run
    end: float  # last Silence event of the run
    frames: int  # how many frames the model stayed silent after


@dataclass(frozen=True)
class ErrorNote:
    t: float
    message: str
    fatal: bool


@dataclass(frozen=True)
class Notice:
    """What the session told the user: memory compacted, video unlike the model's world."""

    t: float
    message: str


Entry = Question | AnswerSegment | SilentStretch | ErrorNote | Notice


@dataclass
class _Seg:
    """Mutable while events stream in; frozen into an AnswerSegment at the end."""

    turn: int
    segment: int
    start: float
    parts: list[str] = field(default_factory=list)
    end: float | None = None
    final_text: str | None = None
    interrupted: bool = False
    revises: int | None = None
    superseded_by: int | None = None

    def freeze(self) -> AnswerSegment:
        text = self.final_text if self.final_text else "".join(self.parts)
        return AnswerSegment(
            self.turn,
            self.segment,
            self.start,
            self.end,
            text,
            self.interrupted,
            self.revises,
            self.superseded_by,
        )


@dataclass
class _Quiet:
    start: float
    end: float
    frames: int


def build_conversation(events: Iterable[Event]) -> list[Entry]:
    """Questions, answer segments (tokens accumulated), silent stretches and errors, in time order.

    The segment's text is SpeechEnd's text when present (authoritative), else its tokens joined.
    A segment left open by TurnEnd or SessionEnd ends there, interrupted; one left open at the end
    of the events (a crash) has `end=None`. A transcript holding several sessions (appended runs)
    is read session by session: segment ids are only unique within one.
    """
    out: list[Question | _Seg | _Quiet | ErrorNote] = []
    segs: dict[int, _Seg] = {}
    quiet: _Quiet | None = None
    started = False

    def segment_of(turn: int, segment: int, t: float) -> _Seg:
        seg = segs.get(segment)
        if seg is None:  # tokens without a SpeechStart (a transcript begun mid-stream) open one
            seg = segs[segment] = _Seg(turn, segment, t)
            out.append(seg)
        return seg

    def link(seg: _Seg, revises: int) -> None:
        seg.revises = revises
        earlier = segs.get(revises)
        if earlier is not None and earlier is not seg:
            earlier.superseded_by = seg.segment

    def close_open(t: float, turn: int | None, interrupted: bool) -> None:
        for seg in segs.values():
            if seg.end is None and (turn is None or seg.turn == turn):
                seg.end = t
                seg.interrupted = seg.interrupted or interrupted

    for ev in events:
        if isinstance(ev, Silence):
            if quiet is None:
                quiet = _Quiet(ev.t, ev.t, 0)
                out.append(quiet)
            quiet.end = ev.t
            quiet.frames += 1
            continue
        if isinstance(
            ev, TurnStart | SpeechStart | Token | Revision | Error | SessionStart | Compacted | Unfamiliar
        ):
            quiet = None  # something happened: the silent run is over
        if isinstance(ev, SessionStart):
            if started:  # an appended run: its segment ids start over (open ones stay end=None: cut off)
                segs = {}
            started = True
        elif isinstance(ev, TurnStart):
            if ev.turn > 0 or ev.question:
                out.append(Question(ev.t, ev.turn, ev.question))
        elif isinstance(ev, SpeechStart):
            seg = segment_of(ev.turn, ev.segment, ev.t)
            if ev.revises is not None:
                link(seg, ev.revises)
        elif isinstance(ev, Token):
            segment_of(ev.turn, ev.segment, ev.t).parts.append(ev.text)
        elif isinstance(ev, SpeechEnd):
            seg = segment_of(ev.turn, ev.segment, ev.t)
            seg.end = ev.t
            seg.final_text = ev.text
            seg.interrupted = ev.interrupted
        elif isinstance(ev, Revision):
            link(segment_of(ev.turn, ev.segment, ev.t), ev.revises)
        elif isinstance(ev, TurnEnd):
            close_open(ev.t, ev.turn, ev.interrupted)
        elif isinstance(ev, Error):
            out.append(ErrorNote(ev.t, ev.message, ev.fatal))
        elif isinstance(ev, Compacted | Unfamiliar):
            out.append(Notice(ev.t, ev.message))
        elif isinstance(ev, SessionEnd):
            close_open(ev.t, None, True)
    entries: list[Entry] = []
    for item in out:
        if isinstance(item, _Seg):
            entries.append(item.freeze())
        elif isinstance(item, _Quiet):
            entries.append(SilentStretch(item.start, item.end, item.frames))
        else:
            entries.append(item)
    return entries


# -- subtitles -----------------------------------------------------------------------------------

MIN_CUE_S = 1.0  # a cue shorter than this flashes by unread
MIN_READ_S = 1.5  # the shortest time any cue stays on screen when there is room
CHARS_PER_S = 15.0  # reading speed used for segments with no end
MAX_OPEN_CUE_S = 10.0  # cap for such segments
MAX_CUE_CHARS = 84  # two subtitle lines of 42 characters, the usual broadcast limit


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def format_timestamp(t: float, sep: str = ",") -> str:
    """Seconds -> `HH:MM:SS,mmm` (SRT, sep=",") or `HH:MM:SS.mmm` (WebVTT, sep=".")."""
    ms = max(0, round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _chunks(text: str, limit: int = MAX_CUE_CHARS) -> list[str]:
    """Split at word boundaries into pieces of at most `limit` characters (a longer word stays whole)."""
    pieces: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > limit:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces


def subtitle_cues(events: Iterable[Event]) -> list[Cue]:
    """Questions and speech segments as timed cues, ordered by start.

    A long segment is split into several cues (two lines each) sharing its time span in proportion
    to their length. A revision is marked "(revised)", an interrupted segment ends with "…".
    """
    cues: list[Cue] = []
    for e in build_conversation(events):
        if isinstance(e, Question) and e.text.strip():
            text = f"Q: {' '.join(e.text.split())}"
            cues.append(Cue(e.t, e.t + reading_time(text), text))
        elif isinstance(e, AnswerSegment) and e.text.strip():
            text = " ".join(e.text.split())
            if e.revises is not None:
                text = f"(revised) {text}"
            if e.interrupted:
                text += " …"
            if e.end is not None:
                end = e.end
            else:
                end = e.start + min(MAX_OPEN_CUE_S, max(2.0, len(text) / CHARS_PER_S))
            pieces = _chunks(text)
            span = max(end - e.start, MIN_CUE_S * len(pieces))
            # Time in proportion to length, with a floor so that a last short piece is still readable.
            weights = [max(len(p), MAX_CUE_CHARS // 4) for p in pieces]
            t = e.start
            for piece, w in zip(pieces, weights, strict=True):
                d = span * w / sum(weights)
                cues.append(Cue(t, t + d, piece))
                t += d
    cues.sort(key=lambda c: c.start)
    ends = [e.t for e in events if isinstance(e, SessionEnd)]
    return schedule_cues(cues, ends[-1] if ends else None)


def reading_time(text: str) -> float:
    """Seconds a viewer needs for a cue: CHARS_PER_S characters a second, never under MIN_READ_S."""
    return max(MIN_READ_S, len(text) / CHARS_PER_S)


def schedule_cues(cues: list[Cue], stream_end: float | None = None) -> list[Cue]:
    """Cues that never overlap, each on screen for at least its reading time, none past the stream's
    end. Forward: a cue starts when the previous one has been read (a question and the answer that
    began while it was on screen follow each other) and lasts max(its span, its reading time).
    Backward, when that runs past the end: each cue ends by the next one's start (or the end) and
    starts early enough to be read, as far as the earlier cues leave room."""
    out: list[Cue] = []
    free = 0.0
    for c in sorted(cues, key=lambda c: c.start):
        start = max(c.start, free)
        end = max(c.end, start + reading_time(c.text))
        out.append(Cue(start, end, c.text))
        free = end
    if stream_end is None or not out or out[-1].end <= stream_end:
        return out
    limit = stream_end
    for i in range(len(out) - 1, -1, -1):
        c = out[i]
        end = min(c.end, limit)
        start = min(c.start, end - reading_time(c.text))
        floor = out[i - 1].start + MIN_CUE_S if i else 0.0  # leave the cue before something too
        start = max(start, min(floor, end - MIN_CUE_S), 0.0)
        out[i] = Cue(start, max(end, start), c.text)
        limit = out[i].start
        if i and out[i - 1].end <= limit:
            break
    return out


def _wrap(text: str, width: int = MAX_CUE_CHARS // 2) -> str:
    """Break a cue into at most two balanced-ish lines at a word boundary."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, len(text) // 2 + width // 4)
    if cut <= 0:
        cut = text.find(" ")
    return text if cut <= 0 else f"{text[:cut]}\n{text[cut + 1 :]}"


def to_srt(events: Iterable[Event]) -> str:
    """SubRip subtitles: numbered cues, `00:00:01,000 --> 00:00:04,000` timestamps."""
    blocks = []
    for i, c in enumerate(subtitle_cues(events), start=1):
        blocks.append(f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{_wrap(c.text)}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    # "&" first; "<" would start a tag and "-->" would end the timing line early.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(events: Iterable[Event]) -> str:
    """WebVTT subtitles: `WEBVTT` header, `00:00:01.000 --> 00:00:04.000` timestamps, escaped text."""
    blocks = ["WEBVTT\n"]
    for c in subtitle_cues(events):
        start, end = format_timestamp(c.start, "."), format_timestamp(c.end, ".")
        blocks.append(f"{start} --> {end}\n{_vtt_escape(_wrap(c.text))}\n")
    return "\n".join(blocks)


def write_subtitles(events: Iterable[Event], path: str | os.PathLike[str]) -> Path:
    """Write `.srt` or `.vtt` subtitles (chosen by the extension) atomically; returns the path."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".srt":
        text = to_srt(events)
    elif suffix == ".vtt":
        text = to_webvtt(events)
    else:
        raise ValueError(f"Cannot tell the subtitle format of '{p}': use a name ending in .srt or .vtt.")
    write_text_atomic(p, text)
    return p


# -- Markdown ------------------------------------------------------------------------------------


def _clock(t: float) -> str:
    """Stream time as m:ss, or h:mm:ss past an hour."""
    s = max(0, int(t))
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _md_text(text: str) -> str:
    # Keep the speaker's line breaks inside one paragraph (two trailing spaces = Markdown break).
    return "  \n".join(line.strip() for line in text.strip().splitlines() if line.strip())


def to_markdown(events: Iterable[Event]) -> str:
    """A readable conversation: header, questions and answers with times, silences summarised,
    revisions shown as superseding the earlier answer, errors, and how the session ended."""
    events = list(events)
    start = next((e for e in events if isinstance(e, SessionStart)), None)
    end = next((e for e in reversed(events) if isinstance(e, SessionEnd)), None)
    title = start.session_id if start else "(no session start)"
    lines = [f"# Session {title}", ""]
    if start:
        lines.append(f"- Source: `{start.source}`")
        lines.append(f"- Model: `{start.model}`" + ("" if start.trained else " (untrained)"))
        if start.mode:
            lines.append(f"- Run as: {start.mode} mode; decoding: {start.decoding}")
    duration = max((e.t for e in events), default=0.0)
    lines.append(f"- Duration: {_clock(duration)}")
    if end is None:
        lines.append("- The transcript stops without a session end (the app was cut off).")
    lines.append("")
    entries = build_conversation(events)
    seg_start = {e.segment: e.start for e in entries if isinstance(e, AnswerSegment)}
    for e in entries:
        if isinstance(e, Question):
            lines.append(f"**[{_clock(e.t)}] You:** {_md_text(e.text)}")
        elif isinstance(e, AnswerSegment):
            if not e.text.strip():
                continue
            who = "Assistant"
            if e.revises is not None:
                when = seg_start.get(e.revises)
                who += f", revising the answer at {_clock(when)}" if when is not None else ", revising"
            text = _md_text(e.text) + (" …*(interrupted)*" if e.interrupted else "")
            if e.superseded_by is not None:
                later = seg_start.get(e.superseded_by)
                note = f"revised at {_clock(later)}" if later is not None else "revised later"
                text = f"~~{text}~~ *({note})*"
            lines.append(f"**[{_clock(e.start)}] {who}:** {text}")
        elif isinstance(e, SilentStretch):
            frames = f"{e.frames} frame{'s' if e.frames != 1 else ''}"
            span = (
                _clock(e.start) if _clock(e.start) == _clock(e.end) else f"{_clock(e.start)}–{_clock(e.end)}"
            )
            lines.append(f"*[{span}] silent ({frames})*")
        elif isinstance(e, ErrorNote):
            lines.append(f"> **[{_clock(e.t)}] {'Fatal error' if e.fatal else 'Error'}:** {e.message}")
        elif isinstance(e, Notice):
            lines.append(f"> *[{_clock(e.t)}] {_md_text(e.message)}*")
        lines.append("")
    if end is not None:
        lines.append(f"*Session ended at {_clock(end.t)} ({end.reason}).*")
        lines.append("")
    return "\n".join(lines)
