"""The live video view: the newest source frame, an overlay of runtime numbers, a frame-entered marker.

Owns turning an (H, W, 3) uint8 RGB array into a QImage and painting it scaled (aspect kept), the
overlay (perception fps, lag, frames in memory, dropped frames), a marker that flashes when a frame
enters the model (FrameSeen), and the capture indicator dot. It knows nothing of sessions: the window
pulls frames and hands them over. Arrays are the only engine data it sees; never tensors.
"""

from __future__ import annotations

import time

import numpy as np

from app.qt import Qt, QtCore, QtGui, QtWidgets
from engine import events as E

FLASH_S = 0.35  # how long the "frame entered the model" marker stays lit


def to_qimage(frame: np.ndarray) -> QtGui.QImage:
    """(H, W, 3) uint8 RGB -> a QImage that owns its pixels (safe after `frame` is reused)."""
    a = np.ascontiguousarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {a.shape} {a.dtype}")
    h, w = a.shape[:2]
    # QImage wraps the buffer without copying; .copy() detaches it from numpy's memory.
    return QtGui.QImage(a.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class VideoView(QtWidgets.QWidget):
    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("video")
        self.setAccessibleName("Live video")
        self.setMinimumSize(320, 200)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setAcceptDrops(False)  # the window handles drops
        self._image: QtGui.QImage | None = None
        self._last: np.ndarray | None = None  # identity check: repaint only when the frame changed
        self.frames_shown = 0
        self.stats: E.Stats | None = None
        self.frames_seen = 0
        self._flash_until = 0.0
        self.capturing = False
        self.placeholder = "No video yet: pick a source and press Start."
        self._flash_timer = QtCore.QTimer(self)
        self._flash_timer.setObjectName("frame-marker")
        self._flash_timer.setSingleShot(True)
        self._flash_timer.timeout.connect(self.update)

    # ---- inputs -----------------------------------------------------------------------------------
    def set_frame(self, frame: np.ndarray | None) -> bool:
        """Show `frame` if it is new; True when it was."""
        if frame is None or frame is self._last:
            return False
        self._last = frame
        self._image = to_qimage(frame)
        self.frames_shown += 1
        self.update()
        return True

    def clear(self, placeholder: str | None = None) -> None:
        self._image = None
        self._last = None
        self.stats = None
        if placeholder is not None:
            self.placeholder = placeholder
        self.update()

    def set_stats(self, stats: E.Stats) -> None:
        self.stats = stats
        self.update()

    def mark_frame_seen(self, index: int) -> None:
        self.frames_seen = index + 1
        self._flash_until = time.monotonic() + FLASH_S
        self._flash_timer.start(int(FLASH_S * 1000) + 10)
        self.update()

    def set_capturing(self, on: bool) -> None:
        self.capturing = on
        self.update()

    @property
    def flashing(self) -> bool:
        return time.monotonic() < self._flash_until

    def overlay_text(self) -> str:
        s = self.stats
        if s is None:
            return f"frames in model {self.frames_seen}"
        return (
            f"perception {s.perception_fps:.1f} fps · lag {s.lag_s:.2f} s · "
            f"memory {s.frames_in_memory} frames · dropped {s.frames_dropped}"
        )

    # ---- painting ---------------------------------------------------------------------------------
    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 (Qt name)
        p = QtGui.QPainter(self)
        try:
            p.fillRect(self.rect(), QtGui.QColor(16, 16, 16))
            if self._image is None:
                p.setPen(QtGui.QColor(170, 170, 170))
                p.drawText(
                    self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder
                )
                return
            img = self._image
            target = QtCore.QRect(
                QtCore.QPoint(0, 0), img.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            )
            target.moveCenter(self.rect().center())
            p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
            p.drawImage(target, img)
            self._paint_overlay(p)
        finally:
            p.end()

    def _paint_overlay(self, p: QtGui.QPainter) -> None:
        text = self.overlay_text()
        font = p.font()
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        p.setFont(font)
        fm = QtGui.QFontMetrics(font)
        box = fm.boundingRect(text).adjusted(-6, -3, 6, 3)
        box.moveTopLeft(QtCore.QPoint(8, 8))
        p.fillRect(box, QtGui.QColor(0, 0, 0, 150))
        p.setPen(QtGui.QColor(235, 235, 235))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        # The marker: a ring top-right that lights up when a frame enters the model.
        r = 9
        centre = QtCore.QPoint(self.width() - 8 - r, 8 + r)
        lit = self.flashing
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255, 200), 2))
        p.setBrush(QtGui.QColor(60, 200, 255) if lit else QtGui.QColor(0, 0, 0, 120))
        p.drawEllipse(centre, r, r)
        if self.capturing:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QColor(220, 30, 30))
            p.drawEllipse(QtCore.QPoint(centre.x() - 3 * r, centre.y()), r - 3, r - 3)
