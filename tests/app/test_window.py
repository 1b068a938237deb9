"""The window driven like a user would: start a source, ask, watch the answer stream, revise, interrupt."""

from __future__ import annotations

import numpy as np

from app.scripted import ScriptedSession
from engine import events as E
from tests.app.fakes import FakeBackend


def running(window, qtbot, spec="synthetic"):
    window.start_source(spec)
    qtbot.waitUntil(lambda: window.state == "running", timeout=5000)
    return window.session


def test_start_shows_video_and_frame_markers(make_window, qtbot):
    w = make_window()
    s = running(w, qtbot)
    qtbot.waitUntil(lambda: w.video.frames_shown >= 3, timeout=5000)
    qtbot.waitUntil(lambda: w.video.frames_seen >= 1, timeout=5000)
    assert w.capture_dot.isVisible() and "Capturing" in w.capture_dot.text()
    qtbot.waitUntil(lambda: w.video.stats is not None, timeout=5000)
    assert "dropped" in w.video.overlay_text()
    assert s.latest_frame() is not None


def test_question_streams_answer_then_silence_then_revision(make_window, qtbot):
    w = make_window()
    running(w, qtbot)
    qtbot.keyClicks(w.input, "What do you see?")
    qtbot.keyClick(w.input, "\r")
    assert w.input.text() == ""
    assert w.session.asked == ["What do you see?"]
    # streaming: part of the answer is visible before the segment ends
    qtbot.waitUntil(lambda: "bright" in w.chat.toPlainText(), timeout=5000)
    seen_partial = "colour gradient" not in w.chat.toPlainText() or w.log.speaking
    qtbot.waitUntil(lambda: "colour gradient." in w.chat.toPlainText(), timeout=5000)
    assert seen_partial
    # silence: the quiet indicator
    qtbot.waitUntil(lambda: w.watching.isVisible(), timeout=5000)
    # the revision: new answer shown, the earlier one kept and marked superseded, both with times
    qtbot.waitUntil(lambda: "lower right corner" in w.chat.toPlainText(), timeout=5000)
    qtbot.waitUntil(lambda: not w.log.speaking, timeout=5000)
    w.chat.flush()
    text = w.chat.toPlainText()
    assert "superseded at" in text
    assert "replaces the answer given at" in text
    assert "You: What do you see?" in text
    answers = [a for a in w.log.answers.values()]
    assert [a.state for a in answers] == ["superseded", "done"]
    assert answers[1].revises == answers[0].segment


def test_typing_while_speaking_interrupts(make_window, qtbot):
    backend = FakeBackend(lambda: ScriptedSession(fps=2.0, tokens_per_s=8.0, first_delay_s=0.05))
    w = make_window(backend)
    running(w, qtbot)
    w.ask("Describe everything.")
    qtbot.waitUntil(lambda: w.log.speaking, timeout=5000)
    w.ask("Stop, what colour is it?")
    qtbot.waitUntil(lambda: len(w.log.answers) >= 2, timeout=5000)
    first = w.log.answers[min(w.log.answers)]
    assert first.state == "interrupted"
    w.chat.flush()
    assert "(interrupted)" in w.chat.toPlainText()
    assert w.session.asked == ["Describe everything.", "Stop, what colour is it?"]


def test_escape_stops_the_answer(make_window, qtbot):
    backend = FakeBackend(lambda: ScriptedSession(fps=2.0, tokens_per_s=8.0, first_delay_s=0.05))
    w = make_window(backend)
    running(w, qtbot)
    w.ask("Talk for a while.")
    qtbot.waitUntil(lambda: w.log.speaking, timeout=5000)
    w.activateWindow()
    qtbot.keyClick(w.input, "\x1b")  # Esc
    qtbot.waitUntil(lambda: w.session.stop_answers == 1, timeout=2000)
    qtbot.waitUntil(lambda: not w.log.speaking, timeout=2000)


def test_scripted_ui_states(make_window, qtbot):
    """Exact event sequence -> exact UI: streaming cursor, silence indicator, revision marks, error note."""
    backend = FakeBackend(lambda: ScriptedSession(fps=1.0, stats_every_s=0, silence_per_frame=False))
    w = make_window(backend)
    s = running(w, qtbot)
    s.emit(E.TurnStart(1.0, 1, "Is the door open?"), E.SpeechStart(1.5, 1, 0), E.Token(1.5, 1, 0, "No,"))
    qtbot.waitUntil(lambda: "No," in w.chat.toPlainText(), timeout=2000)
    assert not w.watching.isVisible()
    s.emit(
        E.Token(1.6, 1, 0, " it is closed."),
        E.SpeechEnd(1.7, 1, 0, "No, it is closed."),
        E.Silence(1.7, 1, 0),
    )
    qtbot.waitUntil(lambda: w.watching.isVisible(), timeout=2000)
    s.emit(
        E.SpeechStart(65.0, 1, 1, revises=0),
        E.Revision(65.0, 1, 1, 0, "No, it is closed."),
        E.Token(65.0, 1, 1, "Now it is open."),
        E.SpeechEnd(65.2, 1, 1, "Now it is open."),
        E.Error(66.0, "The camera stopped delivering frames.", "source"),
    )
    qtbot.waitUntil(lambda: "Now it is open." in w.chat.toPlainText(), timeout=2000)
    w.chat.flush()
    text = w.chat.toPlainText()
    assert "0:01 You: Is the door open?" in text
    assert "superseded at 1:05" in text
    assert "replaces the answer given at 0:01" in text
    assert "The camera stopped delivering frames." in text
    assert "camera stopped" in w.statusBar().currentMessage()


def test_broken_file_shows_error_and_app_stays_usable(make_window, qtbot, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    w = make_window()
    w.start_source(str(broken))
    qtbot.waitUntil(lambda: w.state == "idle" and w.session is None, timeout=5000)
    w.chat.flush()
    assert "Cannot open video file" in w.chat.toPlainText()
    assert w.start_btn.isEnabled() and w.picker.isEnabled()
    # pick another source: it works
    running(w, qtbot)
    qtbot.waitUntil(lambda: w.video.frames_shown >= 1, timeout=5000)


def test_missing_file_and_empty_choice_messages(make_window, qtbot):
    w = make_window()
    w.picker.set_kind("file")
    w.picker.file_edit.clear()
    w.start()
    assert w.state == "idle"
    assert "Choose a video file" in w.statusBar().currentMessage()
    w.picker.set_kind("webcam")
    w.picker.set_cameras([])
    assert "No camera found" in w.picker.camera_note.text()
    w.start()
    assert "No camera found" in w.statusBar().currentMessage()


def test_pause_resume_stop(make_window, qtbot):
    w = make_window()
    running(w, qtbot)
    w.pause_btn.click()
    assert w.state == "paused" and "Paused" in w.capture_dot.text()
    w.pause_btn.click()
    assert w.state == "running"
    w.stop_btn.click()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=3000)
    assert not w.capture_dot.isVisible()
    assert w.events[-1].kind == "SessionEnd"


def test_start_before_model_loaded_waits_with_progress(make_window, qtbot):
    w = make_window(FakeBackend(load_delay_s=0.5), wait_model=False)
    assert w.progress.isVisible()
    w.start_source("synthetic")
    assert w.state == "idle"
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    assert not w.progress.isVisible()


def test_model_failure_is_shown(make_window, qtbot):
    w = make_window(FakeBackend(fail="Model folder /nope does not exist."), wait_model=False)
    qtbot.waitUntil(lambda: not w.progress.isVisible(), timeout=5000)
    w.chat.flush()
    assert "Model folder /nope does not exist." in w.chat.toPlainText()
    assert w.model is None


def test_drop_a_file_starts_it(make_window, qtbot, tmp_path):
    from app.qt import QtCore, QtGui

    w = make_window()
    missing = tmp_path / "nothere.mp4"
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(missing))])
    pos = QtCore.QPointF(10, 10)
    drop = QtGui.QDropEvent(
        pos,
        QtCore.Qt.DropAction.CopyAction,
        mime,
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )
    w.dropEvent(drop)
    assert w.picker.file_edit.text() == str(missing)
    qtbot.waitUntil(lambda: w.state == "idle" and "no such file" in w.chat.toPlainText(), timeout=5000)


def test_accessible_names_and_shortcuts(make_window, qtbot):
    from app.qt import QtWidgets

    w = make_window()
    for b in w.findChildren(QtWidgets.QAbstractButton):
        if b.isVisible() and (not b.text() or len(b.text()) <= 2):
            assert b.accessibleName(), f"icon button {b.text()!r} has no accessible name"
    assert "Ctrl+," in [s.toString() for s in w.settings_action.shortcuts()]
    dlg = w.open_settings()
    assert dlg.isVisible()
    dlg.reject()


def test_latest_frame_is_painted(make_window, qtbot):
    w = make_window()
    running(w, qtbot)
    qtbot.waitUntil(lambda: w.video.frames_shown >= 2, timeout=5000)
    img = w.video.grab().toImage()
    px = {img.pixel(x, y) for x in range(0, img.width(), 17) for y in range(0, img.height(), 13)}
    assert len(px) > 20  # not a uniform placeholder
    arr = w.session.latest_frame()
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8


def test_demo_plays_or_says_it_is_missing(make_window, qtbot):
    from engine.sources import demo_video_path

    w = make_window()
    w.start_source("demo")
    if demo_video_path().is_file():
        qtbot.waitUntil(lambda: w.video.frames_shown >= 1, timeout=5000)
    else:
        qtbot.waitUntil(lambda: w.state == "idle", timeout=5000)
        w.chat.flush()
        assert "demo video is missing" in w.chat.toPlainText()
