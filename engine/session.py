"""The runtime: a session with a source thread, a perception thread and a generation thread.

    source --(LatestMailbox)--> perception --(SPSCRing of staging slots)--> generation --> events

- The source thread reads frames (file, webcam, screen, synthetic), keeps the newest one for the live
  view, and hands frames sampled at `fps` (by the source clock: monotonic for live sources, paced to
  wall time for files in real-time mode) to perception through a latest-frame mailbox: it never
  blocks; a frame replaced before perception took it is counted as dropped.
- The perception thread encodes each frame ONCE (vision tower, projector, the cross-attention K/V
  projections) into a staging slot of the visual memory and publishes it on a bounded SPSC ring.
  A full ring drops the frame (counted). It never waits for generation.
- The generation thread drives a `StreamDecoder`: between two decode steps it commits ready frames
  (one `<|image|>` each), takes questions (barge-in), then decodes one token. When the model is
  silent and nothing arrived it sleeps on a wakeup with a timeout: no busy-wait (trap 7).

`start/ask/poll/events/stop` is the whole facade the GUI and the terminal use. `stop()` returns within
a second and leaves no thread running. Events are also written to the transcript as they happen.
It knows nothing of Qt.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import decoding
from engine import events as E
from engine import protocol as P
from engine.checkpoint import Checkpoint
from engine.files import printable
from engine.generation import StreamConfig, StreamDecoder
from engine.memory import KVCache, VisualMemory
from engine.options import SessionConfig
from engine.perception import Perceiver
from engine.queues import LatestMailbox, SPSCRing, Wakeup
from engine.sources import FrameSource, SourceError, open_source

STAGING = 8  # frames perceived but not yet committed (ring capacity = staging slots)


def decoder_config(
    ckpt: Checkpoint, cfg: SessionConfig, sampling: decoding.Sampling | None = None
) -> StreamConfig:
    """The decoder's options for a session of `ckpt` with `cfg` (what Session.start, the evaluation's
    replay and the benchmarks all use): the session's system prompt or the checkpoint's, its decoding
    (`session_sampling` unless given), the checkpoint's out-of-world answer, and a context kept inside
    the text positions the checkpoint was trained on (`Checkpoint.trained_context`)."""
    step, trained = cfg.decode_step, ckpt.trained_context
    return StreamConfig(
        system_prompt=cfg.system_prompt or ckpt.system_prompt or P.REALTIME_SYSTEM_PROMPT,
        memory_frames=cfg.memory_frames,
        keep_first=cfg.keep_first,
        max_context=cfg.max_context if trained is None else min(cfg.max_context, trained),
        max_segment_tokens=cfg.max_segment_tokens,
        sampling=sampling if sampling is not None else session_sampling(ckpt, cfg),
        static_decode={"auto": None, "static": True}.get(step, False),
        compile_decode=cfg.compile_decode,
        cpu_step={"auto": None, "cpu": True}.get(step, False),
        cpu_weights=None if cfg.cpu_weights == "auto" else cfg.cpu_weights,
        out_of_world_answer=ckpt.out_of_world_answer,
    )


def session_sampling(ckpt: Checkpoint, cfg: SessionConfig) -> decoding.Sampling:
    """The session's decoding: the user's choice over what the checkpoint's authors use."""
    defaults = decoding.checkpoint_defaults(ckpt.generation_config, ckpt.mode)
    return decoding.choose(
        cfg.decoding,
        defaults,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        seed=cfg.seed,
    )


def session_bytes(model, cfg: SessionConfig) -> int:
    """What a session allocates up front: the visual memory (frames + staging slots, keys and values of
    every cross-attention layer at the KV-head count) and the text cache."""
    item = next(model.parameters()).element_size()
    visual = VisualMemory.planned_bytes(model.cfg, cfg.memory_frames, item, staging=STAGING)
    return visual + KVCache.planned_bytes(model.cfg, cfg.max_context + 64, item)


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on `device` (None when it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory_fits(model, cfg: SessionConfig) -> None:
    """ValueError (one sentence) when the session's memory would not fit on the model's device."""
    need = session_bytes(model, cfg)
    device = next(model.parameters()).device
    free = free_bytes(device)
    if free is not None and need > 0.9 * free:
        raise ValueError(
            f"A visual memory of {cfg.memory_frames} frames and a {cfg.max_context}-token context need "
            f"{need / 2**30:.1f} GB, more than the {free / 2**30:.1f} GB free on {device}; use fewer frames."
        )


@dataclass(frozen=True)
class _Ready:
    slot: int  # staging slot index in the visual memory
    source_t: float
    captured: float  # stream-clock time the frame was captured
    familiar: bool | None = None  # like the model's training world (engine.novelty); None: no check


class Session:
    def __init__(self, ckpt: Checkpoint, config: SessionConfig = SessionConfig()):
        self.ckpt, self.model, self.tok = ckpt, ckpt.model, ckpt.tokenizer
        if self.tok is None:
            raise ValueError("the model folder has no tokenizer.json; a tokenizer is required")
        self.cfg = config.check()  # ValueError (one sentence) for an option out of range
        self.sampling = session_sampling(ckpt, config)  # raises DecodingError (a ValueError) on bad values
        check_memory_fits(self.model, config)  # ValueError (one sentence) before anything is allocated
        self.session_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.transcript_path: Path | None = None
        self._out: collections.deque[E.Event] = collections.deque()
        self._inbox: collections.deque[tuple[str, str]] = collections.deque()
        self._scheduled_in: collections.deque[tuple[float, str]] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._closed = threading.Event()  # set when the session has ended and its transcript is closed
        self._paused = False
        self._running = False
        self._latest: np.ndarray | None = None
        self._writer = None
        self.decoder: StreamDecoder | None = None
        self._t0 = time.monotonic()  # reset at start(); questions may be queued before it

    # ---- facade ----------------------------------------------------------------------------------
    def start(self, source: FrameSource | str) -> None:
        if self._running:
            raise RuntimeError("session already started")
        self._t0 = time.monotonic()
        self._stop.clear()
        self._closed.clear()
        cfg = self.cfg
        self.decoder = StreamDecoder(
            self.model, self.tok, decoder_config(self.ckpt, cfg, self.sampling), clock=self.clock
        )
        self.frame_wake, self.gen_wake = Wakeup(), Wakeup()
        self.mailbox: LatestMailbox = LatestMailbox(self.frame_wake)
        self.ring: SPSCRing[_Ready] = SPSCRing(STAGING, self.gen_wake)
        self._perceived = 0
        self.perception_log: collections.deque[float] = collections.deque(maxlen=10000)  # stage times
        self._perceive_times: collections.deque[float] = collections.deque(maxlen=32)
        self._token_times: collections.deque[float] = collections.deque(maxlen=64)
        self._source_done = False
        self._perception_done = False
        self._last_stats = 0.0
        self._last_frame_captured = 0.0
        self._last_source_t = 0.0
        self._said_sliding = False
        self._said_context = False
        transcript_problem = None
        if cfg.transcript_path is not None or cfg.transcript_dir is not None:
            from engine.transcript import TranscriptWriter

            path = Path(cfg.transcript_path or Path(cfg.transcript_dir) / f"{self.session_id}.jsonl")
            try:
                self._writer = TranscriptWriter(path)
                self.transcript_path = path
            except ValueError as e:  # NotOurFile: a file of the user's is never touched
                transcript_problem = f"{e} The session runs without a transcript."
            except OSError as e:  # a read-only or missing folder, a full disk
                transcript_problem = (
                    f"The transcript cannot be written at {path} ({e.strerror or e}); "
                    "the session runs without one."
                )
        spec = source if isinstance(source, str) else getattr(source, "name", type(source).__name__)
        spec = printable(str(spec))
        trained = self.ckpt.trained
        self._emit(
            E.SessionStart(
                0.0,
                self.session_id,
                str(spec),
                self.ckpt.origin.describe(),  # a hub id with the revision it was read at
                trained,
                mode=self.model.cfg.video.mode,
                decoding=self.sampling.describe(),
            )
        )
        if transcript_problem:
            self._emit(E.Error(0.0, transcript_problem, "transcript"))
        self._emit(E.TurnStart(0.0, 0, ""))
        if next(self.model.parameters()).device.type == "cpu":
            n = cfg.torch_threads or max(1, (os.cpu_count() or 2) // 2)
            torch.set_num_threads(n)
        self._running = True
        self._threads = [
            threading.Thread(
                target=self._guard, args=(self._source_loop, source, "source"), name="moss-source"
            ),
            threading.Thread(
                target=self._guard, args=(self._perception_loop, None, "perception"), name="moss-perception"
            ),
            threading.Thread(
                target=self._guard, args=(self._generation_loop, None, "generation"), name="moss-generation"
            ),
        ]
        for t in self._threads:
            t.start()

    def ask(self, text: str, at: float | None = None) -> None:
        """Queue a question (thread-safe, returns at once). Empty questions are ignored with an Error.

        `at`: source time in seconds; the question enters right after the first frame at or past it
        (a scripted question lands on the same frame however fast a file is replayed)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if isinstance(text, str):  # undecodable bytes of a pipe or argv (surrogate escapes): U+FFFD
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if not isinstance(text, str) or not text.strip():
            self._emit(E.Error(self.clock(), "The question is empty.", "input"))
            return
        limit = 4000  # characters: longer questions would crowd the 4096-token context out
        if len(text) > limit:
            self._emit(
                E.Error(self.clock(), f"The question was cut to its first {limit} characters.", "input")
            )
            text = text[:limit]
        if at is not None:
            self._scheduled_in.append((float(at), text))
            return
        self._inbox.append(("ask", text))
        if self._running:
            self.gen_wake.notify()

    def stop_answer(self) -> None:
        """Stop the answer being spoken (Esc); the model goes back to watching."""
        self._inbox.append(("hush", ""))
        if self._running:
            self.gen_wake.notify()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def running(self) -> bool:
        return self._running and any(t.is_alive() for t in self._threads)

    def poll(self) -> list[E.Event]:
        out = []
        while self._out:
            out.append(self._out.popleft())
        return out

    def events(self, timeout: float | None = None) -> Iterator[E.Event]:
        """Yield events until the session ends (or `timeout` seconds pass)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            for ev in self.poll():
                yield ev
                if isinstance(ev, E.SessionEnd):
                    return
            if end is not None and time.monotonic() > end:
                return
            time.sleep(0.02)

    def latest_frame(self) -> np.ndarray | None:
        return self._latest

    def stop(self, timeout: float = 1.0, reason: str = "stopped") -> None:
        if not self._threads:
            return
        self._stop.set()
        src = getattr(self, "_source", None)
        if src is not None and hasattr(src, "interrupt"):
            src.interrupt()
        self.frame_wake.notify()
        self.gen_wake.notify()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        self._finish(reason)

    def clock(self) -> float:
        return time.monotonic() - self._t0

    # ---- threads ---------------------------------------------------------------------------------
    def _guard(self, fn, arg, where: str) -> None:
        """Run a thread body; an exception becomes an Error event and ends the session cleanly."""
        try:
            fn(arg) if arg is not None else fn()
        except SourceError as e:
            self._emit(E.Error(self.clock(), str(e), "source", fatal=False))
            self._source_done = True
            self.gen_wake.notify()
        except Exception as e:  # noqa: BLE001 - a programming error: keep the traceback in the message
            import traceback

            traceback.print_exc()
            msg = (
                "Out of memory: lower the memory capacity or use a smaller dtype."
                if _is_oom(e)
                else f"{type(e).__name__}: {e}"
            )
            self._emit(E.Error(self.clock(), msg, where, fatal=True))
            self._stop.set()
            self.frame_wake.notify()
            self.gen_wake.notify()
            threading.Thread(target=self._finish, args=("error",), daemon=False).start()

    def _source_loop(self, source) -> None:
        src = open_source(source, realtime=self.cfg.realtime) if isinstance(source, str) else source
        self._source = src
        try:
            src.open()
            period = 1.0 / self.cfg.fps
            next_t = None
            while not self._stop.is_set():
                frame = src.read()
                if frame is None:
                    break
                self._latest = frame.image
                if next_t is None:
                    next_t = frame.t
                if frame.t + 1e-6 < next_t or self._paused:
                    continue
                next_t += period * max(1, int((frame.t - next_t) / period) + 1)
                if not self.cfg.realtime:
                    # as fast as possible, but lossless: let perception take the previous frame first
                    while self.mailbox and not self._stop.is_set():
                        self.frame_wake.notify()
                        time.sleep(0.001)
                self.mailbox.put((frame, self.clock()))
        finally:
            self._source_done = True
            self.frame_wake.notify()
            try:
                src.close()
            except Exception:
                pass

    def _perception_loop(self) -> None:
        perceiver = Perceiver(self.model, self.decoder.memory, self.ckpt.world_check)
        while not self._stop.is_set():
            item = self.mailbox.take()
            if item is None:
                if self._source_done:
                    break
                self.frame_wake.wait(0.05)
                continue
            frame, captured = item
            slot = self.ring.producer_slot()
            while slot is None and not self.cfg.realtime and not self._stop.is_set():
                self.frame_wake.wait(0.01)  # lossless replay: wait for a free slot
                slot = self.ring.producer_slot()
            if slot is None:  # generation is behind by STAGING frames: drop, never block
                self.ring.record_drop()
                continue
            t0 = time.monotonic()
            familiar = perceiver.stage(slot, frame.image)
            self._perceive_times.append(time.monotonic() - t0)
            self.perception_log.append(self.clock())
            self._perceived += 1
            self.ring.publish(_Ready(slot, frame.t, captured, familiar))
        self._perception_done = True
        self.gen_wake.notify()

    def _generation_loop(self) -> None:
        dec = self.decoder
        scheduled: list[tuple[float, str]] = []
        since_frame = 0  # tokens decoded since the last frame (replay pacing)
        replay = not self.cfg.realtime
        while not self._stop.is_set():
            busy = False
            while self._scheduled_in:
                scheduled.append(self._scheduled_in.popleft())
                scheduled.sort(key=lambda q: q[0])
            while (r := self.ring.peek()) is not None:
                if replay and not dec.waiting and since_frame < self.cfg.replay_tokens_per_frame:
                    break  # replay: the model finishes its thought first, as it would live
                self._emit_all(dec.add_frame(r.slot, None, r.source_t, r.familiar))
                dec.flush()  # commits the staged frame: its slot may be reused after this
                self.ring.advance()
                self.frame_wake.notify()
                self._last_frame_captured = r.captured
                self._last_source_t = r.source_t
                since_frame = 0
                while scheduled and scheduled[0][0] <= r.source_t + 1e-6:
                    self._emit_all(dec.ask(scheduled.pop(0)[1]))
                busy = True
                if replay:
                    break
            while self._inbox:
                cmd, text = self._inbox.popleft()
                self._emit_all(dec.ask(text) if cmd == "ask" else dec.hush())
                busy = True
            evs = dec.step()
            if evs:
                n_tok = sum(isinstance(e, E.Token) for e in evs)
                since_frame += n_tok
                if n_tok:
                    self._token_times.append(time.monotonic())
                self._emit_all(evs)
            self._note_compaction(dec)
            self._maybe_stats()
            if not evs and not busy:
                if self._source_done and self._perception_done and self.ring.peek() is None:
                    if not scheduled:
                        break  # the stream is over and the model has nothing more to say
                    # questions scheduled past the end of the video: asked now, and the model is shown
                    # its last frame again (it answers after a frame, as it was trained to)
                    self._emit_all(dec.ask(scheduled.pop(0)[1]))
                    last = dec.memory.last_frame()
                    if last is not None:
                        self._emit_all(dec.add_frame(*last, self._last_source_t))
                    continue
                self.gen_wake.wait(0.1)
        if not self._stop.is_set():
            threading.Thread(target=self._finish, args=("source ended",)).start()

    def _note_compaction(self, dec: StreamDecoder) -> None:
        """Say when old frames leave the model's memory: the first time the visual memory slides, and the
        first time the text context is compacted."""
        mem = dec.memory
        if mem.evicted and not self._said_sliding:
            self._said_sliding = True
            secs = mem.C / self.cfg.fps
            self._emit(
                E.Compacted(
                    self.clock(),
                    "frames",
                    mem.visible,
                    f"The visual memory is full: from now on the model sees the last {mem.C} frames "
                    f"(about {secs / 60:.1f} minutes); older frames are forgotten.",
                )
            )
        # said once: a long stream is compacted again and again (every ~12 s for the bundled model)
        if dec.compactions and not self._said_context:
            self._said_context = True
            self._emit(
                E.Compacted(
                    self.clock(),
                    "context",
                    mem.visible,
                    f"The conversation grew past {dec.cfg.max_context} tokens and was compacted, as it will "
                    f"be whenever it grows past them again: the model keeps the current question and the "
                    f"recent frames, not what was said before.",
                )
            )

    # ---- events ----------------------------------------------------------------------------------
    def _emit(self, ev: E.Event) -> None:
        self._out.append(ev)
        w = self._writer
        if w is not None:
            try:
                w.write(ev)
            except ValueError:  # closed under us (stop raced a late event): nothing to keep
                pass
            if w.problem:  # the disk filled up: say so once, keep running without the transcript
                self._writer = None
                w.close()  # hands what it still holds to the disk, as far as it fits
                self._out.append(E.Error(ev.t, w.problem, "transcript"))

    def _emit_all(self, evs) -> None:
        for ev in evs:
            self._emit(ev)

    def _maybe_stats(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_stats < self.cfg.stats_every_s:
            return
        self._last_stats = now
        pt = list(self._perceive_times)
        tt = list(self._token_times)
        tps = (len(tt) - 1) / (tt[-1] - tt[0]) if len(tt) > 1 and tt[-1] > tt[0] else 0.0
        dec = self.decoder
        mem_mb = (dec.memory.nbytes + dec.cache.nbytes) / 2**20
        self._emit(
            E.Stats(
                now,
                perception_fps=len(pt) / sum(pt) if pt and sum(pt) > 0 else 0.0,
                lag_s=max(0.0, now - self._last_frame_captured) if self._last_frame_captured else 0.0,
                frames_in_memory=dec.memory.visible,
                frames_dropped=self.mailbox.replaced + self.ring.dropped,
                tokens_per_s=tps,
                memory_mb=mem_mb,
                rss_mb=rss_mb(),
            )
        )

    def _finish(self, reason: str) -> None:
        with _finish_lock:
            if not self._running:
                return
            self._running = False
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(1.0)
        dec = self.decoder
        if dec is not None:
            self._emit_all(dec.end_speech())
        try:
            self._maybe_stats(force=True)
        except Exception:
            pass
        self._emit(E.SessionEnd(self.clock(), reason))
        w = self._writer
        if w is not None:
            w.close()
            if w.problem:  # the last bytes could not reach the disk
                self._out.append(E.Error(self.clock(), w.problem, "transcript"))
        self._closed.set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the session has ended and its transcript is closed (a natural end finishes in a
        thread of its own, after SessionEnd was emitted); True when it has."""
        return self._closed.wait(timeout)


_finish_lock = threading.Lock()


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def rss_mb() -> float:
    """Resident memory of this process in MB (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0
