"""Transcripts: session events on disk as JSONL, read back, and turned into a conversation, subtitles, Markdown.

Owns the on-disk form of a session (one `<session_id>.jsonl` per session in a sessions folder, one
event per line as `Event.to_dict()` JSON), its durability, and every export. It knows nothing of
models, threads that produce events, or Qt: it only sees `engine.events`.

Durability contract: `TranscriptWriter` appends (an existing transcript is never wiped), hands
lines to the OS at least every half second (a background flusher) and at once on SessionEnd and
Error, and fsyncs on close. A process killed with SIGKILL therefore loses at most the last second;
the page cache survives the process. A line cut in half by the kill is tolerated by the reader
(skipped and counted) and repaired when the file is appended to again.

Times in every export are on the stream clock (seconds since the session started), not wall time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.events import (
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
    from_dict,
)

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0  # the most a SIGKILL may cost; the flusher checks twice per interval
SUFFIX = ".jsonl"

# -- writing -------------------------------------------------------------------------------------


def _repair_tail(path: Path) -> int:
    """Make an existing transcript end on a line boundary before appending; returns bytes dropped.

    A crash can leave half a line at the end. Appending after it would glue the next event onto
    the fragment and turn it into a malformed line in the MIDDLE of the file, which the reader
    rightly refuses. A fragment that is a complete event (only its newline was lost) is kept and
    terminated; anything else is unreadable anyway and is cut off.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back in chunks to the last newline (events are short, one chunk is the usual case).
        pos, chunk = size, 1 << 16
        start = 0
        while pos > 0:
            lo = max(0, pos - chunk)
            f.seek(lo)
            nl = f.read(pos - lo).rfind(b"\n")
            if nl >= 0:
                start = lo + nl + 1
                break
            pos = lo
        f.seek(start)
        fragment = f.read()
        if _parse_fragment(fragment) is not None:
            f.seek(size)
            f.write(b"\n")
            return 0
        f.truncate(start)
    log.warning("%s: dropped %d bytes of an unfinished last line before appending", path, size - start)
    return size - start


class NotOurFile(ValueError):
    """The transcript path holds something this app did not write (one sentence); it is left alone."""


def transcript_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` cannot take a transcript without touching a file this app did not write, or None.

    Free, empty, or one of our transcripts (its first line is an event): fine (we append). A folder,
    a device or pipe, or a file whose first line is not an event of ours: a sentence saying so."""
    p = Path(path)
    if p.is_dir():
        return f"{p} is a folder; give the transcript a file name."
    if not os.path.lexists(p):
        return None
    if not p.is_file():
        return f"{p} is not a regular file; the transcript is not written into it."
    try:
        with p.open("rb") as f:
            first = f.readline(1 << 20)
    except OSError as e:
        return f"{p} cannot be read ({e.strerror or e})."
    if not first:
        return None
    try:
        from_dict(json.loads(first.decode("utf-8")))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"{p} exists and is not a transcript written by this app; it is left untouched."
    return None


class TranscriptWriter:
    """Appends events to a JSONL transcript as they happen; see the module docstring for durability.

    `write()` may be called from any one thread at a time; a background thread flushes. Use as a
    context manager or call `close()` (which also writes `subtitles`, if given, from the file).
    Never touches a file that is not one of its transcripts (`NotOurFile`). When the disk fills up
    or the file stops being writable, it stops writing, keeps what is on disk and says why once in
    `problem` (the session reports it); the session goes on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        flush_interval: float = FLUSH_INTERVAL_S,
        subtitles: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.subtitles = Path(subtitles) if subtitles is not None else None
        problem = transcript_problem(self.path)
        if problem:
            raise NotOurFile(problem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _repair_tail(self.path)  # > 0 when a crashed run's half line was cut
        self.written = 0  # events written by this writer
        self.problem: str | None = None  # why writing stopped (disk full, file gone), once it has
        self._file = self.path.open("ab")  # append: never truncate an earlier run's events
        # A lock here is fine: transcripts are not the hot path (the engine's queues are lock-free),
        # and it keeps a flush from the background thread out of the middle of a write.
        self._lock = threading.Lock()
        self._dirty = False
        self._last_flush = time.monotonic()
        self._closed = False
        self._stop = threading.Event()
        # Daemon only so that a forgotten close() cannot hang interpreter exit; close() cancels it
        # through _stop and joins it (no timeout guesswork).
        self._flusher = threading.Thread(target=self._flush_loop, name="transcript-flush", daemon=True)
        self._flusher.start()

    @classmethod
    def for_session(cls, folder: str | os.PathLike[str], session_id: str, **kwargs) -> TranscriptWriter:
        """The writer for `<folder>/<session_id>.jsonl`; ValueError for an id that is not a plain name."""
        return cls(session_path(folder, session_id), **kwargs)

    def write(self, event: Event) -> None:
        # backslashreplace: a file name's undecodable bytes (surrogate escapes) must not stop the line
        line = (json.dumps(event.to_dict(), ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            if self._closed:
                raise ValueError(f"transcript {self.path} is closed")
            if self.problem:
                return  # writing stopped (disk full): what is on disk stays as it is
            try:
                self._file.write(line)  # one write call per line: a kill cuts at most the line in progress
                self.written += 1
                self._dirty = True
                now = time.monotonic()
                if isinstance(event, SessionEnd | Error) or now - self._last_flush >= self.flush_interval:
                    self._flush_locked(now, sync=isinstance(event, SessionEnd))
            except OSError as e:
                self._fail(e)

    def _fail(self, e: OSError) -> None:
        """Stop writing after an OS error (the disk is full, the file vanished): say why, once."""
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        self.problem = f"The transcript {self.path} stopped being written ({why}); what was written is kept."
        log.warning("%s", self.problem)

    def write_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.write(event)

    def flush(self) -> None:
        with self._lock:
            if not self._closed and not self.problem:
                try:
                    self._flush_locked(time.monotonic(), sync=False)
                except OSError as e:
                    self._fail(e)

    def _flush_locked(self, now: float, sync: bool) -> None:
        self._file.flush()  # into the OS page cache: survives the process being killed
        if sync:
            os.fsync(self._file.fileno())  # onto the disk: survives a power cut
        self._dirty = False
        self._last_flush = now

    def _flush_loop(self) -> None:
        # Waking twice per interval and flushing whenever anything is pending bounds the age of
        # unflushed data by half an interval (plus the flush itself), even when no event follows.
        while not self._stop.wait(self.flush_interval / 2):
            with self._lock:
                if self._dirty and not self._closed and not self.problem:
                    try:
                        self._flush_locked(time.monotonic(), sync=False)
                    except OSError as e:
                        self._fail(e)

    def close(self) -> None:
        """Flush, fsync, close; then write the subtitles file if one was asked for. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.problem:
                    self._flush_locked(time.monotonic(), sync=True)
            except OSError as e:
                self._fail(e)
            try:
                self._file.close()
            except OSError as e:  # the buffer could not be written out: the disk is full
                if not self.problem:
                    self._fail(e)
        self._stop.set()
        if threading.current_thread() is not self._flusher:
            self._flusher.join()
        if self.subtitles is not None:
            write_subtitles(read_transcript(self.path), self.subtitles)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    path: Path
    events: tuple[Event, ...]
    skipped_lines: int  # 1 when an unfinished last line (a crash mid-write) was ignored, else 0

    @property
    def complete(self) -> bool:
        """True when the session ended properly (a SessionEnd was written)."""
        return any(isinstance(e, SessionEnd) for e in self.events)


def _parse_fragment(raw: bytes) -> Event | None:
    """The event in an unterminated last line, or None when it is cut (or just NULs from a crash)."""
    raw = raw.strip(b"\x00 \t\r\n")
    if not raw:
        return None
    try:
        return from_dict(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):
        return None


def load_transcript(path: str | os.PathLike[str]) -> Transcript:
    """Read a JSONL transcript: tolerant of an unfinished last line, strict about everything else.

    A malformed line before the last one raises ValueError naming the file and line number: that
    is damage, not a crash mid-write, and silently skipping it would lose events.
    """
    p = Path(path)
    data = p.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else the unterminated last line
    events: list[Event] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{p}, line {number}: not UTF-8 text; the transcript is damaged.") from None
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{p}, line {number}: malformed JSON ({e.msg}); the transcript is damaged."
            ) from None
        try:
            events.append(from_dict(obj))
        except ValueError as e:
            raise ValueError(f"{p}, line {number}: {e}.") from None
    skipped = 0
    if tail.strip(b"\x00 \t\r"):
        event = _parse_fragment(tail)
        if event is None:
            skipped = 1
        else:
            events.append(event)
    return Transcript(p, tuple(events), skipped)


def read_transcript(path: str | os.PathLike[str]) -> list[Event]:
    """The events of a transcript; an unfinished last line is skipped with a logged warning.

    Use `load_transcript` to get the count of skipped lines as data.
    """
    tr = load_transcript(path)
    if tr.skipped_lines:
        log.warning("%s: skipped %d unfinished last line (the writer was cut off)", tr.path, tr.skipped_lines)
    return list(tr.events)


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


Entry = Question | AnswerSegment | SilentStretch | ErrorNote


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
        if isinstance(ev, TurnStart | SpeechStart | Token | Revision | Error | SessionStart):
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        lines.append("")
    if end is not None:
        lines.append(f"*Session ended at {_clock(end.t)} ({end.reason}).*")
        lines.append("")
    return "\n".join(lines)


def write_markdown(events: Iterable[Event], path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    write_text_atomic(p, to_markdown(events))
    return p


# -- the sessions folder -------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def session_path(folder: str | os.PathLike[str], session_id: str) -> Path:
    """`<folder>/<session_id>.jsonl`; ValueError unless the id is a plain name (no path, no `..`)."""
    if not isinstance(session_id, str) or not _ID.fullmatch(session_id) or ".." in session_id:
        raise ValueError(
            f"Invalid session id {session_id!r}: use letters, digits, '.', '_' and '-' only, no paths."
        )
    base = Path(folder).resolve()
    p = (base / f"{session_id}{SUFFIX}").resolve()
    if p.parent != base:  # belt and braces: the pattern already excludes separators
        raise ValueError(f"Invalid session id {session_id!r}: it points outside {base}.")
    return p


def new_session_id(folder: str | os.PathLike[str] | None = None, now: float | None = None) -> str:
    """A readable, sortable, folder-safe id from local time ("20261124-153012"), unique in `folder`."""
    base = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    if folder is None:
        return base
    sid, n = base, 1
    while (Path(folder) / f"{sid}{SUFFIX}").exists():
        n += 1
        sid = f"{base}-{n}"
    return sid


@dataclass(frozen=True)
class SessionInfo:
    id: str  # from SessionStart, else the file name
    path: Path
    started_at: (
        float  # wall-clock epoch seconds, estimated: file mtime minus duration (events carry stream time)
    )
    source: str  # "" when unknown
    model: str  # "" when unknown
    questions: int  # user questions asked
    duration: float  # stream seconds up to the last event
    complete: bool  # False when there is no SessionEnd (the app was cut off)
    end_reason: str  # SessionEnd.reason, "" when incomplete
    problem: str = ""  # why the file could not be read; the counts are then zero


def session_info(path: str | os.PathLike[str]) -> SessionInfo:
    """Summarise one transcript file; never raises for a damaged file (see `problem`)."""
    p = Path(path)
    try:
        mtime = p.stat().st_mtime
        events = load_transcript(p).events
    except (OSError, ValueError) as e:
        try:
            mtime = p.stat().st_mtime
        except OSError:
            mtime = 0.0
        return SessionInfo(p.stem, p, mtime, "", "", 0, 0.0, False, "", problem=str(e))
    start = next((e for e in events if isinstance(e, SessionStart)), None)
    end = next((e for e in reversed(events) if isinstance(e, SessionEnd)), None)
    duration = max((e.t for e in events), default=0.0)
    questions = sum(1 for e in events if isinstance(e, TurnStart) and (e.turn > 0 or e.question))
    return SessionInfo(
        id=start.session_id if start else p.stem,
        path=p,
        started_at=mtime - duration,
        source=start.source if start else "",
        model=start.model if start else "",
        questions=questions,
        duration=duration,
        complete=end is not None,
        end_reason=end.reason if end else "",
    )


def list_sessions(folder: str | os.PathLike[str]) -> list[SessionInfo]:
    """Every transcript in `folder`, newest first; cut-off transcripts are listed with complete=False."""
    base = Path(folder)
    if not base.is_dir():
        return []
    infos = [session_info(p) for p in base.glob(f"*{SUFFIX}") if p.is_file()]
    infos.sort(key=lambda i: i.started_at, reverse=True)
    return infos


__all__ = [
    "TranscriptWriter",
    "Transcript",
    "load_transcript",
    "read_transcript",
    "Question",
    "AnswerSegment",
    "SilentStretch",
    "ErrorNote",
    "Entry",
    "build_conversation",
    "Cue",
    "subtitle_cues",
    "format_timestamp",
    "to_srt",
    "to_webvtt",
    "write_subtitles",
    "to_markdown",
    "write_markdown",
    "SessionInfo",
    "session_info",
    "list_sessions",
    "session_path",
    "new_session_id",
    "FLUSH_INTERVAL_S",
]
