"""A scripted stand-in for the engine session: real frames, scripted talk.

`ScriptedSession` follows the `SessionLike` facade exactly: it opens a real source with
engine.sources (so a broken file fails as it would for real, and the live view shows real frames),
sends a FrameSeen per model frame, stays Silent between answers, and answers each question with
scripted text streamed word by word at a chosen rate, optionally followed by a revision. Tests use
it for exact UI assertions, `app.screenshot` for the README picture, and the responsiveness probe to
stream tokens without a model. Tests can also `emit()` any event directly. It knows nothing of Qt
and holds no model.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine import events as E

Answers = Callable[[str], list[str]]  # question -> segments (the 2nd and later are revisions)


def default_answers(question: str) -> list[str]:
    return [
        "I see a bright square moving across a colour gradient.",
        "Update: the square has now reached the lower right corner.",
    ]


class ScriptedSession:
    def __init__(
        self,
        answers: Answers = default_answers,
        tokens_per_s: float = 40.0,
        fps: float = 1.0,
        first_delay_s: float = 0.3,
        revision_delay_s: float = 1.5,
        stats_every_s: float = 0.5,
        realtime: bool = True,
        model_name: str = "scripted",
        trained: bool = True,
        silence_per_frame: bool = True,
        loop: bool = False,
    ) -> None:
        self.answers = answers
        self.tokens_per_s = tokens_per_s
        self.fps = fps
        self.first_delay_s = first_delay_s
        self.revision_delay_s = revision_delay_s
        self.stats_every_s = stats_every_s
        self.realtime = realtime
        self.model_name = model_name
        self.trained = trained
        self.loop = loop  # replay a video file from the start when it ends
        self.silence_per_frame = silence_per_frame  # False: only scripted or emitted events say Silence
        self.session_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.transcript_path: Path | None = None
        self.asked: list[str] = []  # every question received, in order (tests read it)
        self.stop_answers = 0  # how many times stop_answer() was called
        self._lock = threading.Lock()
        self._out: list[E.Event] = []
        self._plan: list[tuple[float, Callable[[], list[E.Event]]]] = []  # (due, make events), sorted
        self._latest: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._source: Any = None
        self._t0 = time.monotonic()
        self._paused = False
        self._ended = False
        self._turn = 0
        self._segment = -1
        self._speaking: tuple[int, str] | None = None  # (segment, text so far)
        self._turn_segments: list[tuple[int, str]] = []
        self._frames = 0
        self._last_stats = 0.0

    # ---- facade ----------------------------------------------------------------------------------
    def clock(self) -> float:
        return time.monotonic() - self._t0

    def start(self, source: Any) -> None:
        from engine.sources import FrameSource, SourceError, open_source

        self._t0 = time.monotonic()
        name = source if isinstance(source, str) else getattr(source, "name", "source")
        self.emit(E.SessionStart(0.0, self.session_id, str(name), self.model_name, self.trained))
        self.emit(E.TurnStart(0.0, 0, ""))
        try:
            src = (
                source
                if isinstance(source, FrameSource)
                else open_source(source, realtime=self.realtime, loop=self.loop)
            )
        except SourceError as e:
            self._fail(str(e))
            return
        self._source = src
        self._thread = threading.Thread(target=self._read_source, name="scripted-source")
        self._thread.start()

    def ask(self, text: str) -> None:
        with self._lock:
            self.asked.append(text)
            t = self.clock()
            out = self._cut(t)
            out.append(E.TurnEnd(t, self._turn, interrupted=bool(out)))
            self._turn += 1
            self._turn_segments = []
            out.append(E.TurnStart(t, self._turn, text))
            self._out.extend(out)
            self._plan_answer(self._turn, self.answers(text), time.monotonic() + self.first_delay_s)

    def stop_answer(self) -> None:
        with self._lock:
            self.stop_answers += 1
            t = self.clock()
            out = self._cut(t)
            if out:
                out.append(E.Silence(t, self._turn, self._frames - 1))
            self._out.extend(out)

    def poll(self) -> list[E.Event]:
        with self._lock:
            now = time.monotonic()
            while self._plan and self._plan[0][0] <= now:
                _, make = self._plan.pop(0)
                self._out.extend(make())
            if self.stats_every_s and now - self._last_stats >= self.stats_every_s and not self._ended:
                self._last_stats = now
                self._out.append(self._stats())
            out, self._out = self._out, []
        return out

    def stop(self, timeout: float = 1.0, reason: str = "stopped") -> None:
        self._stop.set()
        if self._source is not None:
            self._source.interrupt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._end(reason)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def latest_frame(self) -> np.ndarray | None:
        return self._latest

    def emit(self, *events: E.Event) -> None:
        """Queue events exactly as given (tests script the UI with this)."""
        with self._lock:
            self._out.extend(events)

    # ---- script ----------------------------------------------------------------------------------
    def _plan_answer(self, turn: int, segments: list[str], due: float) -> None:
        """Schedule segment after segment; each later one is a revision after a silence."""
        self._plan = [(d, m) for d, m in self._plan if getattr(m, "turn", None) is None]
        step = 1.0 / self.tokens_per_s
        for text in segments:
            words = text.split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            self._add(due, turn, lambda: self._begin_segment(turn))
            for p in pieces:
                due += step
                self._add(due, turn, lambda p=p: self._token(turn, p))
            due += step
            self._add(due, turn, lambda: self._end_segment(turn))
            due += self.revision_delay_s

    def _add(self, due: float, turn: int, fn: Callable[[], list[E.Event]]) -> None:
        def make() -> list[E.Event]:
            return fn() if turn == self._turn else []

        make.turn = turn  # type: ignore[attr-defined]  # marks answer steps so a new question drops them
        self._plan.append((due, make))
        self._plan.sort(key=lambda x: x[0])

    def _begin_segment(self, turn: int) -> list[E.Event]:
        t = self.clock()
        self._segment += 1
        prev = self._turn_segments[-1] if self._turn_segments else None
        self._speaking = (self._segment, "")
        out: list[E.Event] = [E.SpeechStart(t, turn, self._segment, revises=prev[0] if prev else None)]
        if prev is not None:
            out.append(E.Revision(t, turn, self._segment, prev[0], prev[1]))
        return out

    def _token(self, turn: int, piece: str) -> list[E.Event]:
        if self._speaking is None:
            return []
        seg, text = self._speaking
        self._speaking = (seg, text + piece)
        return [E.Token(self.clock(), turn, seg, piece)]

    def _end_segment(self, turn: int) -> list[E.Event]:
        if self._speaking is None:
            return []
        seg, text = self._speaking
        self._speaking = None
        self._turn_segments.append((seg, text))
        t = self.clock()
        return [E.SpeechEnd(t, turn, seg, text), E.Silence(t, turn, self._frames - 1)]

    def _cut(self, t: float) -> list[E.Event]:
        """End the segment being spoken (barge-in or stop) and drop the rest of the answer."""
        self._plan = [(d, m) for d, m in self._plan if getattr(m, "turn", None) is None]
        if self._speaking is None:
            return []
        seg, text = self._speaking
        self._speaking = None
        self._turn_segments.append((seg, text))
        return [E.SpeechEnd(t, self._turn, seg, text, interrupted=True)]

    def _stats(self) -> E.Stats:
        return E.Stats(self.clock(), float(self.fps), 0.12, min(self._frames, 64), 0, self.tokens_per_s, 3.5)

    # ---- source ----------------------------------------------------------------------------------
    def _read_source(self) -> None:
        from engine.sources import SourceError

        src = self._source
        try:
            src.open()
            next_t = None
            while not self._stop.is_set():
                frame = src.read()
                if frame is None:
                    break
                self._latest = frame.image
                if self._paused:
                    continue
                if next_t is None or frame.t >= next_t:
                    next_t = frame.t + 1.0 / self.fps
                    with self._lock:
                        t = self.clock()
                        self._out.append(E.FrameSeen(t, self._frames, frame.t, self._frames))
                        if self._speaking is None and self.silence_per_frame:
                            self._out.append(E.Silence(t, self._turn, self._frames))
                        self._frames += 1
        except SourceError as e:
            self._fail(str(e))
            return
        finally:
            src.close()
        if not self._stop.is_set():
            if src.warning:
                self.emit(E.Error(self.clock(), src.warning, "source"))
            self._end("source ended")

    def _fail(self, message: str) -> None:
        self.emit(E.Error(self.clock(), message, "source", fatal=True))
        self._end("error")

    def _end(self, reason: str) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            t = self.clock()
            self._out.extend(self._cut(t))
            self._out.append(E.SessionEnd(t, reason))
