"""Frame sources, the common part: the interface every source implements, frames, normalisation, pacing.

The sources themselves: `engine.video_file` (files), `engine.capture` (webcams, the screen) and
`engine.sources` (synthetic frames, and `open_source`, which turns what a user typed into a source).

Owns opening and validating a source, decoding, real-time pacing, and normalising every frame to
an (H, W, 3) uint8 RGB array no larger than `max_side` on its long side. It knows nothing of models,
queues or threads: `read()` is called by whichever thread drives capture, which hands the frames on
(usually to a `LatestMailbox`). Errors a user can cause (missing file, no camera, no display) raise
`SourceError` with one sentence they can act on; programming errors keep their traceback.

Decisions others rely on:
- A truncated or damaged video file ends the stream cleanly: `read()` returns None after the last
  frame that could be decoded and `source.warning` holds a sentence saying so (no exception), so a
  session can show what it saw and report the warning as a non-fatal error.
- `Frame.t` is the source's own clock: the position in the file (from the container's timestamps,
  so variable-frame-rate files keep true times), or seconds since `open()` for live sources. With
  `loop=True` it keeps growing across loops, so it never goes backwards.
- A real-time file (or screen) source that falls behind skips late frames instead of replaying them
  late: like a camera, it never lets latency build up (trap 8). `skipped` counts them.
- `mss` (screen capture) is imported only when a screen is used: the GPU machine does not have it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

# FFmpeg prints decoder complaints (e.g. "Invalid NAL unit size") straight to stderr for damaged
# files; we report those ourselves in one sentence. Read when OpenCV's FFmpeg backend starts, so it
# must be set before the first capture; a user who wants FFmpeg's logs can set it to 32 (info).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger(__name__)

MAX_SIDE = 1920  # frames larger than this on their long side are downscaled (8K costs 16x 1080p to move)
DEFAULT_FPS = 25.0  # used when a file's frame-rate metadata is missing or absurd
DEFAULT_CAMERA_FPS = 30.0


class SourceError(Exception):
    """A source cannot be opened or stopped working; the message is one sentence for the user."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame. Crosses threads: treat `image` as read-only."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous
    t: float  # source time in seconds: file position, or seconds since open() for live sources
    index: int  # frame number in the source (0, 1, ...), counting frames skipped by pacing


# -- image normalisation -------------------------------------------------------------------------


def to_rgb_uint8(image: np.ndarray, *, bgr: bool, max_side: int | None = MAX_SIDE) -> np.ndarray:
    """Any frame OpenCV or mss may hand us -> (H, W, 3) uint8 RGB, long side <= max_side.

    Accepts gray (H, W) or (H, W, 1), colour (H, W, 3) and with alpha (H, W, 4); uint8, 16-bit
    (top 8 bits kept), float (0..1 scaled to 0..255, larger values clipped), bool and other integers
    (clipped). `bgr` says the channel order of colour input (OpenCV and mss give BGR).
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape[:2]:
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {a.shape}")
    a = np.ascontiguousarray(_to_uint8(a))  # cv2 cannot wrap negative or odd strides
    if a.ndim == 2:
        a = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    elif a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    elif bgr:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(downscale(a, max_side))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0)
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        return np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {a.dtype}")


def downscale(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink so the long side is at most `max_side`, keeping the aspect ratio; never enlarges."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # INTER_AREA: no aliasing when shrinking


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log (e.g. "can't open camera by index") for a probe we report ourselves."""
    old = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(old)


def _valid_fps(fps: float, upper: float = 1000.0) -> bool:
    return math.isfinite(fps) and 0.0 < fps <= upper


# -- pacing --------------------------------------------------------------------------------------


class _Pacer:
    """Holds frames until `origin + source_t` on the monotonic clock.

    Every deadline is computed from the one origin (anchored at the first frame), never from the
    previous sleep, so oversleeping one frame does not shift all later ones (no drift, trap 8). It
    sleeps on an Event so that `interrupt()` from another thread ends the wait at once.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._origin: float | None = None

    def lateness(self, source_t: float) -> float:
        """Seconds past the frame's deadline (<= 0 when on time; 0 before the first frame)."""
        if self._origin is None:
            return 0.0
        return time.monotonic() - (self._origin + source_t)

    def wait(self, source_t: float) -> bool:
        """Sleep until the frame's deadline; False if interrupted."""
        now = time.monotonic()
        if self._origin is None:
            self._origin = now - source_t
        delay = self._origin + source_t - now
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()


# -- the interface -------------------------------------------------------------------------------


class FrameSource(ABC):
    """A stream of frames: `open()`, then `read()` until None, then `close()`; or use `with`.

    `read()` blocks for at most about one frame interval (pacing or capture). `interrupt()` may be
    called from any thread: a waiting or later `read()` returns None. Call `close()` from the thread
    that reads, or after it stopped (OpenCV captures must not be released during a read).
    """

    name: str = "source"  # what a user would call it: file name, "webcam 0", "screen 1"
    warning: str | None = None  # set when the stream ended early for a reason worth telling the user
    skipped: int = 0  # frames skipped because a real-time reader fell behind

    def __init__(self) -> None:
        self._stop = threading.Event()

    @property
    @abstractmethod
    def native_fps(self) -> float:
        """Frames per second the source delivers (metadata, camera setting or configured rate)."""

    @abstractmethod
    def open(self) -> None:
        """Acquire and validate the source; raises SourceError with an actionable sentence."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of the stream (or after `interrupt()`)."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    def interrupt(self) -> None:
        """Make a waiting or later `read()` return None; safe from any thread."""
        self._stop.set()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
