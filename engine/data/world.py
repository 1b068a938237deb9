"""The procedural video world: shapes that enter, move, collide, change colour, stop and leave over a
textured, noisy background with a digit display, rendered at any frame size.

Owns the scenario sampler (one seeded `numpy.random.Generator`, nothing global), the frame-by-frame
simulation (the world state is defined per frame, scripted events happen on whole seconds) and the
renderer. It knows nothing of sentences, questions or the token protocol: captions.py turns states
and events into text, synth.py turns them into training records.

Coordinates: x, y in [0, 1], (0, 0) is the top left, y grows downwards. Object sizes are fractions of
min(H, W), so a shape keeps its aspect at 64x64, 560x560 or 1280x720. An object is on screen (in
the state, and drawn) exactly when its centre is inside the frame; that one rule keeps the state,
the pixels and the captions in agreement.

    python -m engine.data.world            # render-speed benchmark, one core
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.data import render as R
from engine.data.render import display_rects, draw_display, draw_shape, render_background

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {  # RGB; saturated or extreme so that each stays distinct over the muted backgrounds
    "red": (225, 35, 35),
    "green": (40, 190, 70),
    "blue": (40, 90, 235),
    "yellow": (245, 225, 40),
    "purple": (150, 60, 210),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 225, 230),
    "black": (20, 20, 20),
}
SIZES = {"small": 0.09, "medium": 0.12, "large": 0.155}  # half-extent, fraction of min(H, W)
EDGES = ("left", "right", "top", "bottom")
_LED = ((255, 70, 50), (70, 255, 110), (255, 190, 40), (235, 235, 235))  # lit segment colours
_UNLIT = (34, 34, 34)  # faintly visible, like a real LED panel, but far from any lit colour


@dataclass(frozen=True)
class WorldConfig:
    """How scenarios are sampled. Stored in record metadata, so keep every field a plain scalar."""

    fps: float = 1.0  # frames per second of the video (the model sees 1)
    min_duration_s: int = 16
    max_duration_s: int = 40
    max_objects: int = 4  # on screen at once
    p_display: float = 0.85  # chance that a video has a digit display
    p_display_change: float = 0.12  # per second
    jitter: float = 0.015  # camera shake, largest shift as a fraction of min(H, W)
    noise_min: float = 3.0  # sensor noise std in grey levels, sampled per video
    noise_max: float = 9.0
    substep_s: float = 0.25  # physics step: small enough that objects rarely pass through each other


@dataclass(frozen=True)
class ObjectState:
    """One object on one frame."""

    oid: int  # stable id within the video
    shape: str
    colour: str
    size: str
    x: float  # centre, normalised
    y: float
    moving: bool


@dataclass(frozen=True)
class FrameState:
    """Everything on screen at one frame."""

    index: int
    t: float  # seconds
    objects: tuple[ObjectState, ...]  # sorted by oid
    display: int | None  # value shown, None when the video has no display


@dataclass(frozen=True)
class WorldEvent:
    """Something that happened, first visible on `frame`.

    kind: enter (edge), appear, leave (edge), vanish, collide (two objects), colour (old_colour ->
    colour), stop, start, display (value). `objects` are the involved objects as they were just
    before the event (for colour: still the old colour; for leave/vanish: the last visible state).
    """

    frame: int
    t: float
    kind: str
    objects: tuple[ObjectState, ...] = ()
    edge: str = ""
    colour: str = ""
    old_colour: str = ""
    value: int | None = None

    @property
    def oids(self) -> tuple[int, ...]:
        return tuple(o.oid for o in self.objects)


@dataclass(frozen=True)
class Display:
    """A seven-segment display in one corner; its box is also an obstacle for the objects."""

    corner: str  # "top left", "top right", "bottom left", "bottom right"
    n_digits: int
    led: tuple[int, int, int]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in a square frame (physics uses it)


@dataclass(frozen=True, eq=False)
class Background:
    kind: str  # blobs, stripes, checker, gradient
    base: tuple[float, float, float]
    tint: tuple[float, float, float]
    amp: float
    angle: float
    period: float
    grid: np.ndarray = field(repr=False)  # (6, 6, 3) low-frequency texture in [-1, 1]


@dataclass
class _Body:
    """Mutable simulation state of one object; never leaves this module."""

    oid: int
    shape: str
    size: str
    colour: str
    x: float
    y: float
    vx: float
    vy: float
    born: int
    stopped: bool = False
    leaving: bool = False

    @property
    def r(self) -> float:
        return SIZES[self.size] * 0.9  # collision radius, a little inside the drawn extent

    def state(self) -> ObjectState:
        return ObjectState(self.oid, self.shape, self.colour, self.size, self.x, self.y, not self.stopped)


@dataclass(frozen=True, eq=False)
class Video:
    """A sampled world video: per-frame states, events and what the renderer needs."""

    seed: int
    duration_s: int
    config: WorldConfig
    states: tuple[FrameState, ...]
    events: tuple[WorldEvent, ...]
    display: Display | None
    background: Background
    noise_std: float
    jitter: np.ndarray = field(repr=False)  # (F, 2) camera shift per frame, fraction of min(H, W)
    noise_offsets: np.ndarray = field(repr=False)  # (F, 2) where each frame reads the noise bank
    _cache: dict = field(default_factory=dict, repr=False)  # per frame size: background, noise

    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def n_frames(self) -> int:
        return len(self.states)

    @property
    def path(self) -> str:
        """The relative file name that `write_video` and the records use for this video."""
        return f"world_{self.seed:06d}.mp4"

    def index_at(self, t: float) -> int:
        return min(self.n_frames - 1, max(0, int(round(t * self.fps))))

    def render(self, t_or_index: int | float, size: int | tuple[int, int] = (64, 64)) -> np.ndarray:
        """One frame as uint8 RGB (H, W, 3). An int is a frame index, a float a time in seconds."""
        i = t_or_index if isinstance(t_or_index, int | np.integer) else self.index_at(float(t_or_index))
        H, W = (size, size) if isinstance(size, int) else size
        c = self._size_cache(H, W)
        s = min(H, W)
        dx, dy = (np.round(self.jitter[i] * s)).astype(int)
        m = c["margin"]
        img = c["bg"][m + dy : m + dy + H, m + dx : m + dx + W].copy()
        st = self.states[i]
        for o in st.objects:
            draw_shape(img, o.shape, o.x * W + dx, o.y * H + dy, SIZES[o.size] * s, COLOURS[o.colour])
        if self.display is not None and st.display is not None:
            draw_display(img, c, self.display, st.display, 16 * dx, 16 * dy)
        ox, oy = self.noise_offsets[i]
        # Saturating uint8 add/subtract of a precomputed noise bank: ~20x cheaper than drawing fresh
        # Gaussian noise per frame, and still different on every frame.
        cv2.add(img, c["npos"][oy : oy + H, ox : ox + W], dst=img)
        cv2.subtract(img, c["nneg"][oy : oy + H, ox : ox + W], dst=img)
        return img

    def frames(self, size: int | tuple[int, int] = (64, 64), n: int | None = None) -> np.ndarray:
        """The first n (default all) frames, (F, H, W, 3) uint8 RGB."""
        n = self.n_frames if n is None else min(n, self.n_frames)
        return np.stack([self.render(i, size) for i in range(n)])

    def _size_cache(self, H: int, W: int) -> dict:
        c = self._cache.get((H, W))
        if c is None:
            s = min(H, W)
            margin = int(math.ceil(self.config.jitter * s)) + 1
            rng = np.random.default_rng([self.seed, H, W, 1])
            noise = rng.normal(0.0, self.noise_std, (H + _NOISE_PAD, W + _NOISE_PAD, 3))
            c = {
                "margin": margin,
                "bg": render_background(self.background, H, W, margin),
                "npos": np.clip(noise, 0, 255).astype(np.uint8),
                "nneg": np.clip(-noise, 0, 255).astype(np.uint8),
            }
            if self.display is not None:
                c["panel"], c["digits"] = display_rects(self.display, H, W)
                # Below ~128 px a dim unlit segment is one grey pixel that blurs the digit: hide it.
                c["unlit"] = _UNLIT if s >= 128 else (16, 16, 16)
            if len(self._cache) > 8:  # a video is rendered at few sizes; bound it anyway
                self._cache.clear()
            self._cache[(H, W)] = c
        return c


_NOISE_PAD = 16


# ---------------------------------------------------------------------------------------------
# Sampling and simulation


def make_video(seed: int, duration_s: int | None = None, config: WorldConfig = WorldConfig()) -> Video:
    """Sample and simulate one video. Same (seed, duration_s, config) -> same video, always.

    The last few videos are kept: a training sample simulates its video once to plan the questions
    and again to render the frames (half of a data worker's time before). A Video is read-only."""
    if duration_s is None:  # the first draw of the video's stream, as _simulate draws it
        duration_s = int(
            np.random.default_rng(seed).integers(config.min_duration_s, config.max_duration_s + 1)
        )
    return _simulate(int(seed), int(duration_s), config)


@functools.lru_cache(maxsize=4)
def _simulate(seed: int, duration_s: int, config: WorldConfig) -> Video:
    rng = np.random.default_rng(seed)
    rng.integers(config.min_duration_s, config.max_duration_s + 1)  # the duration draw (make_video)
    duration = duration_s
    n = max(1, int(round(duration * config.fps)))
    display = _sample_display(rng) if rng.random() < config.p_display else None
    value, mode = None, "up"
    if display is not None:
        value = int(rng.integers(0, 10**display.n_digits))
        mode = str(rng.choice(["up", "down", "jump"], p=[0.45, 0.25, 0.3]))
    background = _sample_background(rng)
    noise_std = float(rng.uniform(config.noise_min, config.noise_max))
    # Per-frame camera randomness has its own stream, so a shorter video is a prefix of a longer one.
    camera = np.random.default_rng([seed, 2])
    jitter = camera.uniform(-config.jitter, config.jitter, (n, 2))
    noise_offsets = camera.integers(0, _NOISE_PAD, (n, 2))

    bodies: list[_Body] = []
    events: list[WorldEvent] = []
    states: list[FrameState] = []
    last_hit: dict[tuple[int, int], int] = {}
    next_id = 0
    for _ in range(int(rng.choice(4, p=[0.15, 0.35, 0.35, 0.15]))):
        b = _spawn(rng, bodies, next_id, 0, "appear", display)
        if b is not None:
            bodies.append(b)
            next_id += 1
    last_second = 0
    for k in range(n):
        t = k / config.fps
        if k > 0:
            _advance(bodies, 1.0 / config.fps, config.substep_s, k, t, display, events, last_hit)
        second = int(math.floor(t + 1e-9))
        if second != last_second:  # scripted changes happen on whole seconds only
            last_second = second
            next_id = _script_second(rng, config, bodies, next_id, k, t, display, events)
            if display is not None and rng.random() < config.p_display_change:
                value = _next_value(rng, value, mode, display.n_digits)
                events.append(WorldEvent(k, t, "display", value=value))
        objs = tuple(b.state() for b in sorted(bodies, key=lambda b: b.oid))
        states.append(FrameState(k, t, objs, value))
    return Video(
        seed,
        duration,
        config,
        tuple(states),
        tuple(events),
        display,
        background,
        noise_std,
        jitter,
        noise_offsets,
    )


def _sample_display(rng: np.random.Generator) -> Display:
    corner = str(rng.choice(["top left", "top right", "bottom left", "bottom right"]))
    n_digits = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    w = 2 * R.PAD + n_digits * R.DIGIT_W + (n_digits - 1) * R.GAP
    h = 2 * R.PAD + R.DIGIT_H
    x0 = R.MARGIN if "left" in corner else 1 - R.MARGIN - w
    y0 = R.MARGIN if "top" in corner else 1 - R.MARGIN - h
    led = _LED[int(rng.integers(len(_LED)))]
    return Display(corner, n_digits, led, (x0, y0, x0 + w, y0 + h))


def _next_value(rng: np.random.Generator, value: int, mode: str, n_digits: int) -> int:
    top = 10**n_digits
    if mode == "up":
        return (value + 1) % top
    if mode == "down":
        return (value - 1) % top
    return int((value + rng.integers(1, top)) % top) if top > 1 else value  # never the same value


def _sample_background(rng: np.random.Generator) -> Background:
    hue = rng.uniform(0, 1)
    sat, val = rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.6)  # muted: every palette colour stands out
    base = _hsv_to_rgb(hue, sat, val)
    tint = _hsv_to_rgb((hue + rng.uniform(0.3, 0.7)) % 1, 0.5, 1.0)
    kind = str(rng.choice(["blobs", "stripes", "checker", "gradient"]))
    return Background(
        kind,
        base,
        tuple(c / 255 for c in tint),
        float(rng.uniform(10, 28)),
        float(rng.uniform(0, math.pi)),
        float(rng.uniform(0.06, 0.2)),
        rng.uniform(-1, 1, (6, 6, 3)).astype(np.float32),
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (255 * r, 255 * g, 255 * b)


def _blocked(display: Display | None, x: float, y: float, r: float) -> bool:
    if display is None:
        return False
    x0, y0, x1, y1 = display.box
    return x0 - r < x < x1 + r and y0 - r < y < y1 + r


def _pick_look(rng: np.random.Generator, bodies: list[_Body]) -> tuple[str, str]:
    """Colour and shape of a newcomer. Half the time it shares one attribute with an object already on
    screen (a decoy for attribute binding); it never duplicates both, so "the red circle" stays unique."""
    taken = {(b.colour, b.shape) for b in bodies}
    for _ in range(30):
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        if bodies and rng.random() < 0.5:
            other = bodies[int(rng.integers(len(bodies)))]
            if rng.random() < 0.5:
                colour = other.colour
            else:
                shape = other.shape
        if (colour, shape) not in taken:
            return colour, shape
    return colour, shape  # practically unreachable with 9 x 5 looks and <= 4 objects


def _spawn(rng, bodies: list[_Body], oid: int, k: int, mode: str, display: Display | None) -> _Body | None:
    colour, shape = _pick_look(rng, bodies)
    if (colour, shape) in {(b.colour, b.shape) for b in bodies}:
        return None
    size = str(rng.choice(list(SIZES)))
    r = SIZES[size] * 0.9
    for _ in range(20):
        if mode == "appear":
            x, y = rng.uniform(r + 0.02, 1 - r - 0.02, 2)
            speed, a = rng.uniform(0.04, 0.14), rng.uniform(0, 2 * math.pi)
            if rng.random() < 0.25:
                speed = 0.0
            vx, vy = speed * math.cos(a), speed * math.sin(a)
        else:
            edge = mode.split(":")[1]
            u = rng.uniform(r + 0.02, 1 - r - 0.02)
            inward, side = rng.uniform(0.08, 0.16), rng.uniform(-0.06, 0.06)
            x, y, vx, vy = {
                "left": (0.02, u, inward, side),
                "right": (0.98, u, -inward, side),
                "top": (u, 0.02, side, inward),
                "bottom": (u, 0.98, side, -inward),
            }[edge]
        if _blocked(display, x, y, r + 0.02):
            continue
        if any(math.hypot(b.x - x, b.y - y) < b.r + r + 0.03 for b in bodies):
            continue
        return _Body(oid, shape, size, colour, float(x), float(y), vx, vy, k, stopped=(vx == 0 and vy == 0))
    return None


def _script_second(rng, cfg: WorldConfig, bodies, next_id, k, t, display, events) -> int:
    """At most one scripted object change per second, so each event is visible on its own frame."""
    n = len(bodies)
    options: list[tuple[str, _Body | None]] = [("none", None)]
    weights = [0.55]
    if n < cfg.max_objects:
        options.append(("spawn", None))
        weights.append((0.6, 0.35, 0.22, 0.12, 0.08)[min(n, 4)])
    for b in bodies:
        if b.leaving or (k - b.born) / cfg.fps < 2:
            continue
        options += [("leave", b), ("colour", b), ("start" if b.stopped else "stop", b)]
        weights += [0.035, 0.03, 0.05 if b.stopped else 0.03]
    p = np.asarray(weights) / sum(weights)
    action, b = options[int(rng.choice(len(options), p=p))]
    if action == "spawn":
        mode = "appear" if rng.random() < 0.3 else "enter:" + str(rng.choice(EDGES))
        nb = _spawn(rng, bodies, next_id, k, mode, display)
        if nb is not None:
            bodies.append(nb)
            kind, edge = ("appear", "") if mode == "appear" else ("enter", mode.split(":")[1])
            events.append(WorldEvent(k, t, kind, (nb.state(),), edge=edge))
            return next_id + 1
    elif action == "leave":
        if rng.random() < 0.3:
            bodies.remove(b)
            events.append(WorldEvent(k, t, "vanish", (b.state(),)))
        else:
            _start_leaving(rng, b, display)
    elif action == "colour":
        taken = {(o.colour, o.shape) for o in bodies}
        choices = [c for c in COLOURS if c != b.colour and (c, b.shape) not in taken]
        new = str(rng.choice(choices))
        events.append(WorldEvent(k, t, "colour", (b.state(),), colour=new, old_colour=b.colour))
        b.colour = new
    elif action in ("stop", "start"):
        if action == "stop":
            b.vx = b.vy = 0.0
        else:
            a = rng.uniform(0, 2 * math.pi)
            speed = rng.uniform(0.06, 0.14)
            b.vx, b.vy = speed * math.cos(a), speed * math.sin(a)
        b.stopped = action == "stop"
        events.append(WorldEvent(k, t, action, (b.state(),)))
    return next_id


def _start_leaving(rng, b: _Body, display: Display | None) -> None:
    """Head for the nearest edge whose straight path does not cross the display."""
    dist = {"left": b.x, "right": 1 - b.x, "top": b.y, "bottom": 1 - b.y}
    for edge in sorted(dist, key=dist.get):
        if display is not None:
            x0, y0, x1, y1 = display.box
            lo, hi = {"left": (0, b.x), "right": (b.x, 1), "top": (0, b.y), "bottom": (b.y, 1)}[edge]
            if edge in ("left", "right"):
                hit = y0 - b.r < b.y < y1 + b.r and lo < x1 and x0 < hi
            else:
                hit = x0 - b.r < b.x < x1 + b.r and lo < y1 and y0 < hi
            if hit:
                continue
        speed = rng.uniform(0.25, 0.4)
        b.vx, b.vy = {"left": (-speed, 0), "right": (speed, 0), "top": (0, -speed), "bottom": (0, speed)}[
            edge
        ]
        b.leaving, b.stopped = True, False
        return


def _advance(bodies, dt, substep, k, t, display, events, last_hit) -> None:
    """Move everything from frame k-1 to frame k; collisions and exits are reported at frame k."""
    m = max(1, int(math.ceil(dt / substep - 1e-9)))
    h = dt / m
    hits: set[tuple[int, int]] = set()
    before = {b.oid: b.state() for b in bodies}
    for _ in range(m):
        for b in bodies:
            b.x += b.vx * h
            b.y += b.vy * h
        for b in bodies:
            if b.leaving:
                continue
            if (b.x - b.r < 0 and b.vx < 0) or (b.x + b.r > 1 and b.vx > 0):
                b.vx = -b.vx
            if (b.y - b.r < 0 and b.vy < 0) or (b.y + b.r > 1 and b.vy > 0):
                b.vy = -b.vy
            _bounce_off_display(b, display)
            b.x, b.y = min(max(b.x, 0.01), 0.99), min(max(b.y, 0.01), 0.99)  # never drift off screen
        solid = [b for b in bodies if not b.leaving]
        for i, p in enumerate(solid):
            for q in solid[i + 1 :]:
                if _collide(p, q):
                    hits.add((p.oid, q.oid))
    for b in [b for b in bodies if b.leaving and not (0 <= b.x <= 1 and 0 <= b.y <= 1)]:
        edge = "left" if b.x < 0 else "right" if b.x > 1 else "top" if b.y < 0 else "bottom"
        bodies.remove(b)
        events.append(WorldEvent(k, t, "leave", (before[b.oid],), edge=edge))
    for pair in sorted(hits):
        if last_hit.get(pair, -10) < k - 1:  # one event per contact, not one per frame of overlap
            events.append(WorldEvent(k, t, "collide", (before[pair[0]], before[pair[1]])))
        last_hit[pair] = k


def _collide(p: _Body, q: _Body) -> bool:
    """Resolve contact between two objects; True when they hit each other (a collision event).
    A stopped object is immovable: the other bounces off it."""
    dx, dy = q.x - p.x, q.y - p.y
    d = math.hypot(dx, dy)
    if d >= p.r + q.r or (p.stopped and q.stopped):
        return False
    nx, ny = (dx / d, dy / d) if d > 1e-9 else (1.0, 0.0)
    closing = (p.vx - q.vx) * nx + (p.vy - q.vy) * ny  # speed at which they approach each other
    approach = closing > 0
    if approach:
        pn, qn = p.vx * nx + p.vy * ny, q.vx * nx + q.vy * ny
        if p.stopped:
            q.vx, q.vy = q.vx - 2 * qn * nx, q.vy - 2 * qn * ny
        elif q.stopped:
            p.vx, p.vy = p.vx - 2 * pn * nx, p.vy - 2 * pn * ny
        else:  # equal masses: swap the normal components
            p.vx, p.vy = p.vx + (qn - pn) * nx, p.vy + (qn - pn) * ny
            q.vx, q.vy = q.vx + (pn - qn) * nx, q.vy + (pn - qn) * ny
    overlap = p.r + q.r - d
    wp = 0.0 if p.stopped else (1.0 if q.stopped else 0.5)
    p.x, p.y = p.x - nx * overlap * wp, p.y - ny * overlap * wp
    q.x, q.y = q.x + nx * overlap * (1 - wp), q.y + ny * overlap * (1 - wp)
    return closing > 0.03  # a graze or a push while resting against each other is not an event


def _bounce_off_display(b: _Body, display: Display | None) -> None:
    if display is None:
        return
    x0, y0, x1, y1 = display.box
    cx, cy = min(max(b.x, x0), x1), min(max(b.y, y0), y1)  # nearest point of the box
    dx, dy = b.x - cx, b.y - cy
    if dx * dx + dy * dy >= b.r * b.r:
        return
    if abs(dx) >= abs(dy):  # push out along the axis of least penetration
        side = 1.0 if dx > 0 or (dx == 0 and b.x > (x0 + x1) / 2) else -1.0
        b.x = (x1 if side > 0 else x0) + side * b.r
        b.vx = side * abs(b.vx)
    else:
        side = 1.0 if dy > 0 or (dy == 0 and b.y > (y0 + y1) / 2) else -1.0
        b.y = (y1 if side > 0 else y0) + side * b.r
        b.vy = side * abs(b.vy)


def bench(sizes=((64, 64), (224, 224), (560, 560), (720, 1280)), n_videos: int = 12) -> None:
    """Frames per second on one core: cold (simulation + per-size setup + render) and warm (render)."""
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    videos = [make_video(seed) for seed in range(n_videos)]
    sim = (time.perf_counter() - t0) / n_videos
    n = sum(v.n_frames for v in videos)
    print(f"simulation: {sim * 1e3:.2f} ms per video ({n / n_videos:.1f} frames)")
    for H, W in sizes:
        t0 = time.perf_counter()
        for v in videos:
            for i in range(v.n_frames):
                v.render(i, (H, W))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for v in videos:
            for i in range(v.n_frames):
                v.render(i, (H, W))
        warm = time.perf_counter() - t0
        print(
            f"{H}x{W}: warm {n / warm:8.0f} frames/s ({warm / n * 1e6:7.1f} us/frame), "
            f"first pass incl. per-video setup {n / cold:8.0f} frames/s"
        )


if __name__ == "__main__":
    bench()
