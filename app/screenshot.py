"""`python -m app.screenshot out.png`: the window in a realistic state, saved as a PNG (for the README).

Builds the window with a scripted session on a real video (the MOSS demo clip of a living room that
the tests carry, when this is a source checkout, else the synthetic pattern): frames enter the model, a question is asked, the answer
streams, the model falls silent, then revises. The answers are scripted, not the model's: the picture
shows the app, not the model's quality. `--real` uses the real engine with the bundled model instead
(its answers are whatever that model says). Runs offscreen when there is no display.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIVING_ROOM = ROOT / "tests" / "fixtures" / "moss-demo" / "mllm_demo_data" / "3.mp4"

LIVING_ROOM_SCRIPT = (
    "What is the child doing?",
    [
        "A toddler is sitting on the rug in the living room, looking at the laundry basket.",
        "Now the child has turned to the green toy car on the rug and is playing with it.",
    ],
)
SYNTHETIC_SCRIPT = (
    "What do you see?",
    [
        "A bright square is moving across a colour gradient.",
        "Update: the square has now reached the lower right corner.",
    ],
)


def default_source() -> str:
    return str(LIVING_ROOM) if LIVING_ROOM.is_file() else "synthetic"


def script_for(spec: str) -> tuple[str, list[str]]:
    return (
        LIVING_ROOM_SCRIPT
        if Path(spec) in (LIVING_ROOM,) or Path(spec).name == "living-room.mp4"
        else SYNTHETIC_SCRIPT
    )


def run_until(app, done, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if done():
            return True
        time.sleep(0.01)
    return done()


def make_screenshot(
    out: Path,
    real: bool = False,
    source: str | None = None,
    home: Path | None = None,
    theme: str = "system",
    width: int = 1280,
    ask: str | None = None,
) -> Path:
    """ask: with the real engine, ask only this once the video runs and picture the answer (e.g. the
    bundled model on a real camera video)."""
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import tempfile

    from app.backend import EngineBackend, LoadedModel
    from app.qt import QtWidgets
    from app.scripted import ScriptedSession
    from app.settings import AppPaths, Settings
    from app.window import MainWindow

    spec = source or default_source()
    question, answers = script_for(spec)
    if real:
        question = "How many objects are there?"
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])

    class ScriptedBackend:
        def load(self, settings, report):
            return LoadedModel(None, "scripted demo", "cpu")

        def new_session(self, model, settings, transcript_dir):
            return ScriptedSession(
                answers=lambda q: answers,
                fps=1.0,
                tokens_per_s=25.0,
                first_delay_s=0.6,
                revision_delay_s=1.2,
                loop=True,
                model_name="scripted demo",
            )

    with tempfile.TemporaryDirectory() as tmp:
        paths = AppPaths.under(Path(home or tmp)).ensure()
        if Path(spec) == LIVING_ROOM:  # a friendlier name than the fixture's path in the picture
            import shutil

            spec = str(shutil.copy(LIVING_ROOM, Path(tmp) / "living-room.mp4"))
        backend = EngineBackend() if real else ScriptedBackend()
        w = MainWindow(
            Settings(first_run_done=True, last_source=spec, theme=theme), paths, backend, probe_hardware=False
        )
        w.resize(width, 720)
        w.show()
        if not run_until(app, lambda: w.model is not None, 300):
            raise SystemExit("the model did not load")
        w.start_source(spec)
        run_until(app, lambda: w.video.frames_seen >= 2, 20)
        w.input.setText(ask or question)
        w.send_typed()
        if real and ask:
            run_until(app, lambda: len(w.log.answers) >= 1 and not w.log.speaking, 60)
            run_until(app, lambda: w.video.frames_seen >= 5, 10)
        elif real:  # the bundled model on the demo scene: a count, revised when an object leaves
            run_until(app, lambda: w.video.frames_seen >= 9, 30)
            w.input.setText("What number does the display show?")
            w.send_typed()
            run_until(app, lambda: w.video.frames_seen >= 14, 30)
            w.input.setText("Tell me when a black star appears.")
            w.send_typed()
            # the black star enters at 0:18; wait for the answer to the watch request (the 4th answer)
            run_until(
                app, lambda: w.video.frames_seen >= 20 and len(w.log.answers) >= 4 and not w.log.speaking, 30
            )
        else:
            run_until(app, lambda: len(w.log.answers) >= 2 and not w.log.speaking, 30)
            run_until(app, lambda: w.watching.isVisible(), 5)
        w.input.setText("" if ask else "What do you see?" if real else "Is anyone else in the room?")
        w.chat.flush()
        app.processEvents()
        out.parent.mkdir(parents=True, exist_ok=True)
        w.grab().save(str(out))
        w.shutdown()
        w.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--real", action="store_true", help="use the real engine and the bundled model")
    p.add_argument("--source", default=None, help="source spec (default: the living-room clip or synthetic)")
    p.add_argument("--theme", choices=["system", "light", "dark"], default="system")
    p.add_argument("--width", type=int, default=1280, help="window width in pixels (720 high)")
    p.add_argument("--ask", default=None, help="--real: ask only this, once, and picture the answer")
    a = p.parse_args(argv)
    print(make_screenshot(a.out, a.real, a.source, theme=a.theme, width=a.width, ask=a.ask))
    return 0


if __name__ == "__main__":
    sys.exit(main())
