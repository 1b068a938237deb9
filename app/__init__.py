"""The desktop app (PySide6): window, chat, live video, voice. It talks to the engine only through
`app.backend`; it never touches tensors. Importing `app` does not import Qt: `run_gui` does.
"""

from __future__ import annotations

from typing import Any


def run_gui(args: Any = None) -> int:
    """Open the window (main.py calls this with its parsed arguments); returns the exit code."""
    from app.gui import run_gui as _run

    return _run(args)


__all__ = ["run_gui"]
