"""Frame sources: video files, webcams, the screen and synthetic frames behind one small interface.

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
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

# FFmpeg prints decoder complaints (e.g. "Invalid NAL unit size") straight to stderr for damaged
# files; we report those ourselves in one sentence. Read when OpenCV's FFmpeg backend starts, so it
# must be set before the first capture; a user who wants FFmpeg's logs can set it to 32 (info).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from engine.files import printable  # noqa: E402

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


# -- video files ---------------------------------------------------------------------------------

# Still images that FFmpeg would happily decode as a one-frame "video": refuse them by their magic
# bytes so a renamed picture gets a clear message rather than a one-frame stream.
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)


class VideoFileSource(FrameSource):
    """A video file decoded by OpenCV (FFmpeg), paced in real time or read as fast as possible."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        realtime: bool = True,
        loop: bool = False,
        max_side: int = MAX_SIDE,
    ) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self._alias_dir = None  # a temporary folder holding a plain-named link (_name_for_opencv)
        self.realtime = realtime
        self.loop = loop
        self.max_side = max_side
        self.name = self.path.name
        self.frame_count: int | None = None  # from metadata; None when unknown
        self.fps_from_metadata = False  # False when DEFAULT_FPS was assumed
        self._fps = DEFAULT_FPS
        self._cap: Any = None
        self._pacer = _Pacer(self._stop)
        self._pending: tuple[np.ndarray, float] | None = None  # first frame, decoded by open() to validate
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._index = 0  # frames taken from the file so far, all loops
        self._pass_frames = 0  # frames decoded in the current pass through the file
        self._pass_last_t = -1.0  # position of the previous frame in this pass
        self._loop_offset = 0.0  # added to positions so that t keeps growing across loops
        self._ended = False
        self._damaged = False  # a decode error ends the current pass even if later frames would grab
        self.skipped = 0
        self.warning = None

    @property
    def native_fps(self) -> float:
        return self._fps

    def _fail(self, reason: str) -> SourceError:
        return SourceError(f"Cannot open video file '{printable(str(self.path))}': {reason}.")

    def open(self) -> None:
        self.close()
        self._stop.clear()
        self._pacer = _Pacer(self._stop)
        self._reset_counters()
        p = self.path
        if not p.exists():
            raise self._fail("no such file")
        if p.is_dir():
            raise self._fail("it is a folder, not a file")
        if p.stat().st_size == 0:
            raise self._fail("the file is empty")
        try:
            with p.open("rb") as f:
                head = f.read(16)
        except OSError as e:
            raise self._fail(f"the file cannot be read ({e.strerror or e})") from None
        for magic, what in _IMAGE_MAGIC:
            if head.startswith(magic):
                raise self._fail(f"it is {what}, not a video")
        self._cap = self._open_capture()
        if self._cap is None:
            raise self._fail(
                "OpenCV cannot decode it (not a video, damaged or truncated, or an unsupported format)"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps_from_metadata = _valid_fps(fps)
        self._fps = fps if self.fps_from_metadata else DEFAULT_FPS
        count = float(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.frame_count = int(count) if math.isfinite(count) and 0 < count < 1e9 else None
        first = self._next_in_pass(decode=True)
        if first is None:
            self.close()
            raise self._fail("it contains no frame that can be decoded")
        self._pending = first

    def _open_capture(self) -> Any:
        # FFmpeg first: CAP_ANY would also try the image-sequence backend, which logs noise for
        # ordinary file names. CAP_ANY stays as a fallback for builds without FFmpeg.
        name = self._name_for_opencv()
        for api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
            with _quiet_opencv():
                try:
                    cap = cv2.VideoCapture(name, api)
                except cv2.error:
                    continue
            if cap.isOpened():
                return cap
            cap.release()
        return None

    def _name_for_opencv(self) -> str:
        """A name OpenCV can open. It takes UTF-8 text only (a name with undecodable bytes, which the
        OS allows, crashes it), and '%' in a name is read as an image-sequence pattern: such files
        are opened through a plain-named link in a private temporary folder."""
        name = str(self.path)
        try:
            name.encode("utf-8")
            if "%" not in name:
                return name
        except UnicodeEncodeError:
            pass
        import tempfile

        if self._alias_dir is None:
            self._alias_dir = tempfile.TemporaryDirectory(prefix="moss-live-")
        link = Path(self._alias_dir.name) / ("video" + printable(self.path.suffix).replace("%", ""))
        if not link.exists():
            os.symlink(os.fsencode(self.path.resolve()), os.fsencode(link))
        return str(link)

    def _next_in_pass(self, decode: bool) -> tuple[np.ndarray | None, float] | None:
        """Advance one frame in the file: (image or None if not decoded, position), None at the end."""
        if self._damaged:
            return None
        try:
            if not self._cap.grab():
                return None
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
            image = None
            if decode:
                ok, image = self._cap.retrieve()
                if not ok or image is None or image.size == 0:
                    self._note_damage(self._pass_frames)
                    return None
        except cv2.error:
            self._note_damage(self._pass_frames)
            return None
        # Container timestamps keep variable-frame-rate files on their true clock; fall back to a
        # constant step where a backend reports nothing usable (0, NaN, or going backwards).
        t = pos_ms / 1000.0
        last = self._pass_last_t
        if not math.isfinite(t) or t < 0 or (self._pass_frames > 0 and t <= last):
            t = 0.0 if self._pass_frames == 0 else last + 1.0 / self._fps
        self._pass_last_t = t
        self._pass_frames += 1
        return image, t

    def _ending(self) -> str:
        return "looping over the frames before that" if self.loop else "the stream stopped there"

    def _note_damage(self, good: int) -> None:
        """Remember that decoding failed after `good` frames of this pass; the pass ends there."""
        self._damaged = True
        if self.warning is None:
            name, n = self.path.name, good
            self.warning = f"The video file '{name}' is damaged after {n} frames; {self._ending()}."

    def _check_truncated(self) -> None:
        """At the end of a pass: did the file deliver clearly fewer frames than its metadata promises?"""
        n, expected = self._pass_frames, self.frame_count
        if self.warning or not expected or n == 0:
            return
        # Both tests must fail: the count alone misfires on variable-frame-rate files whose
        # container stores no frame count (OpenCV then estimates duration x nominal fps).
        short_count = n < 0.95 * expected - 1
        short_time = self._pass_last_t + 1.0 / self._fps < 0.95 * expected / self._fps
        if short_count and short_time:
            self.warning = (
                f"The video file '{self.path.name}' ended after {n} of {expected} frames "
                f"(truncated or damaged); {self._ending()}."
            )

    def _restart_pass(self) -> bool:
        """Reopen the file for the next loop; False if that is impossible or pointless."""
        if self._pass_frames == 0:
            return False  # a pass that decoded nothing would loop forever
        self._loop_offset += self._pass_last_t + 1.0 / self._fps
        self._pass_frames = 0
        self._pass_last_t = -1.0
        self._damaged = False
        self._cap.release()
        # Reopening is more reliable than seeking to frame 0, which some codecs get wrong.
        self._cap = self._open_capture()
        return self._cap is not None

    def read(self) -> Frame | None:
        if self._cap is None and not self._ended:
            raise RuntimeError("read() before open()")
        interval = 1.0 / self._fps
        skipped_in_a_row = 0
        while not self._ended:
            if self._stop.is_set():
                return None
            if self._pending is not None:
                item: tuple[np.ndarray | None, float] | None = self._pending
                self._pending = None
            else:
                # Decode lazily: a frame that is already late in real-time mode is skipped undecoded.
                item = self._next_in_pass(decode=not self.realtime)
            if item is None:
                had_warning = self.warning
                self._check_truncated()
                if self.warning and not had_warning:
                    log.warning("%s", self.warning)
                if self.loop and self._restart_pass():
                    continue
                self._ended = True
                return None
            image, pos = item
            t = self._loop_offset + pos
            index = self._index
            self._index += 1
            if self.realtime:
                # Skip when more than a frame late, but at most one second of video in a row, so a
                # machine that decodes slower than real time still shows something.
                if self._pacer.lateness(t) > interval and skipped_in_a_row < max(1, round(self._fps)):
                    self.skipped += 1
                    skipped_in_a_row += 1
                    continue
                if image is None:
                    image = self._retrieve()
                    if image is None:
                        continue  # damage noted: the next _next_in_pass() ends the pass
                if not self._pacer.wait(t):
                    return None
            assert image is not None
            return Frame(to_rgb_uint8(image, bgr=True, max_side=self.max_side), t, index)
        return None

    def _retrieve(self) -> np.ndarray | None:
        try:
            ok, image = self._cap.retrieve()
        except cv2.error:
            ok, image = False, None
        if not ok or image is None or image.size == 0:
            self._note_damage(self._pass_frames - 1)  # this frame was already counted when grabbed
            return None
        return image

    def close(self) -> None:
        cap, self._cap = self._cap, None
        self._pending = None
        if cap is not None:
            cap.release()


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
