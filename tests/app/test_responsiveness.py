"""The event loop keeps running while tokens stream and frames arrive (the window never freezes)."""

from __future__ import annotations

from app.probe import measure_event_loop_stalls
from app.scripted import ScriptedSession
from tests.app.fakes import FakeBackend


def long_answers(q: str) -> list[str]:
    return [" ".join(f"word{i}" for i in range(400))]


def test_no_stalls_while_streaming(make_window, qtbot):
    backend = FakeBackend(
        lambda: ScriptedSession(answers=long_answers, fps=5.0, tokens_per_s=150.0, first_delay_s=0.0)
    )
    w = make_window(backend)
    w.start_source("synthetic")  # 25 fps frames into the live view
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    w.ask("Talk a lot.")
    qtbot.waitUntil(lambda: w.log.speaking, timeout=5000)
    calls_before = w.chat.throttle.calls
    stalls = measure_event_loop_stalls(w, 3.0)
    repaints = w.chat.throttle.calls - calls_before
    print(
        f"\nevent loop over {stalls.seconds:.0f} s: max gap {stalls.max_gap_ms:.1f} ms, p99 {stalls.p99_gap_ms:.1f} ms, "
        f"{stalls.over_50ms} gaps > 50 ms, {repaints} chat repaints, {w.video.frames_shown} frames shown"
    )
    assert w.log.speaking or len(w.log.answers) >= 1
    assert stalls.ticks > 100
    assert stalls.max_gap_ms < 200  # the target is 50 ms; this bound survives a loaded 2-core CI machine
    assert repaints <= 3.0 * 45  # the throttle holds repaints near 40 Hz, not one per token (150/s)
