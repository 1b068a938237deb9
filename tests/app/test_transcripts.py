"""Transcripts in the window: past sessions listed on reopening, opened into the chat, exported."""

from __future__ import annotations

from engine import events as E
from engine.transcript import TranscriptWriter

EVENTS = [
    E.SessionStart(0.0, "20260101-120000-abcdef", "kitchen.mp4", "bundled"),
    E.TurnStart(0.0, 0, ""),
    E.FrameSeen(1.0, 0, 1.0),
    E.Silence(1.0, 0, 0),
    E.TurnStart(2.0, 1, "Is the kettle on?"),
    E.SpeechStart(3.0, 1, 0),
    E.Token(3.0, 1, 0, "No."),
    E.SpeechEnd(3.2, 1, 0, "No."),
    E.Silence(3.2, 1, 1),
    E.SpeechStart(8.0, 1, 1, revises=0),
    E.Revision(8.0, 1, 1, 0, "No."),
    E.Token(8.0, 1, 1, "Now it is boiling."),
    E.SpeechEnd(8.5, 1, 1, "Now it is boiling."),
    E.SessionEnd(9.0, "stopped"),
]


def write_session(folder, events=EVENTS, name="20260101-120000-abcdef"):
    path = folder / f"{name}.jsonl"
    with TranscriptWriter(path) as w:
        for ev in events:
            w.write(ev)
    return path


def test_past_sessions_listed_and_opened(make_window, qtbot, paths):
    path = write_session(paths.sessions)
    write_session(paths.sessions, EVENTS[:6], name="20260101-130000-cutoff")
    w = make_window()
    w.chat.flush()
    assert "2 past sessions" in w.chat.toPlainText()
    w._fill_sessions_menu()
    labels = [a.text() for a in w.sessions_menu.actions()]
    assert any("kitchen.mp4" in t and "1 question" in t for t in labels)
    assert any("(cut off)" in t for t in labels)
    assert w.open_past_session(path)
    w.chat.flush()
    text = w.chat.toPlainText()
    assert "Is the kettle on?" in text and "Now it is boiling." in text and "superseded at 0:08" in text
    assert not w.watching.isVisible()


def test_export_formats(make_window, qtbot, paths, tmp_path):
    w = make_window()
    w.open_past_session(write_session(paths.sessions))
    srt = w.export_transcript("srt", tmp_path / "a.srt").read_text()
    vtt = w.export_transcript("vtt", tmp_path / "a.vtt").read_text()
    md = w.export_transcript("md", tmp_path / "a.md").read_text()
    assert "-->" in srt and "Now it is boiling." in srt
    assert vtt.startswith("WEBVTT") and "Now it is boiling." in vtt
    assert "Is the kettle on?" in md


def test_live_session_exports_and_nothing_to_export_message(make_window, qtbot, tmp_path):
    w = make_window()
    w.export_dialog("srt")
    assert "no session to export" in w.statusBar().currentMessage()
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    w.ask("What is it?")
    qtbot.waitUntil(lambda: "colour gradient." in w.chat.toPlainText(), timeout=5000)
    md = w.export_transcript("md", tmp_path / "live.md").read_text()
    assert "What is it?" in md and "colour gradient" in md


def test_opening_past_session_refused_while_live(make_window, qtbot, paths):
    path = write_session(paths.sessions)
    w = make_window()
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    assert not w.open_past_session(path)
    assert "Stop the live session" in w.statusBar().currentMessage()
