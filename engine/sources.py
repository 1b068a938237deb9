"""Frame sources: video files, webcams, the screen and synthetic frames behind one small interface.

Owns `open_source`, which turns what a user named ("demo", "webcam:1", "screen:1:0,0,640,480", a path)
into a source, and the synthetic source. The interface, frames and pacing are in `engine.frames`,
files in `engine.video_file`, webcams and the screen in `engine.capture`; their names are exported
here too, so `from engine.sources import VideoFileSource` keeps working. It knows nothing of models.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.frames import (
    DEFAULT_FPS,
    MAX_SIDE,
    Frame,
    FrameSource,
    SourceError,
    _Pacer,
    _valid_fps,
    downscale,
    to_rgb_uint8,
)

log = logging.getLogger(__name__)
from engine.capture import (  # noqa: E402
    MonitorInfo,
    ScreenSource,
    WebcamSource,
    clamp_region,
    list_cameras,
    list_monitors,
)
from engine.video_file import VideoFileSource  # noqa: E402

# -- synthetic frames ----------------------------------------------------------------------------


def synthetic_pattern(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A deterministic moving test picture (RGB): a drifting gradient and a square that moves."""
    w, h = size
    x = np.arange(w, dtype=np.int32)[None, :]
    y = np.arange(h, dtype=np.int32)[:, None]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = ((x + 3 * index) * 255 // max(w, 1)) % 256
    img[..., 1] = ((y + 2 * index) * 255 // max(h, 1)) % 256
    img[..., 2] = (index * 7) % 256
    side = max(1, min(w, h) // 5)
    cx = (index * 4) % max(1, w - side)
    cy = (index * 3) % max(1, h - side)
    img[cy : cy + side, cx : cx + side] = 255
    return img


class SyntheticSource(FrameSource):
    """Deterministic frames for tests and demos: a list of images, a function of the index, or a pattern.

    Images are RGB. `t = index / fps`. A list ends after its last image; a function ends after
    `num_frames` or when it returns None; the built-in pattern runs for `num_frames` (None = forever).
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray] | Callable[[int], np.ndarray | None] | None = None,
        fps: float = 10.0,
        realtime: bool = False,
        num_frames: int | None = None,
        size: tuple[int, int] = (320, 240),
        max_side: int = MAX_SIDE,
    ) -> None:
        super().__init__()
        if not _valid_fps(fps):
            raise ValueError(f"fps must be in (0, 1000], got {fps}")
        if frames is None:
            self._make: Callable[[int], np.ndarray | None] = lambda i: synthetic_pattern(i, size)
        elif callable(frames):
            self._make = frames
        else:
            images = list(frames)
            self._make = lambda i: images[i] if i < len(images) else None
            num_frames = len(images) if num_frames is None else min(num_frames, len(images))
        self.num_frames = num_frames
        self.fps = fps
        self.realtime = realtime
        self.max_side = max_side
        self.name = "synthetic"
        self._index = 0
        self._opened = False
        self._pacer = _Pacer(self._stop)

    @property
    def native_fps(self) -> float:
        return self.fps

    def open(self) -> None:
        self._stop.clear()
        self._pacer = _Pacer(self._stop)
        self._index = 0
        self._opened = True

    def read(self) -> Frame | None:
        if not self._opened:
            raise RuntimeError("read() before open()")
        i = self._index
        if self._stop.is_set() or (self.num_frames is not None and i >= self.num_frames):
            return None
        raw = self._make(i)
        if raw is None:
            return None
        self._index += 1
        t = i / self.fps
        if self.realtime and not self._pacer.wait(t):
            return None
        # Copy: the caller keeps owning its array, the frame must not change under a reader.
        image = to_rgb_uint8(raw, bgr=False, max_side=self.max_side)
        if image is raw:
            image = image.copy()
        return Frame(image, t, i)

    def close(self) -> None:
        self._opened = False


# -- choosing a source ---------------------------------------------------------------------------


def demo_video_path() -> Path:
    """Where the bundled demo video lives (it may be missing in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "assets" / "demo.mp4"


def _parse_int(text: str, spec: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SourceError(f"Invalid source '{spec}': {what} must be a whole number.") from None


def open_source(spec: str, realtime: bool = True, loop: bool = False) -> FrameSource:
    """Build (not open) the source a user named; SourceError for a spec that cannot work.

    Specs: "demo", "webcam" / "webcam:N", "screen" / "screen:N" / "screen:N:left,top,width,height"
    (region relative to monitor N), "synthetic" / "synthetic:NUM_FRAMES", or a video file path.
    Devices and files are only touched by `open()`, in the thread that will read.
    """
    if os.path.isfile(spec):  # a file of that exact name (it may begin or end with spaces)
        return VideoFileSource(spec, realtime=realtime, loop=loop)
    s = spec.strip()
    low = s.lower()
    if low == "demo":
        path = demo_video_path()
        if not path.is_file():
            raise SourceError(
                f"The demo video is missing (expected {path}); choose a video file or a camera."
            )
        return VideoFileSource(path, realtime=realtime, loop=loop)
    if low == "webcam" or low.startswith("webcam:"):
        index = _parse_int(s[7:], spec, "the camera number") if ":" in s else 0
        return WebcamSource(index)
    if low == "screen" or low.startswith("screen:"):
        parts = s.split(":", 2)
        monitor = _parse_int(parts[1], spec, "the monitor number") if len(parts) > 1 else 1
        region = None
        if len(parts) > 2:
            nums = parts[2].split(",")
            if len(nums) != 4:
                raise SourceError(f"Invalid source '{spec}': a region is left,top,width,height.")
            l, t, w, h = (_parse_int(n, spec, "each region value") for n in nums)
            region = (l, t, w, h)
        return ScreenSource(monitor, region)
    if low == "synthetic" or low.startswith("synthetic:"):
        n = _parse_int(s[10:], spec, "the number of frames") if ":" in s else None
        return SyntheticSource(fps=DEFAULT_FPS, realtime=realtime, num_frames=n)
    if not s:
        raise SourceError("No source given; name a video file, 'webcam', 'screen', 'demo' or 'synthetic'.")
    return VideoFileSource(s, realtime=realtime, loop=loop)


__all__ = [
    "Frame",
    "FrameSource",
    "SourceError",
    "VideoFileSource",
    "WebcamSource",
    "ScreenSource",
    "SyntheticSource",
    "MonitorInfo",
    "list_cameras",
    "list_monitors",
    "clamp_region",
    "demo_video_path",
    "open_source",
    "synthetic_pattern",
    "to_rgb_uint8",
    "downscale",
    "MAX_SIDE",
    "DEFAULT_FPS",
]
