"""Transcripts: session events on disk as JSONL, written as they happen and read back.

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

import errno
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.events import (
    Error,
    Event,
    SessionEnd,
    SessionStart,
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
        ours = _parse_fragment(first) is not None
    except RecursionError:  # absurdly nested JSON is no transcript of ours either
        ours = False
    return None if ours else f"{p} exists and is not a transcript written by this app; it is left untouched."


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
            if not self._closed:
                self._flush_locked(time.monotonic(), sync=False)

    def _flush_locked(self, now: float, sync: bool) -> None:
        """Hand the lines to the OS (and the disk, with sync). An OS error (a full disk) stops the
        writing with a `problem` instead of raising; nothing is flushed after that."""
        if self.problem:
            return
        try:
            self._file.flush()  # into the OS page cache: survives the process being killed
            if sync:
                os.fsync(self._file.fileno())  # onto the disk: survives a power cut
        except OSError as e:
            self._fail(e)
            return
        self._dirty = False
        self._last_flush = now

    def _flush_loop(self) -> None:
        # Waking twice per interval and flushing whenever anything is pending bounds the age of
        # unflushed data by half an interval (plus the flush itself), even when no event follows.
        while not self._stop.wait(self.flush_interval / 2):
            with self._lock:
                if self._dirty and not self._closed:
                    self._flush_locked(time.monotonic(), sync=False)

    def close(self) -> None:
        """Flush, fsync, close; then write the subtitles file if one was asked for. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._flush_locked(time.monotonic(), sync=True)
            try:
                self._file.close()
            except OSError as e:  # the buffer could not be written out: the disk is full
                if not self.problem:
                    self._fail(e)
        self._stop.set()
        if threading.current_thread() is not self._flusher:
            self._flusher.join()
        if self.subtitles is not None:
            from engine.export import write_subtitles

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
    "NotOurFile",
    "transcript_problem",
    "SessionInfo",
    "session_info",
    "list_sessions",
    "session_path",
    "new_session_id",
    "FLUSH_INTERVAL_S",
]
