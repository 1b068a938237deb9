"""How long quitting takes: the window on the demo with a live session and voice on, then Quit; the time
from Quit to the end of the process, and whether the transcript ends with its SessionEnd.

    python scripts/measure_quit.py          (offscreen; prints one line)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import argparse, os, sys, time
home, root = sys.argv[1], sys.argv[2]
os.environ.update(QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=home, XDG_CONFIG_HOME=home, XDG_RUNTIME_DIR=home)
sys.path.insert(0, root)
from app.qt import QtCore, QtWidgets
import app.gui as G
import main as M

app = QtWidgets.QApplication([])
args = argparse.Namespace(source="demo", model=None, device="cpu", dtype=None, fps=1.0, memory_frames=64,
                          local_only=False, mode=None, decoding="auto", int8=False)

def script():
    w = next(x for x in app.topLevelWidgets() if x.objectName() == "main-window")
    w.start_source("demo")

    def voice_on():
        w.apply_settings(w.settings.replace(voice=True))
        QtCore.QTimer.singleShot(3000, quit_now)

    def quit_now():
        print("QUIT", time.monotonic(), flush=True)
        w.close()
        app.quit()

    QtCore.QTimer.singleShot(4000, voice_on)

QtCore.QTimer.singleShot(100, script)
M.exit_now(G.run_gui(args))
"""


def main() -> int:
    home = tempfile.mkdtemp()
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, home, str(ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    t_quit = None
    for line in p.stdout:
        if line.startswith("QUIT"):
            t_quit = float(line.split()[1])
    p.wait()
    took = time.monotonic() - t_quit if t_quit is not None else float("nan")
    files = sorted(Path(home, "moss-live", "sessions").glob("*.jsonl"))
    last = files[0].read_text().splitlines()[-1] if files else ""
    print(
        f"from Quit to the end of the process: {took:.2f} s (exit code {p.returncode}); "
        f"transcript closed with SessionEnd: {'SessionEnd' in last}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
