"""The window on the real runtime: engine Session, a tiny random model, a synthetic source."""

from __future__ import annotations

import threading

import pytest

from tests.app.fakes import RealBackend

pytest.importorskip("torch", reason="the real runtime needs torch")


def engine_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("moss-")]


def test_real_session_streams_into_the_window(make_window, qtbot, paths):
    from app.settings import Settings

    w = make_window(
        RealBackend(), settings=Settings(first_run_done=True, fps=4.0, memory_frames=16, max_context=2048)
    )
    assert not w.model.trained
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.video.frames_seen >= 2, timeout=15000)
    assert w.video.frames_shown >= 1
    w.ask("What do you see?")
    # the engine confirms the question (TurnStart with its stream time) and the model reacts to later frames
    qtbot.waitUntil(lambda: any(e.kind == "TurnStart" and e.turn == 1 for e in w.events), timeout=15000)
    n = len(w.events)
    qtbot.waitUntil(lambda: any(e.kind in ("Token", "Silence") for e in w.events[n:]), timeout=15000)
    qtbot.waitUntil(lambda: any(e.kind == "Stats" for e in w.events), timeout=15000)
    w.chat.flush()
    text = w.chat.toPlainText()
    assert "You: What do you see?" in text and "--:--" not in text.split("You: What do you see?")[0][-8:]
    assert "untrained" in text
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=5000)
    assert w.events[-1].kind == "SessionEnd"
    assert engine_threads() == []
    # the transcript was written as it happened and is listed as a past session
    files = list(paths.sessions.glob("*.jsonl"))
    assert len(files) == 1
    w._fill_sessions_menu()
    assert any("synthetic" in a.text() for a in w.sessions_menu.actions())


def test_real_session_bad_file_then_good_source(make_window, qtbot, tmp_path):
    from app.settings import Settings

    w = make_window(
        RealBackend(transcripts=False), settings=Settings(first_run_done=True, fps=4.0, max_context=256)
    )
    # a context too small for the system prompt: the engine refuses, the window says why
    w.start_source("synthetic")
    assert w.state == "idle"
    w.chat.flush()
    assert "could not start" in w.chat.toPlainText() and "system prompt" in w.chat.toPlainText()
    w.apply_settings(w.settings.replace(max_context=2048))
    w.start_source(str(tmp_path / "missing.mp4"))
    qtbot.waitUntil(lambda: w.state == "idle", timeout=10000)
    w.chat.flush()
    assert "no such file" in w.chat.toPlainText()
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.video.frames_seen >= 1, timeout=15000)
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=5000)
    assert engine_threads() == []
