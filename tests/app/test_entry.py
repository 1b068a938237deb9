"""Entry points: run_gui as main.py calls it, the engine adapter, the push-to-talk key, the theme."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from app.backend import EngineBackend, LoadFailed, download_progress_class
from app.gui import settings_from_args
from app.settings import Settings


def test_args_override_only_what_was_given():
    args = argparse.Namespace(
        model=None, device="cpu", dtype=None, fps=2.0, memory_frames=64, local_only=True, source="demo"
    )
    s = settings_from_args(Settings(device="cuda", fps=1.0), args)
    assert s.device == "cuda" and s.fps == 2.0 and s.local_only and s.dtype == "auto"
    args.int8 = True  # main.py --int8 in the window: the precision setting
    assert settings_from_args(Settings(), args).dtype == "int8"


RUN_GUI = """
import argparse, sys
from app.qt import QtCore, QtWidgets
app = QtWidgets.QApplication(sys.argv[:1])
def look_and_quit():
    modal = QtWidgets.QApplication.activeModalWidget()
    if modal is not None:  # the "already running" message
        print("MODAL", modal.text() if hasattr(modal, "text") else "")
        modal.done(0)
        return
    wins = [w for w in QtWidgets.QApplication.topLevelWidgets() if w.objectName() == "main-window" and w.isVisible()]
    print("WINDOWS", len(wins))
    app.quit()
QtCore.QTimer.singleShot(800, look_and_quit)
from app import run_gui
args = argparse.Namespace(model=None, device="cpu", dtype=None, fps=1.0, memory_frames=64, local_only=False, source="demo")
print("RC", run_gui(args))
"""


def run_gui_process(home):
    # In its own process: the app quits its event loop, which must not leak into this test session.
    import os
    import subprocess
    import sys

    env = dict(os.environ, MOSS_LIVE_HOME=str(home), QT_QPA_PLATFORM="offscreen")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", RUN_GUI], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    return out.stdout


def test_run_gui_opens_the_window_and_returns(tmp_path):
    out = run_gui_process(tmp_path)
    assert "WINDOWS 1" in out and "RC 0" in out


def test_second_instance_is_refused(qtbot, tmp_path):
    from app.desktop import acquire_single_instance

    lock = acquire_single_instance(tmp_path / "run")
    try:
        out = run_gui_process(tmp_path)
    finally:
        lock.unlock()
    assert "already running" in out and "RC 1" in out


def test_engine_backend_local_only_refuses_hub_ids():
    with pytest.raises(LoadFailed, match="local only"):
        EngineBackend().load(
            Settings(model="someorg/somemodel", device="cpu", local_only=True), lambda f, t: None
        )


def test_engine_backend_loads_the_bundled_model():
    reports = []
    m = EngineBackend().load(Settings(device="cpu"), lambda f, t: reports.append(t))
    assert m.device == "cpu" and m.handle is not None and reports[-1].startswith("Model ready")


def test_engine_backend_loads_int8_from_the_precision_setting():
    """Settings "int8" (the precision menu) loads the text decoder as int8 weight-only."""
    from engine.decoder import Linear

    m = EngineBackend().load(Settings(device="cpu", dtype="int8"), lambda f, t: None)
    assert m.handle.quantized == "int8"
    lins = [x for x in m.handle.model.modules() if isinstance(x, Linear)]
    assert lins and all(x.int8 and x.weight is None and str(x.qweight.dtype) == "torch.int8" for x in lins)


def test_download_progress_adapter_reports_bytes():
    got = []
    cls = download_progress_class(lambda f, t: got.append((f, t)))
    with cls(total=4 * 2**20, unit="B") as bar:
        bar.update(2**20)
        bar.update(2**20)
    assert any(abs(f - 0.5) < 1e-9 and "of 4.0 MB" in t for f, t in got)


def test_push_to_talk_key(make_window, qtbot):
    from app.audio import AudioRing, EnergyVAD
    from app.qt import Qt

    w = make_window()
    w.start_voice(ring=AudioRing(), vad=EnergyVAD(), recognizer=None)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=2000)
    qtbot.keyPress(w.input, Qt.Key.Key_F8)
    assert w.voice._ptt
    qtbot.keyRelease(w.input, Qt.Key.Key_F8)
    assert not w.voice._ptt
    assert w.input.text() == ""  # the key did not type into the question box


def test_dark_theme_and_font_size(make_window, qtbot):
    from app.qt import QtGui, QtWidgets

    w = make_window()
    w.apply_settings(w.settings.replace(theme="dark", font_size=14))
    app = QtWidgets.QApplication.instance()
    assert app.palette().color(QtGui.QPalette.ColorRole.Window).lightness() < 80
    assert app.font().pointSize() == 14
    w.apply_settings(w.settings.replace(theme="system", font_size=10))
    assert app.palette().color(QtGui.QPalette.ColorRole.Window).lightness() > 80
