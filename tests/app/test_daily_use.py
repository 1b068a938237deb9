"""The window in daily use (issue: the window, ready for daily use): errors shown whole and cleared
by a good start, a failed start leaves no litter, a barged-in answer is kept and marked."""

from __future__ import annotations

import pytest

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


def test_the_bundled_model_says_what_it_can_see_and_one_click_chooses_a_real_one(
    make_window, qtbot, tmp_path, monkeypatch
):
    from app.qt import QtWidgets

    w = make_window()  # the default: no model set, the bundled one
    assert w.notice.isVisible() and "world of coloured shapes" in w.notice.label.text()
    assert "cannot understand real camera or screen video" in w.notice.label.text()
    assert "bundled demo model" in w.model_label.text()
    folder = tmp_path / "moss-video-preview-realtime-sft"
    folder.mkdir()
    monkeypatch.setattr(QtWidgets.QFileDialog, "getExistingDirectory", lambda *a, **kw: str(folder))
    qtbot.mouseClick(w.notice.choose_btn, __import__("app.qt", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    assert w.settings.model == str(folder)
    qtbot.waitUntil(lambda: w.backend.loads == 2 and w.model is not None, timeout=5000)
    assert not w.notice.isVisible()  # a real checkpoint: no toy notice


def test_push_to_talk_without_a_microphone_says_why(make_window, qtbot, monkeypatch):
    import app.window_voice as W

    class NoMic:
        def __init__(self, ring):
            pass

        def open(self):
            raise W.VoiceUnavailable("No microphone found.")

        def close(self):
            pass

    monkeypatch.setattr(W, "Microphone", NoMic)
    w = make_window()
    from app.audio import EnergyVAD

    w.start_voice(recognizer=None, vad=EnergyVAD())
    assert not w.mic_btn.isEnabled() and w.mic_btn.text() == "…"  # busy while the devices open
    qtbot.waitUntil(lambda: w.voice is not None, timeout=10000)
    assert w.mic_btn.isEnabled()
    w.push_to_talk_down()
    assert w.banner.isVisible() and "Cannot listen: No microphone found." in w.banner.text
    w.push_to_talk_up()
    w.stop_voice()


def test_file_open_starts_the_video_and_open_folder_says_where_it_is(
    make_window, qtbot, monkeypatch, tmp_path
):
    from app import desktop
    from app.qt import QtWidgets

    w = make_window()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileName", lambda *a, **kw: (str(video), ""))
    w.open_video_file()
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    assert w.session is not None and w.settings.last_source == str(video)
    monkeypatch.setattr(desktop.QtGui.QDesktopServices, "openUrl", lambda url: False)  # no file manager
    assert not w.open_folder(w.paths.sessions)
    assert str(w.paths.sessions) in w.banner.text  # the path, selectable, instead of nothing


@pytest.mark.qt_log_ignore(
    "This plugin does not support (raise|propagateSizeHints)"
)  # offscreen: no window stack
def test_a_second_launch_brings_the_running_window_to_the_front(make_window, qtbot, paths):
    from app.desktop import InstanceServer, ask_running_instance

    w = make_window()
    server = InstanceServer(paths.runtime, w)
    assert server.listening
    asked = []
    server.raise_requested.connect(asked.append)
    w.showMinimized()
    assert ask_running_instance(paths.runtime, "synthetic")
    qtbot.waitUntil(lambda: asked == ["synthetic"], timeout=5000)
    w.raise_for(asked[0])
    assert not w.isMinimized()
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    assert not ask_running_instance(paths.runtime / "another user")  # nobody listens there


@pytest.mark.parametrize("kind", ["demo", "file", "webcam", "screen"])
def test_the_window_works_at_800_px_with_every_source(make_window, qtbot, kind):
    from app.qt import QtWidgets

    w = make_window()
    w.picker.set_kind(kind)
    w.resize(800, 600)
    qtbot.waitUntil(lambda: w.width() == 800, timeout=2000)
    assert w.minimumSizeHint().width() <= 800
    for b in (w.start_btn, w.stop_btn, w.send_btn, w.input):  # nothing a user needs is pushed off
        assert b.isVisible() and b.mapTo(w, b.rect().topRight()).x() <= 800
    notes = [n for n in w.picker.findChildren(QtWidgets.QLabel) if n.text() and n.isVisible()]
    assert all(n.toolTip() == n.text() for n in notes if n.width() < n.sizeHint().width())  # cut: tooltip
    w.start_source("synthetic")  # running adds the capture indicator: still 800 px
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    w.resize(800, 600)
    qtbot.wait(50)
    assert w.minimumSizeHint().width() <= 800 and w.width() == 800


def test_past_sessions_are_searched_renamed_exported_and_deleted(make_window, qtbot, paths, tmp_path):
    from engine import events as E
    from engine.transcript import TranscriptWriter

    def session(sid, source, question, answer, t0):
        with TranscriptWriter(paths.sessions / f"{sid}.jsonl") as w:
            w.write_all(
                [E.SessionStart(0.0, sid, source, "m"), E.TurnStart(1.0, 1, question),
                 E.SpeechStart(2.0, 1, 0), E.SpeechEnd(3.0, 1, 0, answer), E.SessionEnd(t0, "stopped")]
            )  # fmt: skip

    session("20261201-100000-aaaaaa", "kitchen.mp4", "Where is the red cup?", "On the table.", 30.0)
    session("20261202-100000-bbbbbb", "webcam:0", "Who came in?", "Nobody yet.", 40.0)
    session("20261203-100000-cccccc", "screen:1", "What does the chart show?", "Sales going up.", 50.0)
    w = make_window()
    dlg = w.show_sessions()
    assert len(dlg.labels()) == 3
    dlg.search.setText("red cup")  # what was said, not only the title
    assert len(dlg.labels()) == 1 and "kitchen.mp4" in dlg.labels()[0]
    assert dlg.rename_selected("Breakfast with the cup")
    assert dlg.labels()[0].startswith("Breakfast with the cup")
    dlg.search.setText("breakfast")  # names are searched too
    assert len(dlg.labels()) == 1
    out = dlg.export_selected("md", tmp_path / "cup.md")
    assert out is not None and "Where is the red cup?" in out.read_text()
    dlg.search.setText("")
    dlg.list.setCurrentRow([i for i, t in enumerate(dlg.labels()) if "webcam:0" in t][0])
    assert dlg.delete_selected(confirm=False)
    assert len(dlg.labels()) == 2 and not (paths.sessions / "20261202-100000-bbbbbb.jsonl").exists()
    w._fill_sessions_menu()
    assert any("Breakfast with the cup" in a.text() for a in w.sessions_menu.actions())
    dlg.search.setText("breakfast")
    assert dlg.open_selected() and w.viewing.name == "20261201-100000-aaaaaa.jsonl"


@pytest.mark.qt_log_ignore("This plugin does not support (raise|propagateSizeHints)")  # offscreen
def test_the_region_picker_draws_the_screen_from_a_screenshot(qtbot):
    """No compositor needed: the picker paints a screenshot, dimmed, and the chosen region as it is."""
    from app.qt import QtCore, QtGui
    from app.source_picker import RegionSelector
    from engine.capture import MonitorInfo

    screen = QtGui.QGuiApplication.primaryScreen().geometry()
    shot = QtGui.QPixmap(screen.size())
    shot.fill(QtGui.QColor(200, 180, 40))  # a bright "desktop"
    m = MonitorInfo(1, screen.x(), screen.y(), screen.width(), screen.height(), True)
    sel = RegionSelector(m)
    qtbot.addWidget(sel)
    sel.show_on_monitor(shot)
    sel._rect = QtCore.QRect(20, 30, 100, 60)
    img = sel.grab().toImage()
    inside, outside = img.pixelColor(60, 60), img.pixelColor(300, 300)
    assert (inside.red(), inside.green(), inside.blue()) == (200, 180, 40)  # the region, undimmed
    assert outside.red() < 200 and outside.red() > 60  # the rest: the screenshot, dimmed (not black)
    sel.close()


def test_the_model_catalogue_says_what_fits_downloads_and_loads_without_restart(
    make_window, qtbot, monkeypatch, tmp_path
):
    import huggingface_hub

    from app.hardware import GPU, KNOWN_MODELS, Hardware

    calls = []

    def fake_download(repo_id, local_files_only=False, tqdm_class=None, allow_patterns=None, **kw):
        calls.append((repo_id, local_files_only, tuple(allow_patterns or ())))
        if local_files_only:
            raise FileNotFoundError(repo_id)  # not in the hub cache yet
        if tqdm_class is not None:  # the hub client reports bytes through this class
            bar = tqdm_class(total=2000, unit="B")
            bar.update(1000)
            bar.close()
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    good = __import__("hashlib").sha256(b"weights").hexdigest()
    listed = {"sha": good}

    class Info:
        siblings = [type("S", (), {"rfilename": "model.safetensors", "lfs": {"sha256": None}})()]

    def model_info(self, repo_id, files_metadata=False):
        Info.siblings[0].lfs = {"sha256": listed["sha"]}
        return Info

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    w = make_window()
    dlg = w.show_catalogue()
    qtbot.addWidget(dlg)
    dlg.hardware = Hardware(64.0, 16, (GPU("RTX 4090", 24.0),), False, "2.13", "")
    dlg.fill()
    texts = [dlg.table.item(i, 2).text() for i in range(dlg.table.rowCount())]
    assert "int8" in texts[1] and texts[1].startswith("✓")  # a 24 GB card: with int8
    assert "27 GB bfloat16" in dlg.table.item(1, 1).text()
    dlg.table.selectRow(1)
    dlg.use_selected()
    qtbot.waitUntil(lambda: w.settings.model == KNOWN_MODELS[1].source, timeout=5000)
    qtbot.waitUntil(lambda: w.backend.loads == 2, timeout=5000)  # loaded without a restart
    assert any(not local and "*.safetensors" in pats and not any(p.endswith(".py") for p in pats)
               for _, local, pats in calls)  # fmt: skip
    listed["sha"] = "0" * 64  # the hub lists another checksum: the file is removed, the user told
    dlg.use_selected()
    qtbot.waitUntil(lambda: "did not match its checksum" in dlg.status.text(), timeout=5000)
    assert not weights.exists()
    dlg.local_only.setChecked(True)
    assert w.settings.local_only
    n = len(calls)
    dlg.table.selectRow(2)
    dlg.use_selected()
    qtbot.waitUntil(lambda: "local only" in dlg.status.text(), timeout=5000)
    assert all(local for _, local, _ in calls[n:])  # local only: the network was never asked
