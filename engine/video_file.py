"""Video files as a frame source: decoding, container timestamps, real-time pacing, damaged files."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.files import printable
from engine.frames import (
    DEFAULT_FPS,
    MAX_SIDE,
    Frame,
    FrameSource,
    SourceError,
    _Pacer,
    _quiet_opencv,
    _valid_fps,
    to_rgb_uint8,
)

log = logging.getLogger(__name__)


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
