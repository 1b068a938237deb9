"""Starting the window: folders, settings, one instance, crash relay, the real engine backend.

Owns `run_gui(args)`, which main.py calls with its parsed arguments. Command-line options that differ
from main.py's defaults override the saved settings for this run. It knows nothing of how the window
is laid out.
"""

from __future__ import annotations

import sys
from typing import Any

from app.settings import AppPaths, Settings, load_settings

# main.py's defaults: an option still at its default leaves the saved setting alone.
_ARG_DEFAULTS = {
    "model": None,
    "device": "cpu",
    "dtype": None,
    "fps": 1.0,
    "memory_frames": 64,
    "local_only": False,
    "mode": None,
    "decoding": "auto",
}


def settings_from_args(settings: Settings, args: Any) -> Settings:
    changes: dict[str, Any] = {}
    for name, default in _ARG_DEFAULTS.items():
        value = getattr(args, name, default)
        if value != default and value is not None:
            changes[name] = value
    if getattr(args, "int8", False):
        changes["dtype"] = "int8"
    return settings.replace(**changes) if changes else settings


def run_gui(args: Any = None) -> int:
    """Open the window and run the Qt event loop; returns the exit code."""
    from app.backend import EngineBackend
    from app.desktop import InstanceServer, acquire_single_instance, ask_running_instance
    from app.qt import Qt, QtWidgets
    from app.window import MainWindow
    from app.workers import CrashRelay

    paths = AppPaths.from_platform().ensure()
    settings, messages = load_settings(paths.settings_file)
    settings = settings_from_args(settings, args)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("moss-live")
    app.setApplicationDisplayName("MOSS Live")
    app.setDesktopFileName("moss-live")
    source = getattr(args, "source", None)
    lock = acquire_single_instance(paths.runtime)
    if lock is None:
        wanted = source if source and source != "demo" else ""
        if ask_running_instance(paths.runtime, wanted):
            return 0  # the running window came to the front (and opens the source named here)
        QtWidgets.QMessageBox.information(None, "MOSS Live", "MOSS Live is already running.")
        return 1
    crash = CrashRelay().install()
    preload_engine()
    window = MainWindow(settings, paths, EngineBackend(), messages)
    server = InstanceServer(paths.runtime, window)
    server.raise_requested.connect(lambda spec: window.raise_for(spec))
    crash.crashed.connect(
        lambda text: window.show_error(f"Internal error: {text}"), Qt.ConnectionType.QueuedConnection
    )
    window.show()
    if source and source != "demo":
        window.start_source(source)  # starts as soon as the model is loaded
    try:
        return app.exec()
    finally:
        window.close()  # stops the session and the voice thread (closeEvent -> shutdown)
        crash.uninstall()
        lock.unlock()


def preload_engine() -> None:
    """Import torch and the engine before the window exists. Importing torch holds Python's global
    lock for ~0.2 s in one C call, and the model's first construction on the meta device imports
    ~1.5 s of modules; done in the model-loading thread they froze the first seconds of the window
    (gaps of 100-250 ms). Here they delay the window's first appearance by a second or two."""
    import torch

    # The first random tensor made on the meta device (the model is built there) imports torch's
    # symbolic-shape machinery and torch._dynamo (~1.5 s): here, not in the loader thread.
    import torch._dynamo  # noqa: F401  (imported by the first torch.randn on the meta device)

    import engine.loading  # noqa: F401  (safetensors)
    import engine.session  # noqa: F401

    with torch.device("meta"):  # as load_model builds the model
        torch.randn(8)
