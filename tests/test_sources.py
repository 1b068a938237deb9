"""Frame sources: real videos decode to RGB frames on the file's clock; bad inputs give one clear sentence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import engine.sources as sources
from engine.sources import (
    DEFAULT_FPS,
    Frame,
    ScreenSource,
    SourceError,
    SyntheticSource,
    VideoFileSource,
    WebcamSource,
    clamp_region,
    list_cameras,
    list_monitors,
    open_source,
    to_rgb_uint8,
)
from tests.paths import MOSS_DEMO

DATA = MOSS_DEMO
DEMO = DATA / "mllm_demo_data"
PORTRAIT = DATA / "mllm_realtime_data" / "v-5sRwJNR8U.mp4"


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "MJPG") -> Path:
    h, w = frames[0].shape[:2]
    color = frames[0].ndim == 3
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), isColor=color)
    assert writer.isOpened(), f"cannot write {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def read_all(src) -> list[Frame]:
    with src:
        return list(src)


# -- real videos ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "fps", "count"),
    [("1.mp4", (360, 640), 25.0, 243), ("2.avi", (240, 320), 29.92, 270), ("3.mp4", (360, 640), 23.98, 146)],
)
def test_real_videos_decode_to_rgb_frames_on_file_clock(name, size, fps, count):
    src = VideoFileSource(DEMO / name, realtime=False)
    frames = read_all(src)
    assert len(frames) == count
    assert src.native_fps == pytest.approx(fps, abs=0.01) and src.fps_from_metadata
    assert src.warning is None
    for f in frames[:3] + frames[-3:]:
        assert f.image.shape == (*size, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
    assert [f.index for f in frames] == list(range(count))
    ts = [f.t for f in frames]
    assert ts[0] == 0.0 and all(b > a for a, b in zip(ts, ts[1:], strict=False))
    assert ts[-1] == pytest.approx((count - 1) / fps, abs=0.05)  # container timestamps = position


def test_portrait_video_keeps_its_orientation():
    src = VideoFileSource(PORTRAIT, realtime=False)
    with src:
        first = src.read()
    assert first is not None and first.image.shape == (1280, 720, 3)


def test_bgr_is_converted_to_rgb(tmp_path):
    red_bgr = np.zeros((32, 48, 3), np.uint8)
    red_bgr[..., 2] = 255  # OpenCV writes BGR: this is pure red
    frames = read_all(VideoFileSource(write_video(tmp_path / "red.avi", [red_bgr] * 3), realtime=False))
    r, g, b = frames[0].image.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40


# -- broken and unusual files --------------------------------------------------------------------


def open_error(path) -> str:
    with pytest.raises(SourceError) as e:
        VideoFileSource(path, realtime=False).open()
    return str(e.value)


def test_missing_empty_folder_and_non_video_files_are_refused(tmp_path):
    assert "no such file" in open_error(tmp_path / "nope.mp4")
    assert "folder" in open_error(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert open_error(empty) == f"Cannot open video file '{empty}': the file is empty."
    png = tmp_path / "picture.png"
    cv2.imwrite(str(png), np.zeros((20, 30, 3), np.uint8))
    renamed = png.rename(tmp_path / "picture.mp4")
    assert "PNG image, not a video" in open_error(renamed)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    msg = open_error(text)
    assert msg.startswith("Cannot open video file") and "cannot decode" in msg
    assert msg.endswith(").") and "\n" not in msg  # one sentence


def test_truncated_file_without_index_cannot_be_opened(tmp_path):
    data = (DEMO / "1.mp4").read_bytes()  # its index (moov) sits at the end: half the file has none
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    assert "cannot decode" in open_error(half)


def test_truncated_file_ends_cleanly_with_a_warning(tmp_path, capfd):
    data = PORTRAIT.read_bytes()  # index at the start: the first half still decodes
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    src = VideoFileSource(half, realtime=False)
    frames = read_all(src)
    assert 50 < len(frames) < 329
    assert src.read() is None  # stays ended
    assert src.warning is not None and "ended after" in src.warning and "truncated" in src.warning
    assert "NAL" not in capfd.readouterr().err  # FFmpeg's decoder noise is silenced


def test_one_pixel_video(tmp_path):
    path = write_video(tmp_path / "dot.avi", [np.full((1, 1, 3), 10 * i, np.uint8) for i in range(5)])
    frames = read_all(VideoFileSource(path, realtime=False))
    assert len(frames) == 5 and frames[0].image.shape == (1, 1, 3)


def test_grayscale_video_becomes_rgb(tmp_path):
    gray = [np.full((24, 32), 40 * i, np.uint8) for i in range(4)]
    frames = read_all(VideoFileSource(write_video(tmp_path / "gray.avi", gray), realtime=False))
    assert len(frames) == 4
    img = frames[2].image
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert np.abs(img[..., 0].astype(int) - img[..., 2]).max() <= 2  # still gray
    assert abs(int(img.mean()) - 80) <= 6


def test_8k_video_is_downscaled_keeping_aspect(tmp_path):
    big = np.zeros((4320, 7680, 3), np.uint8)
    big[:, :3840] = 200
    frames = read_all(VideoFileSource(write_video(tmp_path / "8k.avi", [big]), realtime=False))
    assert len(frames) == 1
    assert frames[0].image.shape == (1080, 1920, 3)
    small = read_all(VideoFileSource(tmp_path / "8k.avi", realtime=False, max_side=640))
    assert small[0].image.shape == (360, 640, 3)


class _FakeMetadata:
    """Wraps a real capture and lies about chosen properties (as broken files do)."""

    def __init__(self, cap, lies):
        self._cap, self._lies = cap, lies

    def get(self, prop):
        return self._lies[prop] if prop in self._lies else self._cap.get(prop)

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_missing_fps_and_timestamps_fall_back(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.avi", [np.full((8, 8, 3), i, np.uint8) for i in range(6)], fps=10)
    real_open = VideoFileSource._open_capture

    def lying_open(self):
        cap = real_open(self)
        return _FakeMetadata(cap, {cv2.CAP_PROP_FPS: 0.0, cv2.CAP_PROP_POS_MSEC: float("nan")})

    monkeypatch.setattr(VideoFileSource, "_open_capture", lying_open)
    src = VideoFileSource(path, realtime=False)
    frames = read_all(src)
    assert src.native_fps == DEFAULT_FPS and not src.fps_from_metadata
    assert [f.t for f in frames] == pytest.approx([i / DEFAULT_FPS for i in range(6)])


class _BreaksAfter(_FakeMetadata):
    """Decodes `good` frames, then raises like a corrupt packet would."""

    def __init__(self, cap, good):
        super().__init__(cap, {})
        self.good, self.n = good, 0

    def retrieve(self):
        self.n += 1
        if self.n > self.good:
            raise cv2.error("corrupt frame")
        return self._cap.retrieve()


@pytest.mark.parametrize("realtime", [False, True])
def test_decode_error_mid_stream_ends_cleanly_with_a_warning(tmp_path, monkeypatch, realtime):
    path = write_video(tmp_path / "v.avi", [np.full((8, 8, 3), i, np.uint8) for i in range(20)], fps=100)
    real_open = VideoFileSource._open_capture
    monkeypatch.setattr(VideoFileSource, "_open_capture", lambda self: _BreaksAfter(real_open(self), 5))
    src = VideoFileSource(path, realtime=realtime)
    frames = read_all(src)
    assert len(frames) == 5 and src.read() is None
    assert src.warning == "The video file 'v.avi' is damaged after 5 frames; the stream stopped there."


def test_loop_keeps_time_and_index_growing():
    src = VideoFileSource(DEMO / "3.mp4", realtime=False, loop=True)
    with src:
        frames = [src.read() for _ in range(300)]
    assert all(f is not None for f in frames)
    ts = [f.t for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
    assert [f.index for f in frames] == list(range(300))
    assert ts[146] == pytest.approx(146 / src.native_fps, abs=0.05)  # the second pass continues the clock


# -- real-time pacing ----------------------------------------------------------------------------


def test_realtime_pacing_follows_the_file_clock_without_drift():
    src = VideoFileSource(DEMO / "1.mp4", realtime=True)
    arrivals = []
    with src:
        while (f := src.read()) is not None:
            arrivals.append((time.monotonic(), f.t))
            if f.t >= 1.5:
                break
    t0, s0 = arrivals[0]
    for wall, t in arrivals:
        assert wall - t0 >= (t - s0) - 0.005  # never early
    wall_end, t_end = arrivals[-1]
    assert abs((wall_end - t0) - (t_end - s0)) <= 0.1 * (t_end - s0)  # within 10% of schedule
    late = [(w - t0) - (t - s0) for w, t in arrivals]
    assert np.median(late) < 0.02  # typical frame is on time


def test_realtime_reader_that_falls_behind_skips_instead_of_lagging():
    src = VideoFileSource(DEMO / "1.mp4", realtime=True)
    with src:
        first = src.read()
        time.sleep(0.5)  # the reader stalls for 12 frame times
        start = time.monotonic()
        nxt = src.read()
        waited = time.monotonic() - start
    assert first is not None and nxt is not None
    assert nxt.t >= 0.4 and src.skipped >= 9  # jumped to "now" instead of replaying old frames
    assert waited < 0.2


def test_interrupt_ends_a_paced_wait_at_once():
    src = SyntheticSource(fps=0.5, realtime=True)  # 2 s between frames
    with src:
        assert src.read() is not None
        threading.Timer(0.1, src.interrupt).start()
        t = time.monotonic()
        assert src.read() is None
        assert time.monotonic() - t < 1.0


# -- synthetic frames and normalisation ----------------------------------------------------------


def test_synthetic_sources_are_deterministic():
    a = read_all(SyntheticSource(num_frames=5, fps=5))
    b = read_all(SyntheticSource(num_frames=5, fps=5))
    assert len(a) == 5 and [f.t for f in a] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, a[1].image)  # it moves
    imgs = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    got = read_all(SyntheticSource(imgs))
    assert [int(f.image[0, 0, 0]) for f in got] == [0, 1, 2]
    assert got[0].image is not imgs[0]  # the caller keeps its own array
    fn = read_all(SyntheticSource(lambda i: None if i == 4 else np.zeros((2, 2), np.uint16)))
    assert len(fn) == 4 and fn[0].image.shape == (2, 2, 3)


def test_to_rgb_uint8_handles_gray_16bit_alpha_float_and_size():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_rgb_uint8(gray, bgr=True)
    assert out.shape == (3, 4, 3) and (out[..., 0] == gray).all()
    sixteen = np.full((2, 2, 3), 0xFF00, np.uint16)
    assert (to_rgb_uint8(sixteen, bgr=False) == 0xFF).all()
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0] = 255  # blue in BGRA
    assert tuple(to_rgb_uint8(bgra, bgr=True)[0, 0]) == (0, 0, 255)
    assert to_rgb_uint8(np.ones((2, 2, 1), np.float32), bgr=False).max() == 255
    wide = np.zeros((100, 4000, 3), np.uint8)
    assert to_rgb_uint8(wide, bgr=False, max_side=1920).shape == (48, 1920, 3)
    with pytest.raises(ValueError):
        to_rgb_uint8(np.zeros((2, 2, 2), np.uint8), bgr=False)


# -- webcams -------------------------------------------------------------------------------------


def test_missing_camera_gives_a_clear_error_quickly(capfd):
    t = time.monotonic()
    with pytest.raises(SourceError, match=r"^Camera 99 is not available \(found cameras: .+\)\.$") as e:
        WebcamSource(99).open()
    assert time.monotonic() - t < 2.0
    if not list_cameras():
        assert "(found cameras: none)" in str(e.value)
    assert capfd.readouterr().err == ""  # the probe is quiet


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="this machine has a camera")
def test_list_cameras_is_empty_and_fast_without_cameras():
    t = time.monotonic()
    assert list_cameras() == []
    assert time.monotonic() - t < 1.0


class _DyingCamera:
    """Delivers a few frames, then nothing, like an unplugged USB camera."""

    def __init__(self, *args, **kwargs):
        self.n = 0

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        self.n += 1
        if self.n <= 3:
            return True, np.full((6, 8, 3), self.n, np.uint8)
        return False, None

    def release(self):
        pass


def test_camera_that_stops_delivering_raises(monkeypatch):
    import engine.capture as capture

    monkeypatch.setattr(capture, "_camera_may_exist", lambda index: True)
    monkeypatch.setattr(capture.cv2, "VideoCapture", _DyingCamera)
    cam = WebcamSource(0)
    with cam:
        frames = [cam.read() for _ in range(3)]
        assert [f.index for f in frames] == [0, 1, 2]
        assert frames[0].t <= frames[1].t <= frames[2].t and cam.native_fps == 30.0
        with pytest.raises(SourceError, match=r"^The camera stopped delivering frames \(unplugged\?\)\.$"):
            cam.read()


# -- the screen ----------------------------------------------------------------------------------


def test_no_display_gives_a_clear_error(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the no-display case is specific to X11")
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(SourceError, match=r"^No screen to capture \(no display\)\.$"):
        ScreenSource().open()
    assert list_monitors() == []


def test_region_clamping():
    mon = {"left": 100, "top": 0, "width": 640, "height": 480}
    assert clamp_region(mon, None) == {"left": 100, "top": 0, "width": 640, "height": 480}
    assert clamp_region(mon, (600, 400, 100, 100)) == {"left": 700, "top": 400, "width": 40, "height": 80}
    assert clamp_region(mon, (-10, -20, 50, 50)) == {"left": 100, "top": 0, "width": 40, "height": 30}
    with pytest.raises(SourceError, match="outside monitor 1"):
        clamp_region(mon, (700, 0, 10, 10))
    with pytest.raises(SourceError, match="empty"):
        clamp_region(mon, (0, 0, 0, 10))


@pytest.fixture
def xvfb(monkeypatch):
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb) - cannot test real screen capture")
    r, w = os.pipe()
    proc = subprocess.Popen(
        # -noreset: by default Xvfb resets when its last client leaves, and a connection made during
        # the reset fails (seen on a loaded machine).
        [exe, "-displayfd", str(w), "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    try:
        number = b""
        deadline = time.monotonic() + 10
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            chunk = os.read(r, 16)
            if not chunk:
                break
            number += chunk
        if not number.strip():
            pytest.skip("Xvfb did not start")
        monkeypatch.setenv("DISPLAY", f":{int(number)}")
        yield
    finally:
        os.close(r)
        proc.terminate()
        proc.wait(10)


def test_screen_capture_under_xvfb(xvfb):
    monitors = list_monitors()
    assert len(monitors) >= 1 and (monitors[0].width, monitors[0].height) == (640, 480)
    with ScreenSource(fps=20) as src:
        a, b = src.read(), src.read()
    assert a is not None and a.image.shape == (480, 640, 3) and a.image.dtype == np.uint8
    assert b is not None and b.index == 1 and b.t >= 0.05 - 0.005  # paced: deadline k/fps after open
    with ScreenSource(region=(600, 400, 100, 100)) as src:
        assert src.read().image.shape == (80, 40, 3)  # clamped to the monitor
    with pytest.raises(SourceError, match="outside monitor 1"):
        ScreenSource(region=(700, 500, 10, 10)).open()
    with pytest.raises(SourceError, match=r"Monitor 5 does not exist \(monitors: 1\)"):
        ScreenSource(monitor=5).open()


def test_screen_capture_is_created_in_the_reading_thread(xvfb):
    src = ScreenSource(fps=30)
    src.open()
    got: list[Frame | None | BaseException] = []

    def read():
        try:
            got.append(src.read())
        except BaseException as e:  # shown by the assertion below
            got.append(e)

    th = threading.Thread(target=read)
    th.start()
    th.join(10)
    read()  # and in this thread too: each thread gets its own capture
    src.close()
    assert len(got) == 2 and all(isinstance(f, Frame) and f.image.shape == (480, 640, 3) for f in got), got


# -- choosing a source ---------------------------------------------------------------------------


def test_open_source_specs(tmp_path, monkeypatch):
    cam = open_source("webcam:2")
    assert isinstance(cam, WebcamSource) and cam.index == 2
    assert open_source("webcam").index == 0
    scr = open_source("screen:1:10,20,300,200")
    assert isinstance(scr, ScreenSource) and scr.monitor == 1 and scr.region == (10, 20, 300, 200)
    assert open_source("screen").monitor == 1
    syn = open_source("synthetic:3", realtime=False)
    assert len(read_all(syn)) == 3
    vid = open_source(str(tmp_path / "x.mp4"))
    assert isinstance(vid, VideoFileSource) and vid.realtime
    for bad in ("webcam:x", "screen:1:1,2,3", "screen:a", ""):
        with pytest.raises(SourceError):
            open_source(bad)


def test_demo_source(monkeypatch, tmp_path):
    missing = tmp_path / "assets" / "demo.mp4"
    monkeypatch.setattr(sources, "demo_video_path", lambda: missing)
    with pytest.raises(SourceError, match="demo video is missing"):
        open_source("demo")
    missing.parent.mkdir()
    write_video(missing, [np.zeros((8, 8, 3), np.uint8)] * 2)
    src = open_source("demo", realtime=False)
    assert isinstance(src, VideoFileSource) and len(read_all(src)) == 2
    assert sources.demo_video_path is not None
