"""The window in daily use (issue: the window, ready for daily use): errors shown whole and cleared
by a good start, a failed start leaves no litter, a barged-in answer is kept and marked."""

from __future__ import annotations

from app.qt import QtGui
from tests.app.fakes import RealBackend


def test_a_source_that_fails_shows_the_whole_error_leaves_no_litter_and_a_good_start_clears_it(
    make_window, qtbot, paths, tmp_path
):
    from app.settings import Settings

    w = make_window(RealBackend(), settings=Settings(first_run_done=True, max_context=2048))
    missing = tmp_path / ("a long folder name " * 6) / "holiday video.mp4"
    w.start_source(str(missing))
    qtbot.waitUntil(
        lambda: w.state == "idle" and any(e.kind == "SessionEnd" for e in w.events), timeout=15000
    )
    text = w.banner.text
    assert w.banner.isVisible() and "no such file" in text and "holiday video.mp4" in text  # whole, not cut
    assert w.banner.label.wordWrap() and w.banner.label.textInteractionFlags()  # wraps, selectable
    w.banner.copy()
    assert QtGui.QGuiApplication.clipboard().text() == text
    assert "Opening the source" not in w.video.placeholder and "could not be opened" in w.video.placeholder
    assert list(paths.sessions.glob("*.jsonl")) == []  # no empty 0:00 session in the history
    from app.qt import QtWidgets

    dlg = w.show_messages()  # the log view keeps every message of the run, copyable
    assert "no such file" in dlg.findChild(QtWidgets.QPlainTextEdit, "message-log-text").toPlainText()
    dlg.close()

    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.video.frames_seen >= 1, timeout=15000)
    qtbot.waitUntil(lambda: not w.banner.isVisible(), timeout=5000)  # a good start clears the red state
    assert w.statusBar().styleSheet() == ""
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=5000)
    assert len(list(paths.sessions.glob("*.jsonl"))) == 1  # the good session is kept
