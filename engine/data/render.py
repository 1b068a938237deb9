"""Drawing the procedural world (engine.data.world): the textured background, the shapes, the
seven-segment display; and writing a world video as an mp4. Sizes are in units of min(H, W) and
coordinates carry 4 fractional bits, so a frame looks the same at 64x64 and 1280x720. It takes
world.Background, world.Display and world.Video values and imports nothing of the world.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Display geometry in units of min(H, W).
DIGIT_W, DIGIT_H, STROKE, GAP, PAD, MARGIN = 0.08, 0.15, 0.026, 0.022, 0.022, 0.03
_SEGMENTS = {  # which of the segments a..g are lit
    0: "abcdef", 1: "bc", 2: "abged", 3: "abgcd", 4: "fgbc",
    5: "afgcd", 6: "afgedc", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}  # fmt: skip


def _unit_polygons() -> dict[str, np.ndarray]:
    """Shapes as polygons of unit half-extent; areas roughly matched so size reads the same."""
    polys = {"square": np.array([[-0.78, -0.78], [0.78, -0.78], [0.78, 0.78], [-0.78, 0.78]])}
    a = np.deg2rad([-90, 30, 150])
    polys["triangle"] = np.stack([1.08 * np.cos(a), 1.08 * np.sin(a) + 0.12], 1)
    a = np.deg2rad(np.arange(10) * 36 - 90)
    rad = np.where(np.arange(10) % 2 == 0, 1.08, 0.46)
    polys["star"] = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
    w, l = 0.32, 0.92
    polys["cross"] = np.array(
        [
            [-w, -l],
            [w, -l],
            [w, -w],
            [l, -w],
            [l, w],
            [w, w],
            [w, l],
            [-w, l],
            [-w, w],
            [-l, w],
            [-l, -w],
            [-w, -w],
        ]
    )
    return {k: v.astype(np.float32) for k, v in polys.items()}


_POLYS = _unit_polygons()
_CIRCLE_R = 0.9


def render_background(bg, H: int, W: int, margin: int) -> np.ndarray:
    """The textured background with a margin for camera shake; defined in units of min(H, W) so it
    looks the same at every size."""
    s = min(H, W)
    h, w = H + 2 * margin, W + 2 * margin
    x = ((np.arange(w, dtype=np.float32) - margin) / s)[None, :]
    y = ((np.arange(h, dtype=np.float32) - margin) / s)[:, None]
    blobs = cv2.resize(bg.grid, (w, h), interpolation=cv2.INTER_CUBIC)  # (h, w, 3)
    u = x * math.cos(bg.angle) + y * math.sin(bg.angle)
    if bg.kind == "stripes":
        pattern = np.sin(2 * math.pi * u / bg.period)
    elif bg.kind == "checker":
        pattern = ((np.floor(x / bg.period) + np.floor(y / bg.period)) % 2) * 2 - 1
    elif bg.kind == "gradient":
        pattern = np.clip(u - 0.5, -1, 1) * 1.5
    else:
        pattern = np.zeros((h, w), np.float32)
    img = np.asarray(bg.base, np.float32) + 0.6 * bg.amp * blobs
    img = img + bg.amp * pattern[..., None] * (0.5 + 0.5 * np.asarray(bg.tint, np.float32))
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, r: float, colour) -> None:
    # Coordinates carry 4 fractional bits (shift=4): sub-pixel motion stays visible at 64x64.
    if shape == "circle":
        centre = (int(round(cx * 16)), int(round(cy * 16)))
        cv2.circle(img, centre, int(round(_CIRCLE_R * r * 16)), colour, -1, cv2.LINE_AA, 4)
        return
    pts = (_POLYS[shape] * (r * 16) + (cx * 16, cy * 16)).astype(np.int32)
    cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, 4)


def display_rects(d, H: int, W: int) -> tuple[tuple, list[dict[str, tuple]]]:
    """Panel and segment rectangles in 1/16 pixel, computed once per frame size."""
    s = min(H, W)
    w = (2 * PAD + d.n_digits * DIGIT_W + (d.n_digits - 1) * GAP) * s
    h = (2 * PAD + DIGIT_H) * s
    x0 = MARGIN * W if "left" in d.corner else W - MARGIN * W - w
    y0 = MARGIN * H if "top" in d.corner else H - MARGIN * H - h

    def r16(a, b, c, e):
        return (int(a * 16), int(b * 16)), (int(c * 16), int(e * 16))

    dw, dh, th = DIGIT_W * s, DIGIT_H * s, max(STROKE * s, 1.0)
    digits = []
    for i in range(d.n_digits):
        x = x0 + (PAD + i * (DIGIT_W + GAP)) * s
        y = y0 + PAD * s
        digits.append(
            {
                "a": r16(x + th, y, x + dw - th, y + th),
                "b": r16(x + dw - th, y + th, x + dw, y + dh / 2),
                "c": r16(x + dw - th, y + dh / 2, x + dw, y + dh - th),
                "d": r16(x + th, y + dh - th, x + dw - th, y + dh),
                "e": r16(x, y + dh / 2, x + th, y + dh - th),
                "f": r16(x, y + th, x + th, y + dh / 2),
                "g": r16(x + th, y + dh / 2 - th / 2, x + dw - th, y + dh / 2 + th / 2),
            }
        )
    return r16(x0, y0, x0 + w, y0 + h), digits


def draw_display(img, cache: dict, d, value: int, ox: int, oy: int) -> None:
    (a, b), (c, e) = cache["panel"]
    cv2.rectangle(img, (a + ox, b + oy), (c + ox, e + oy), (16, 16, 16), -1, cv2.LINE_8, 4)
    cv2.rectangle(img, (a + ox, b + oy), (c + ox, e + oy), (110, 110, 110), 1, cv2.LINE_8, 4)
    text = str(value).rjust(d.n_digits)  # right-aligned, no leading zeros
    for ch, segs in zip(text, cache["digits"], strict=True):
        lit = _SEGMENTS[int(ch)] if ch != " " else ""
        for name, ((p, q), (u, v)) in segs.items():
            colour = d.led if name in lit else cache["unlit"]
            cv2.rectangle(img, (p + ox, q + oy), (u + ox, v + oy), colour, -1, cv2.LINE_8, 4)


def write_video(video, path: str, size: int | tuple[int, int] = (360, 640), fps: float | None = None) -> None:
    """Write the video as an mp4 ('mp4v'), for the demo and for file-based loaders."""
    H, W = (size, size) if isinstance(size, int) else size
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writer = cv2.VideoWriter(str(path), fourcc, float(fps or video.fps), (W, H))
    if not writer.isOpened():
        raise OSError(f"cannot open {path} for writing an mp4 video")
    try:
        for i in range(video.n_frames):
            writer.write(cv2.cvtColor(video.render(i, (H, W)), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
