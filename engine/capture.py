"""Live capture as frame sources: webcams (OpenCV) and the screen (mss, imported only when used)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.frames import (
    DEFAULT_CAMERA_FPS,
    MAX_SIDE,
    Frame,
    FrameSource,
    SourceError,
    _quiet_opencv,
    _valid_fps,
    to_rgb_uint8,
)

log = logging.getLogger(__name__)


# -- webcams -------------------------------------------------------------------------------------


def _camera_may_exist(index: int) -> bool:
    """Cheap pre-check: on Linux a camera is a /dev/videoN node; elsewhere we must ask OpenCV."""
    if sys.platform.startswith("linux"):
        return Path(f"/dev/video{index}").exists()
    return True


def list_cameras(max_index: int = 8) -> list[int]:
    """Indices 0..max_index (inclusive) of cameras that open; quiet and fast when there are none."""
    found = []
    for i in range(max_index + 1):
        if not _camera_may_exist(i):
            continue
        with _quiet_opencv():
            try:
                cap = cv2.VideoCapture(i)
                ok = cap.isOpened()
                cap.release()
            except cv2.error:
                ok = False
        if ok:
            found.append(i)
    return found


class WebcamSource(FrameSource):
    """A camera through cv2.VideoCapture; `t` is seconds since open() at capture."""

    def __init__(
        self,
        index: int = 0,
        width: int | None = None,
        height: int | None = None,
        max_side: int = MAX_SIDE,
        failures_before_error: int = 3,
    ) -> None:
        super().__init__()
        self.index = index
        self.width = width
        self.height = height
        self.max_side = max_side
        self.failures_before_error = failures_before_error  # a few bad reads happen while a camera warms up
        self.name = f"webcam {index}"
        self._cap: Any = None
        self._fps = DEFAULT_CAMERA_FPS
        self._t0 = 0.0
        self._count = 0

    @property
    def native_fps(self) -> float:
        return self._fps

    def _missing(self) -> SourceError:
        found = ", ".join(str(i) for i in list_cameras()) or "none"
        return SourceError(f"Camera {self.index} is not available (found cameras: {found}).")

    def open(self) -> None:
        self.close()
        self._stop.clear()
        if self.index < 0 or not _camera_may_exist(self.index):
            raise self._missing()
        with _quiet_opencv():
            try:
                cap = cv2.VideoCapture(self.index)
            except cv2.error:
                cap = None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise self._missing()
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if _valid_fps(fps, 240.0) else DEFAULT_CAMERA_FPS
        self._cap = cap
        self._count = 0
        self._t0 = time.monotonic()

    def read(self) -> Frame | None:
        if self._cap is None:
            raise RuntimeError("read() before open()")
        failures = 0
        while True:
            if self._stop.is_set():
                return None
            try:
                ok, image = self._cap.read()
            except cv2.error:
                ok, image = False, None
            t = time.monotonic() - self._t0
            if ok and image is not None and image.size:
                break
            failures += 1
            if failures >= self.failures_before_error:
                raise SourceError("The camera stopped delivering frames (unplugged?).")
            self._stop.wait(0.05)  # let a warming-up camera settle instead of hammering it
        index = self._count
        self._count += 1
        return Frame(to_rgb_uint8(image, bgr=True, max_side=self.max_side), t, index)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


# -- the screen ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorInfo:
    index: int  # mss numbering: 1.. are monitors (0 is all of them together)
    left: int  # desktop coordinates of the top-left corner
    top: int
    width: int
    height: int
    primary: bool


def _import_mss() -> Any:
    try:
        import mss
    except ImportError:
        raise SourceError("Screen capture needs the 'mss' package (pip install mss).") from None
    return mss


def _no_display() -> SourceError:
    return SourceError("No screen to capture (no display).")


def _read_monitors() -> list[dict[str, Any]]:
    """mss's monitor list (index 0 = all together); SourceError when there is no screen."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise _no_display()  # mss would fail too, but only after trying to connect
    mss = _import_mss()
    try:
        with mss.MSS() as sct:
            return [dict(m) for m in sct.monitors]
    except Exception:  # mss raises backend-specific X11/GDI/Quartz errors
        raise _no_display() from None


def list_monitors() -> list[MonitorInfo]:
    """The monitors that can be captured (index 1..N); [] when there is no display."""
    try:
        monitors = _read_monitors()
    except SourceError:
        return []
    return [
        MonitorInfo(i, m["left"], m["top"], m["width"], m["height"], bool(m.get("is_primary", False)))
        for i, m in enumerate(monitors)
        if i > 0
    ]


def clamp_region(
    monitor: dict[str, int], region: tuple[int, int, int, int] | None, monitor_index: int = 1
) -> dict[str, int]:
    """The capture box in desktop coordinates: `region` (relative to the monitor) cut to the monitor.

    SourceError when the region has no area or lies entirely outside the monitor.
    """
    mw, mh = monitor["width"], monitor["height"]
    if region is None:
        return {"left": monitor["left"], "top": monitor["top"], "width": mw, "height": mh}
    left, top, width, height = (int(v) for v in region)
    if width <= 0 or height <= 0:
        raise SourceError(
            f"The capture region {left},{top},{width},{height} is empty (width and height must be positive)."
        )
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + width, mw), min(top + height, mh)
    if x1 <= x0 or y1 <= y0:
        raise SourceError(
            f"The capture region {left},{top},{width},{height} lies outside monitor {monitor_index} "
            f"({mw}x{mh})."
        )
    return {"left": monitor["left"] + x0, "top": monitor["top"] + y0, "width": x1 - x0, "height": y1 - y0}


class ScreenSource(FrameSource):
    """A monitor (or a region of it) captured with mss at `fps`; `t` is seconds since open().

    The mss object is created lazily in the thread that calls `read()`: on some platforms its
    handles are only valid in the thread that made them.
    """

    def __init__(
        self,
        monitor: int = 1,
        region: tuple[int, int, int, int] | None = None,
        fps: float = 10.0,
        max_side: int = MAX_SIDE,
    ) -> None:
        super().__init__()
        if not _valid_fps(fps, 240.0):
            raise ValueError(f"fps must be in (0, 240], got {fps}")
        self.monitor = monitor
        self.region = region  # (left, top, width, height) relative to the monitor, before clamping
        self.fps = fps
        self.max_side = max_side
        self.name = f"screen {monitor}"
        self.box: dict[str, int] | None = None  # clamped capture box in desktop coordinates
        self._local = threading.local()
        self._captures: list[Any] = []  # every mss object made, so close() can release them all
        self._t0 = 0.0
        self._tick = 0  # index of the next capture deadline (t0 + tick / fps)
        self._count = 0

    @property
    def native_fps(self) -> float:
        return self.fps

    def open(self) -> None:
        self.close()
        self._stop.clear()
        monitors = _read_monitors()
        if not 1 <= self.monitor < len(monitors) and not (self.monitor == 0 and monitors):
            have = ", ".join(str(i) for i in range(1, len(monitors))) or "none"
            raise SourceError(f"Monitor {self.monitor} does not exist (monitors: {have}).")
        self.box = clamp_region(monitors[self.monitor], self.region, self.monitor)
        self._t0 = time.monotonic()
        self._tick = 0
        self._count = 0

    def _capture(self) -> Any:
        sct = getattr(self._local, "sct", None)
        if sct is None:
            mss = _import_mss()
            try:
                sct = mss.MSS()
            except Exception:  # backend-specific X11/GDI/Quartz errors
                raise _no_display() from None
            self._local.sct = sct
            self._captures.append(sct)
        return sct

    def read(self) -> Frame | None:
        if self.box is None:
            raise RuntimeError("read() before open()")
        sct = self._capture()
        # Deadlines are t0 + k/fps; after a stall we jump to the current tick instead of
        # capturing a burst of late frames.
        now = time.monotonic()
        due = self._t0 + self._tick / self.fps
        if now - due > 1.0 / self.fps:
            current = math.floor((now - self._t0) * self.fps)
            self.skipped += current - self._tick
            self._tick = current
            due = self._t0 + self._tick / self.fps
        if due > now and self._stop.wait(due - now):
            return None
        if self._stop.is_set():
            return None
        self._tick += 1
        try:
            shot = sct.grab(self.box)
        except Exception:
            raise SourceError("Screen capture failed (the display or monitor went away?).") from None
        t = time.monotonic() - self._t0
        image = to_rgb_uint8(np.asarray(shot), bgr=True, max_side=self.max_side)  # mss gives BGRA
        index = self._count
        self._count += 1
        return Frame(image, t, index)

    def close(self) -> None:
        captures, self._captures = self._captures, []
        self._local = threading.local()
        for sct in captures:
            with contextlib.suppress(Exception):
                sct.close()
