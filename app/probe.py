"""Responsiveness probe: how long the Qt event loop ever went without running a 10 ms timer.

Owns `measure_event_loop_stalls`, used by the tests and by the benchmark command. A timer asks to run
every 10 ms; the largest gap between two runs, minus nothing, is the worst time the window could not
react to the user (repaints, clicks and keys wait just as long). It knows nothing of sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.qt import Qt, QtCore, QtWidgets


@dataclass(frozen=True)
class Stalls:
    seconds: float  # how long it measured
    ticks: int  # timer runs
    max_gap_ms: float  # the worst gap between two runs (10 ms when never stalled)
    p99_gap_ms: float
    over_50ms: int  # gaps longer than 50 ms


def measure_event_loop_stalls(
    window: QtWidgets.QWidget | None, seconds: float, interval_ms: int = 10
) -> Stalls:
    """Run the event loop for `seconds` (the window keeps working meanwhile) and record timer gaps."""
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QtCore.QTimer(window)
    timer.setObjectName("stall-probe")
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(interval_ms)
    timer.timeout.connect(tick)
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
    last[0] = time.perf_counter()
    timer.start()
    loop.exec()
    timer.stop()
    timer.deleteLater()
    ms = sorted(g * 1000 for g in gaps) or [0.0]
    return Stalls(
        seconds,
        len(gaps),
        ms[-1],
        ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        sum(1 for g in ms if g > 50.0),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m app.probe --seconds 60`: the window on a live source, questions asked, stalls printed.

    Uses the real engine (the bundled model, or an untrained stand-in when none is bundled) on the CPU
    unless --scripted is given. Runs offscreen when there is no display.
    """
    import argparse
    import os
    import sys
    import tempfile
    from pathlib import Path

    p = argparse.ArgumentParser(description="Measure Qt event-loop stalls while the model streams.")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--source", default="synthetic")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scripted", action="store_true", help="scripted answers instead of the model")
    p.add_argument("--ask-every", type=float, default=10.0, help="ask a new question every N seconds")
    p.add_argument(
        "--startup",
        action="store_true",
        help="measure while the model loads, the first session starts and voice is switched on (20 ms timer)",
    )
    a = p.parse_args(argv)
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from app.backend import EngineBackend, LoadedModel
    from app.gui import preload_engine
    from app.scripted import ScriptedSession
    from app.settings import AppPaths, Settings
    from app.window import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])

    class Scripted:
        def load(self, settings, report):
            return LoadedModel(None, "scripted", "cpu")

        def new_session(self, model, settings, transcript_dir):
            answers = [" ".join(f"word{i}" for i in range(300))] * 2
            return ScriptedSession(answers=lambda q: answers, fps=1.0, tokens_per_s=60.0)

    if not a.scripted:
        preload_engine()  # as run_gui does
    with tempfile.TemporaryDirectory() as tmp:
        backend = Scripted() if a.scripted else EngineBackend()
        w = MainWindow(
            Settings(first_run_done=True, device=a.device),
            AppPaths.under(Path(tmp)).ensure(),
            backend,
            probe_hardware=False,
        )
        w.show()
        if a.startup:
            return _startup(w, a.source)
        end = time.monotonic() + 600
        while w.model is None and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)
        if w.model is None:
            print("the model did not load", file=sys.stderr)
            return 2
        w.start_source(a.source)
        asker = QtCore.QTimer(w)
        asker.setInterval(int(a.ask_every * 1000))
        questions = iter(
            ["What do you see?", "What changed?", "Describe the colours.", "What is moving?"] * 1000
        )
        asker.timeout.connect(lambda: w.ask(next(questions)))
        w.ask(next(questions))
        asker.start()
        n0 = len(w.events)
        stalls = measure_event_loop_stalls(w, a.seconds)
        asker.stop()
        tokens = sum(1 for e in w.events[n0:] if e.kind == "Token")
        frames = sum(1 for e in w.events[n0:] if e.kind == "FrameSeen")
        print(
            f"event loop over {stalls.seconds:.0f} s ({w.model.name}, {w.model.device}, source {a.source}): "
            f"max gap {stalls.max_gap_ms:.1f} ms, p99 {stalls.p99_gap_ms:.1f} ms, {stalls.over_50ms} gaps > 50 ms; "
            f"{tokens} tokens and {frames} model frames streamed, {w.video.frames_shown} frames shown, "
            f"{w.chat.throttle.calls} chat repaints"
        )
        w.shutdown()
        w.close()
        return 0 if stalls.max_gap_ms < 50.0 else 1


def _startup(w, source: str) -> int:
    """The window's first seconds as a user lives them: the model loads, Start is pressed as soon as
    it can be, then voice is switched on. A 20 ms timer runs throughout; its longest gap is the
    longest the window was frozen."""
    steps: list[str] = []

    def start() -> None:
        steps.append("start")
        w.start_source(source)  # waits for the model when it is still loading

    def voice() -> None:
        steps.append("voice on")
        w.apply_settings(w.settings.replace(voice=True))

    QtCore.QTimer.singleShot(50, start)
    QtCore.QTimer.singleShot(4000, voice)
    stalls = measure_event_loop_stalls(w, 9.0, interval_ms=20)
    frames = sum(1 for e in w.events if e.kind == "FrameSeen")
    print(
        f"UI thread while loading the model, starting the first session and turning voice on ({', '.join(steps)}; "
        f"{frames} frames seen): longest freeze {stalls.max_gap_ms:.0f} ms, p99 {stalls.p99_gap_ms:.0f} ms, "
        f"{stalls.over_50ms} gaps > 50 ms"
    )
    w.shutdown()
    w.close()
    return 0 if stalls.max_gap_ms < 100.0 else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
