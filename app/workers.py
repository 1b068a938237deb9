"""Background work for the GUI: run a function in a named thread, get results back as queued signals.

Owns the hand-off rule of the app: worker code never touches widgets; it calls `report()` and
returns a value, and the `Task` object (living in the GUI thread) re-emits both as Qt signals, which
Qt delivers in the GUI thread because the emitting thread differs (queued connection, stated
explicitly where connected). Also owns the crash hook that routes exceptions from any thread to the
GUI thread instead of losing them on stderr. It knows nothing of models or sessions.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from app.qt import QObject, Qt, Signal


class Task(QObject):
    """`fn(report)` in a thread; `progress(fraction, text)`, then `done(result)` or `failed(message)`."""

    progress = Signal(float, str)
    done = Signal(object)
    failed = Signal(str)

    def __init__(
        self, name: str, fn: Callable[[Callable[[float, str], None]], Any], parent: QObject | None = None
    ):
        super().__init__(parent)
        self.setObjectName(name)
        self._fn = fn
        self.cancelled = False  # set by the GUI when the result is no longer wanted
        self.finished = False
        # Daemon on purpose: the work here (loading weights, probing hardware) cannot be interrupted,
        # and closing the window must not wait minutes for a load nobody wants any more. Engine threads
        # are never daemons; they have real cancellation (Session.stop).
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Task:
        self._thread.start()
        return self

    def connect(
        self,
        done: Callable[[Any], None] | None = None,
        failed: Callable[[str], None] | None = None,
        progress: Callable[[float, str], None] | None = None,
    ) -> Task:
        q = Qt.ConnectionType.QueuedConnection
        if done is not None:
            self.done.connect(done, q)
        if failed is not None:
            self.failed.connect(failed, q)
        if progress is not None:
            self.progress.connect(progress, q)
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _report(self, fraction: float, text: str) -> None:
        if not self.cancelled:
            self.progress.emit(float(fraction), str(text))

    def _run(self) -> None:
        try:
            result = self._fn(self._report)
        except Exception as e:  # any failure becomes one message; programming errors keep the traceback
            if not _is_user_error(e):
                traceback.print_exc()
            if not self.cancelled:
                self.failed.emit(str(e) if _is_user_error(e) else f"{type(e).__name__}: {e}")
        else:
            if not self.cancelled:
                self.done.emit(result)
        finally:
            self.finished = True


def _is_user_error(e: BaseException) -> bool:
    """Errors whose message is written for a user (the engine's and ours), as opposed to bugs."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"LoadFailed", "LoadError", "SourceError", "ConfigError", "VoiceUnavailable"})


class CrashRelay(QObject):
    """Exceptions from any thread arrive in the GUI thread as `crashed(text)`."""

    crashed = Signal(str)

    def install(self) -> CrashRelay:
        self._old_sys, self._old_thread = sys.excepthook, threading.excepthook

        def on_exception(kind, value, tb) -> None:
            self._old_sys(kind, value, tb)
            self.crashed.emit("".join(traceback.format_exception_only(kind, value)).strip())

        def on_thread_exception(args: threading.ExceptHookArgs) -> None:
            self._old_thread(args)
            if args.exc_type is not None and not issubclass(args.exc_type, SystemExit):
                name = args.thread.name if args.thread else "a thread"
                text = "".join(traceback.format_exception_only(args.exc_type, args.exc_value)).strip()
                self.crashed.emit(f"{name}: {text}")

        sys.excepthook = on_exception
        threading.excepthook = on_thread_exception
        return self

    def uninstall(self) -> None:
        sys.excepthook, threading.excepthook = self._old_sys, self._old_thread
