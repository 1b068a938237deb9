"""Throttle: coalesce bursts of "please repaint" into at most one call per interval.

Tokens arrive far faster than a person reads and much faster than a text view can re-layout, so the
chat pane asks for a repaint per token and a Throttle runs the repaint at ~30-60 Hz. The first call
of a burst runs at once (no added latency for a lone token); calls inside the interval only mark the
work dirty, and the timer runs it once at the end of the interval. It knows nothing of what it calls.
Lives in the GUI thread; call it only from there.
"""

from __future__ import annotations

from collections.abc import Callable

from app.qt import QObject, QTimer


class Throttle(QObject):
    """`throttle()` runs `callback` now or at the end of the current interval, never twice within it."""

    def __init__(self, callback: Callable[[], None], interval_ms: int = 25, parent: QObject | None = None):
        super().__init__(parent)
        self._callback = callback
        self._dirty = False
        self.calls = 0  # how many times the callback actually ran (tests and the benchmark read it)
        self._timer = QTimer(self)
        self._timer.setObjectName("throttle")
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_timeout)

    @property
    def interval_ms(self) -> int:
        return self._timer.interval()

    def __call__(self) -> None:
        if self._timer.isActive():
            self._dirty = True
            return
        self._run()

    def flush(self) -> None:
        """Run pending work now (e.g. before a screenshot or when the window closes)."""
        if self._dirty:
            self._timer.stop()
            self._run()

    def _run(self) -> None:
        self._dirty = False
        self.calls += 1
        self._timer.start()  # the quiet interval starts now, whatever the callback costs
        self._callback()

    def _on_timeout(self) -> None:
        if self._dirty:
            self._run()
