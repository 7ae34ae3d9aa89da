"""Synthetic camera scenes for the visual scenarios, drawn here with numpy and Pillow.

Why our own renderer: no downloads, exact ground truth (the event happens on a known
frame), and as much variety as a seed can buy. A model must look to succeed: positions,
sizes, colours and backgrounds change per episode, distractors move and change colour
too, and frames carry mild noise and brightness drift.

Every scene returns a `Scene`: uint8 RGB frames [F, size, size, 3] (160 px by default),
their times (`fps` frames per second, 5 by default: one per 200 ms micro-turn, the first
at t = 0) and the exact event times. An event time is always a frame time: the time of
the first frame that shows the event (`snap_to_frame`).

Scenes:
- `traffic_light`: a traffic light (or a single lamp) turns green at the event; a second
  light only ever switches between red and amber.
- `ball_to_goal`: a ball's centre enters a marked goal at the event; other balls never do.
- `tower`: blocks drop onto a tower; the last one (the announced height) lands at the event.
- `repetitions`: an object (stick figure, ball, square, bar) repeats one motion K times,
  per a `RepSchedule`, then stays still.
"""

from __future__ import annotations

import colorsys
import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from microturn.stream.episode import VideoTrack

DEFAULT_SIZE = 160
DEFAULT_FPS = 5.0

Colour = tuple[int, int, int]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1

# Saturated object colours; backgrounds are muted, so objects always stand out.
PALETTE: dict[str, Colour] = {
    "red": (215, 40, 40),
    "orange": (240, 135, 20),
    "yellow": (235, 210, 35),
    "lime": (150, 225, 40),
    "green": (35, 175, 70),
    "cyan": (30, 200, 215),
    "blue": (40, 80, 225),
    "purple": (135, 55, 200),
    "magenta": (220, 50, 175),
    "pink": (250, 140, 175),
    "brown": (135, 85, 35),
    "white": (240, 240, 240),
}
# Lit lamp colours of a traffic light; an unlit lamp is a dark version of its colour.
LAMP: dict[str, Colour] = {"red": (240, 35, 30), "amber": (250, 170, 20), "green": (40, 230, 80)}
LAMP_ORDER = ("red", "amber", "green")
SHAPES = ("circle", "square", "triangle", "diamond")
REP_KINDS: dict[str, tuple[str, str]] = {  # kind -> (verb, axis of motion)
    "figure": ("jump", "y"),
    "ball": ("bounce", "y"),
    "square": ("move", "x"),
    "bar": ("move", "x"),
}
MIN_REP_PERIOD_S = 0.6  # >= 3 frames at 5 fps: every repetition stays countable
MAX_REP_PERIOD_S = 2.0


@dataclass
class Scene:
    """Rendered frames and the ground truth a scorer or a test needs."""

    frames: np.ndarray  # uint8 [F, size, size, 3]
    times_s: np.ndarray  # float64 [F], frame i shown from times_s[i]
    event_times_s: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def track(self) -> VideoTrack:
        return VideoTrack(self.frames, self.times_s)

    def frame_index(self, t: float) -> int:
        """Index of the frame shown at `t` s."""
        return int(np.searchsorted(self.times_s, t + 1e-9, side="right")) - 1


def frame_times(duration_s: float, fps: float = DEFAULT_FPS) -> np.ndarray:
    """Frame times 0, 1/fps, ... up to `duration_s` (the last frame is never after it)."""
    if duration_s <= 0 or fps <= 0:
        raise ValueError(f"duration_s and fps must be positive, got {duration_s}, {fps}")
    return np.arange(math.floor(duration_s * fps + 1e-9) + 1) / fps


def snap_to_frame(t: float, fps: float = DEFAULT_FPS) -> float:
    """The first frame time at or after `t`: when an event at `t` is first seen."""
    return math.ceil(t * fps - 1e-9) / fps


def _check_event(event_s: float, duration_s: float, fps: float) -> None:
    if abs(snap_to_frame(event_s, fps) - event_s) > 1e-9:
        raise ValueError(f"event at {event_s} s is not a frame time; use snap_to_frame()")
    if not 1.0 / fps <= event_s <= duration_s:
        raise ValueError(f"event at {event_s} s must lie in [one frame, {duration_s} s]")


# ---------------------------------------------------------------------------------
# Canvas: background, lighting drift, sensor noise
# ---------------------------------------------------------------------------------


_SENSOR_NOISE = [True]


@contextlib.contextmanager
def without_sensor_noise() -> Iterator[None]:
    """Render noise-free frames (the same scenes otherwise): training shards then compress
    about 8x better, and the trainer adds camera noise back per batch."""
    _SENSOR_NOISE.append(False)
    try:
        yield
    finally:
        _SENSOR_NOISE.pop()


@dataclass
class _Canvas:
    size: int
    times: np.ndarray
    background: np.ndarray  # uint8 [size, size, 3]
    bg_colours: list[Colour]
    brightness: np.ndarray  # per-frame gain
    noise: float  # std of per-pixel noise, in pixel levels
    noise_rng: np.random.Generator

    @property
    def s(self) -> float:
        """Scale of the 160-px design units to this canvas."""
        return self.size / 160.0


def _muted(rng: np.random.Generator, dark: bool) -> Colour:
    value = rng.uniform(0.12, 0.32) if dark else rng.uniform(0.62, 0.88)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.3), value)
    return (round(r * 255), round(g * 255), round(b * 255))


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Colour]]:
    """A muted backdrop: solid, gradient, stripes, checker or a horizon."""
    dark = bool(rng.random() < 0.5)
    a, b = _muted(rng, dark), _muted(rng, dark)
    ca, cb = np.array(a, np.float32), np.array(b, np.float32)
    kind = str(rng.choice(["solid", "gradient", "stripes", "checker", "horizon"]))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "solid":
        w = np.zeros_like(x)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        w = np.cos(angle) * x + np.sin(angle) * y
        w = (w - w.min()) / max(1e-6, float(w.max() - w.min()))
    elif kind == "stripes":
        period = rng.uniform(0.08, 0.3)
        w = ((x if rng.random() < 0.5 else y) // period % 2).astype(np.float32)
    elif kind == "checker":
        period = rng.uniform(0.1, 0.3)
        w = ((x // period + y // period) % 2).astype(np.float32)
    else:
        w = (y > rng.uniform(0.5, 0.8)).astype(np.float32)
    img = ca * (1 - w[..., None]) + cb * w[..., None]
    return np.clip(img, 0, 255).astype(np.uint8), [a, b]


def _canvas(rng: np.random.Generator, duration_s: float, size: int, fps: float) -> _Canvas:
    if size < 40:
        raise ValueError(f"size must be >= 40 px, got {size}")
    times = frame_times(duration_s, fps)
    background, colours = _background(rng, size)
    amp, freq, phase = rng.uniform(0, 0.06), rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
    brightness = 1 + amp * np.sin(2 * np.pi * freq * times + phase)
    brightness += rng.uniform(-0.015, 0.015, times.size)
    noise = float(rng.uniform(0.0, 5.0))  # drawn either way: the scene stays the same
    noise = noise if _SENSOR_NOISE[-1] else 0.0
    noise_rng = np.random.default_rng(int(rng.integers(2**63)))
    return _Canvas(size, times, background, colours, brightness, noise, noise_rng)


def _render(
    canvas: _Canvas, draw_frame: Callable[[ImageDraw.ImageDraw, int, float], None]
) -> np.ndarray:
    """Draw every frame on the background, then apply lighting drift and noise."""
    s = canvas.size
    frames = np.empty((canvas.times.size, s, s, 3), np.uint8)
    for i, t in enumerate(canvas.times):
        img = Image.fromarray(canvas.background.copy())
        draw_frame(ImageDraw.Draw(img), i, float(t))
        arr = np.asarray(img, np.float32) * np.float32(canvas.brightness[i])
        if canvas.noise > 0:
            noise = canvas.noise_rng.standard_normal((s, s, 3), dtype=np.float32)
            arr += noise * np.float32(canvas.noise)
        frames[i] = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
    return frames


# ---------------------------------------------------------------------------------
# Colours, shapes, motion
# ---------------------------------------------------------------------------------


def _distance(a: Colour, b: Colour) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _pick_colour(
    rng: np.random.Generator,
    avoid: list[Colour],
    min_dist: float = 110.0,
    names: tuple[str, ...] | None = None,
) -> Colour:
    """A palette colour at least `min_dist` (RGB) from every colour in `avoid`, where one
    exists; otherwise the most distinct one."""
    names = names or tuple(PALETTE)
    ok = [n for n in names if all(_distance(PALETTE[n], c) >= min_dist for c in avoid)]
    if ok:
        return PALETTE[str(rng.choice(ok))]
    return max((PALETTE[n] for n in names), key=lambda c: min(_distance(c, a) for a in avoid))


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, colour: Colour
) -> None:
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _interp(
    keys_t: list[float], keys_p: list[np.ndarray], times: np.ndarray, ease: bool
) -> np.ndarray:
    """Positions [F, 2] along keyframes; smoothstep easing per segment when `ease`."""
    kt = np.asarray(keys_t, np.float64)
    kp = np.asarray(keys_p, np.float64)
    out = np.empty((times.size, 2))
    for i, t in enumerate(times):
        j = int(np.searchsorted(kt, t, side="right")) - 1
        if j < 0:
            out[i] = kp[0]
        elif j >= kt.size - 1:
            out[i] = kp[-1]
        else:
            u = (t - kt[j]) / (kt[j + 1] - kt[j])
            if ease:
                u = u * u * (3 - 2 * u)
            out[i] = kp[j] + (kp[j + 1] - kp[j]) * u
    return out


def _point_in(rng: np.random.Generator, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([rng.uniform(x0, max(x0, x1)), rng.uniform(y0, max(y0, y1))])


def _wander_keys(
    rng: np.random.Generator, box: Box, speed: float, start: np.ndarray, span_s: float
) -> tuple[list[float], list[np.ndarray]]:
    """Keyframes of a random walk between waypoints in `box` (convex, so the whole path
    stays inside) with occasional rests, covering [0, span_s]."""
    keys_t, keys_p = [0.0], [np.asarray(start, np.float64)]
    t = 0.0
    while t < span_s:
        if rng.random() < 0.25:
            t += rng.uniform(0.3, 1.5)
            keys_t.append(t)
            keys_p.append(keys_p[-1])
        q = _point_in(rng, box)
        t += max(0.3, float(np.linalg.norm(q - keys_p[-1])) / (speed * rng.uniform(0.6, 1.4)))
        keys_t.append(t)
        keys_p.append(q)
    return keys_t, keys_p


@dataclass
class _Prop:
    """A distractor: a shape that wanders and may change colour once."""

    shape: str
    radius: float
    positions: np.ndarray  # [F, 2]
    colour: Colour
    new_colour: Colour | None = None
    change_s: float = math.inf

    def draw(self, draw: ImageDraw.ImageDraw, i: int, t: float) -> None:
        colour = self.new_colour if self.new_colour and t >= self.change_s else self.colour
        x, y = self.positions[i]
        _draw_shape(draw, self.shape, x, y, self.radius, colour)


def _props(
    rng: np.random.Generator,
    canvas: _Canvas,
    n: int,
    box: Box,
    avoid: list[Colour],
    shapes: tuple[str, ...] = SHAPES,
    change_p: float = 0.5,
    change_avoid: list[Colour] | None = None,
) -> list[_Prop]:
    """`n` distractors wandering inside `box` (centres), some changing colour once."""
    s, out = canvas.s, []
    duration = float(canvas.times[-1])
    for _ in range(n):
        r = rng.uniform(4, 9) * s
        inner = (box[0] + r, box[1] + r, box[2] - r, box[3] - r)
        start = _point_in(rng, inner)
        keys_t, keys_p = _wander_keys(rng, inner, rng.uniform(10, 40) * s, start, duration)
        prop = _Prop(
            shape=str(rng.choice(shapes)),
            radius=r,
            positions=_interp(keys_t, keys_p, canvas.times, ease=True),
            colour=_pick_colour(rng, avoid, 80.0),
        )
        if rng.random() < change_p:
            prop.new_colour = _pick_colour(rng, (change_avoid or avoid) + [prop.colour], 80.0)
            prop.change_s = float(rng.uniform(0.5, duration))
        out.append(prop)
    return out


def _place_box(
    rng: np.random.Generator, w: float, h: float, area: Box, taken: list[Box], gap: float
) -> Box:
    """A w x h box inside `area` not overlapping `taken` (plus `gap`); best effort."""
    x0, y0, x1, y1 = area
    best: Box = (x0, y0, x0 + w, y0 + h)
    for _ in range(200):
        bx, by = rng.uniform(x0, max(x0, x1 - w)), rng.uniform(y0, max(y0, y1 - h))
        best = (bx, by, bx + w, by + h)
        if all(
            best[2] + gap <= o[0]
            or o[2] + gap <= best[0]
            or best[3] + gap <= o[1]
            or o[3] + gap <= best[1]
            for o in taken
        ):
            return best
    return best


# ---------------------------------------------------------------------------------
# Scene 1: a traffic light (or a lamp) turns green
# ---------------------------------------------------------------------------------


@dataclass
class _Light:
    box: Box  # housing
    lamps: list[Box]  # one box per lamp; a single-lamp light has one
    changes: list[tuple[float, str]]  # (from time, lit colour), sorted
    single: bool

    def state(self, t: float) -> str:
        lit = self.changes[0][1]
        for at, colour in self.changes:
            if t >= at:
                lit = colour
        return lit

    def draw(self, draw: ImageDraw.ImageDraw, t: float, housing: Colour, pole: Colour) -> None:
        x0, _, x1, y1 = self.box
        cx = (x0 + x1) / 2
        draw.rectangle([cx - 1.5, y1, cx + 1.5, 1e4], fill=pole)
        draw.rounded_rectangle(self.box, radius=3, fill=housing)
        lit = self.state(t)
        if self.single:
            draw.ellipse(self.lamps[0], fill=LAMP[lit])
            return
        for name, lamp in zip(LAMP_ORDER, self.lamps, strict=True):
            on = LAMP[name]
            off = tuple(int(c * 0.22 + 18) for c in on)
            draw.ellipse(lamp, fill=on if name == lit else off)


def _make_light(
    rng: np.random.Generator, s: float, area: Box, taken: list[Box], single: bool
) -> tuple[Box, list[Box]]:
    r = rng.uniform(7, 11) * s if not single else rng.uniform(10, 16) * s
    m = max(2.0, 3 * s)
    vertical = bool(rng.random() < 0.75)
    if single:
        w = h = 2 * r + 2 * m
    elif vertical:
        w, h = 2 * r + 2 * m, 6 * r + 4 * m
    else:
        w, h = 6 * r + 4 * m, 2 * r + 2 * m
    box = _place_box(rng, w, h, area, taken, 6 * s)
    x0, y0 = box[0], box[1]
    if single:
        return box, [(x0 + m, y0 + m, x0 + m + 2 * r, y0 + m + 2 * r)]
    lamps = []
    for k in range(3):
        off = m + k * (2 * r + m)
        lx, ly = (x0 + m, y0 + off) if vertical else (x0 + off, y0 + m)
        lamps.append((lx, ly, lx + 2 * r, ly + 2 * r))
    return box, lamps


def traffic_light(
    rng: np.random.Generator,
    event_s: float,
    duration_s: float,
    *,
    size: int = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
) -> Scene:
    """A traffic light (or a single round lamp, 30 %) shows red or amber and turns green
    at `event_s` (a frame time). A second light (75 %) switches between red and amber
    only; 1-3 shapes wander behind, half of them change colour once (maybe to green)."""
    _check_event(event_s, duration_s, fps)
    canvas = _canvas(rng, duration_s, size, fps)
    s = canvas.s
    area = (4 * s, 4 * s, size - 4 * s, size - 30 * s)
    single = bool(rng.random() < 0.3)
    box, lamps = _make_light(rng, s, area, [], single)
    first = str(rng.choice(["red", "amber"]))
    changes = [(0.0, first)]
    if first == "red" and rng.random() < 0.5 and event_s > 1.0:  # red -> amber -> green
        changes.append((float(rng.uniform(max(0.2, event_s - 3.0), event_s - 0.6)), "amber"))
    changes.append((event_s, "green"))
    target = _Light(box, lamps, changes, single)
    lights = [target]
    if rng.random() < 0.75:
        single2 = single and bool(rng.random() < 0.5)
        box2, lamps2 = _make_light(rng, s, area, [box], single2)
        colour = str(rng.choice(["red", "amber"]))
        changes2, t = [(0.0, colour)], 0.0
        while True:
            t += rng.uniform(1.0, 5.0)
            if t >= duration_s:
                break
            colour = "amber" if colour == "red" else "red"
            changes2.append((t, colour))
        lights.append(_Light(box2, lamps2, changes2, single2))
    housing = (25, 25, 28) if rng.random() < 0.7 else (60, 62, 58)
    pole = (90, 90, 95) if rng.random() < 0.5 else (50, 50, 55)
    props = _props(rng, canvas, int(rng.integers(1, 4)), (0, 0, size, size), canvas.bg_colours)

    def draw_frame(draw: ImageDraw.ImageDraw, i: int, t: float) -> None:
        for p in props:
            p.draw(draw, i, t)
        for light in lights:
            light.draw(draw, t, housing, pole)

    frames = _render(canvas, draw_frame)
    green_box = target.lamps[0] if single else target.lamps[2]
    info = {
        "variant": "lamp" if single else "traffic",
        "target_box": green_box,
        "states": [target.state(float(t)) for t in canvas.times],
        "distractor_light": len(lights) > 1,
    }
    return Scene(frames, canvas.times, (event_s,), info)


# ---------------------------------------------------------------------------------
# Scene 2: a ball reaches the goal
# ---------------------------------------------------------------------------------


def _orient(points: np.ndarray, side: str, size: float) -> np.ndarray:
    """Map canonical coordinates (goal on the right) to the goal on `side`."""
    x, y = points[..., 0], points[..., 1]
    mapped = {
        "right": (x, y),
        "left": (size - x, y),
        "bottom": (y, x),
        "top": (y, size - x),
    }[side]
    return np.stack(mapped, axis=-1)


def ball_to_goal(
    rng: np.random.Generator,
    event_s: float,
    duration_s: float,
    *,
    size: int = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
) -> Scene:
    """A ball wanders the field, then rolls into a goal (a netted box on one edge); its
    centre is first inside the goal on the frame at `event_s` and it rests there after.
    1-3 other balls wander the field and never enter (some come close to the mouth)."""
    _check_event(event_s, duration_s, fps)
    canvas = _canvas(rng, duration_s, size, fps)
    s, fs = canvas.s, float(size)
    r = rng.uniform(6, 10) * s
    gw, gh = rng.uniform(24, 34) * s, rng.uniform(44, 70) * s
    gx0, gx1 = fs - gw - 3 * s, fs - 3 * s
    gy0 = rng.uniform(8 * s, fs - gh - 8 * s)
    gy1 = gy0 + gh
    field = (r + 2 * s, r + 2 * s, gx0 - r - 3 * s, fs - r - 2 * s)
    # Final approach: a straight line A -> G through the goal mouth x = gx0.
    for _ in range(1000):
        g = np.array([rng.uniform(gx0 + r + s, gx1 - r - s), rng.uniform(gy0 + r, gy1 - r)])
        c = np.array([gx0, rng.uniform(gy0 + r, gy1 - r)])
        u = (c - g) / np.linalg.norm(c - g)
        a = np.clip(c + u * rng.uniform(25, 60) * s, field[:2], field[2:])
        cy = a[1] + (g[1] - a[1]) * (gx0 - a[0]) / (g[0] - a[0])
        if gy0 + r / 2 <= cy <= gy1 - r / 2 and a[0] < gx0 - r:
            break
    else:  # pragma: no cover - the first draw almost always fits
        raise RuntimeError("no approach path into the goal")
    cross = np.array([gx0, cy])
    speed = rng.uniform(30, 70) * s
    t_cross = event_s - rng.uniform(0.15, 0.85) / fps  # between the previous frame and the event
    t_a = t_cross - float(np.linalg.norm(cross - a)) / speed
    t_g = t_cross + float(np.linalg.norm(g - cross)) / speed
    approach = _interp([t_a, t_g], [a, g], canvas.times, ease=False)
    back_t, back_p = _wander_keys(rng, field, rng.uniform(20, 50) * s, a, max(0.0, t_a))
    wander = _interp([t_a - bt for bt in back_t][::-1], back_p[::-1], canvas.times, ease=True)
    canon = np.where((canvas.times < t_a)[:, None], wander, approach)
    side = str(rng.choice(["right", "left", "bottom", "top"]))
    positions = _orient(canon, side, fs)
    corners = _orient(np.array([[gx0, gy0], [gx1, gy1]]), side, fs)
    goal = (*corners.min(axis=0), *corners.max(axis=0))
    mouth = _orient(np.array([[gx0, gy0], [gx0, gy1]]), side, fs)

    goal_colour = _pick_colour(rng, canvas.bg_colours, 120.0, ("white", "yellow", "orange"))
    ball_colour = _pick_colour(rng, [*canvas.bg_colours, goal_colour])
    balls = []
    for _ in range(int(rng.integers(1, 4))):
        rd = rng.uniform(6, 10) * s
        box = (rd + 2 * s, rd + 2 * s, gx0 - rd - 3 * s, fs - rd - 2 * s)
        if rng.random() < 0.5:  # a near miss: wander close to the goal mouth
            box = (gx0 - rd - 25 * s, max(gy0, rd + 2 * s), gx0 - rd - 3 * s, min(gy1, fs - rd))
        start = _point_in(rng, box)
        keys_t, keys_p = _wander_keys(rng, box, rng.uniform(15, 45) * s, start, duration_s)
        pos = _orient(_interp(keys_t, keys_p, canvas.times, ease=True), side, fs)
        colour = _pick_colour(rng, [*canvas.bg_colours, goal_colour, ball_colour], 90.0)
        balls.append((pos, rd, colour))
    pitch = (0, 0, size, size)
    props = _props(
        rng,
        canvas,
        int(rng.integers(0, 3)),
        pitch,
        canvas.bg_colours,
        shapes=("square", "triangle", "diamond"),
    )
    net = tuple(int(c * 0.6) for c in goal_colour)
    horizontal = side in ("right", "left")

    def draw_frame(draw: ImageDraw.ImageDraw, i: int, t: float) -> None:
        for p in props:
            p.draw(draw, i, t)
        step = max(3.0, 6 * s)
        lo, hi = (goal[0], goal[2]) if horizontal else (goal[1], goal[3])
        for k in np.arange(lo + step, hi, step):  # net lines across the goal
            line = [k, goal[1], k, goal[3]] if horizontal else [goal[0], k, goal[2], k]
            draw.line(line, fill=net, width=1)
        draw.rectangle(goal, outline=goal_colour, width=max(1, round(2 * s)))
        draw.line(mouth.ravel().tolist(), fill=goal_colour, width=max(2, round(3 * s)))
        for pos, rd, colour in balls:
            _draw_shape(draw, "circle", *pos[i], rd, colour)
        _draw_shape(draw, "circle", *positions[i], r, ball_colour)

    frames = _render(canvas, draw_frame)
    inside = (
        (positions[:, 0] >= goal[0])
        & (positions[:, 0] <= goal[2])
        & (positions[:, 1] >= goal[1])
        & (positions[:, 1] <= goal[3])
    )
    info = {
        "side": side,
        "goal": goal,
        "positions": positions,
        "radius": r,
        "colour": ball_colour,
        "inside": inside,
        "distractors": len(balls),
    }
    return Scene(frames, canvas.times, (event_s,), info)


# ---------------------------------------------------------------------------------
# Scene 3: a tower of blocks is finished
# ---------------------------------------------------------------------------------


@dataclass
class _Tower:
    x: float
    ground: float
    bw: float
    bh: float
    lands: list[float]  # landing time of each block, bottom first
    falls: list[float]  # fall duration of each block
    offsets: list[float]
    colours: list[Colour]

    def height(self, t: float) -> int:
        return sum(t >= land for land in self.lands)

    def draw(self, draw: ImageDraw.ImageDraw, t: float, top_y: float) -> None:
        for k, land in enumerate(self.lands):
            rest = self.ground - (k + 1) * self.bh
            if t >= land:
                y = rest
            elif t >= land - self.falls[k]:
                u = (t - (land - self.falls[k])) / self.falls[k]
                y = top_y + (rest - top_y) * u * u
            else:
                continue
            x0 = self.x - self.bw / 2 + self.offsets[k]
            edge = tuple(int(c * 0.55) for c in self.colours[k])
            draw.rectangle(
                [x0, y, x0 + self.bw, y + self.bh - 1], fill=self.colours[k], outline=edge
            )


def tower(
    rng: np.random.Generator,
    height: int,
    event_s: float,
    duration_s: float,
    *,
    size: int = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
) -> Scene:
    """Blocks drop one by one onto a tower on the floor; block number `height` lands at
    `event_s` (a frame time), 0.7-2.2 s after the one before (the first blocks may
    already stand at t = 0). A second tower (60 %) stops below `height`; shapes wander."""
    _check_event(event_s, duration_s, fps)
    if not 2 <= height <= 10:
        raise ValueError(f"tower height must be 2..10 blocks, got {height}")
    canvas = _canvas(rng, duration_s, size, fps)
    s = canvas.s
    ground = size - rng.uniform(10, 24) * s
    top_y = 2 * s
    bh = min(rng.uniform(10, 16) * s, (ground - 30 * s) / height)
    floor = _pick_colour(rng, canvas.bg_colours, 60.0, ("brown", "white", "orange"))
    floor = tuple(int(c * 0.7) for c in floor)
    left = bool(rng.random() < 0.5)

    def make(n: int, x: float, lands: list[float]) -> _Tower:
        bw = rng.uniform(20, 32) * s
        avoid = [*canvas.bg_colours, floor]
        one = _pick_colour(rng, avoid, 90.0)
        colours = [one if rng.random() < 0.3 else _pick_colour(rng, avoid, 90.0) for _ in range(n)]
        return _Tower(
            x,
            ground,
            bw,
            bh,
            lands,
            [rng.uniform(0.4, 0.8) for _ in range(n)],
            [rng.uniform(-2, 2) * s for _ in range(n)],
            colours,
        )

    lands = [event_s]
    for _ in range(height - 1):
        lands.insert(0, lands[0] - rng.uniform(0.7, 2.2))
    x = rng.uniform(25, 60) * s if left else size - rng.uniform(25, 60) * s
    towers = [make(height, x, lands)]
    if rng.random() < 0.6:
        m = int(rng.integers(1, height))
        other = sorted(rng.uniform(-1.0, duration_s, m).tolist())
        x2 = size - rng.uniform(25, 60) * s if left else rng.uniform(25, 60) * s
        towers.append(make(m, x2, other))
    sky = (0, 0, size, ground - height * bh - 4 * s)
    if sky[3] - sky[1] < 24 * s:
        sky = (0, 0, size, ground)
    props = _props(rng, canvas, int(rng.integers(0, 3)), sky, canvas.bg_colours)

    def draw_frame(draw: ImageDraw.ImageDraw, i: int, t: float) -> None:
        draw.rectangle([0, ground, size, size], fill=floor)
        for p in props:
            p.draw(draw, i, t)
        for tw in towers:
            tw.draw(draw, t, top_y)

    frames = _render(canvas, draw_frame)
    target = towers[0]
    info = {
        "height": height,
        "heights": np.array([target.height(float(t)) for t in canvas.times]),
        "target_box": (
            target.x - target.bw / 2 - 3 * s,
            ground - height * bh,
            target.x + target.bw / 2 + 3 * s,
            ground,
        ),
        "lands": tuple(lands),
        "distractor_tower": len(towers) > 1,
    }
    return Scene(frames, canvas.times, (event_s,), info)


# ---------------------------------------------------------------------------------
# Scene 4: repetitive motion
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepSchedule:
    """When each repetition starts and how long it takes (its period)."""

    starts: tuple[float, ...]
    periods: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def end_s(self) -> float:
        return self.starts[-1] + self.periods[-1]

    @property
    def peaks_s(self) -> tuple[float, ...]:
        return tuple(a + p / 2 for a, p in zip(self.starts, self.periods, strict=True))

    def displacement(self, t: np.ndarray) -> np.ndarray:
        """0 at rest, 1 at the top of a repetition: sin^2 over each period.

        sin^2 is above 1/2 for half of each period and below it for a quarter period on
        each side, so with periods >= 3 frames every repetition has a frame above 1/2
        and every gap between two has one below: the count survives 5 fps sampling."""
        out = np.zeros_like(np.asarray(t, np.float64))
        for a, p in zip(self.starts, self.periods, strict=True):
            inside = (t >= a) & (t < a + p)
            out[inside] = np.sin(np.pi * (t[inside] - a) / p) ** 2
        return out


def rep_schedule(
    rng: np.random.Generator, count: int, start_s: float, max_motion_s: float = 18.0
) -> RepSchedule:
    """`count` repetitions from `start_s`: one base period (0.6-2 s, shorter when `count`
    needs it to fit in `max_motion_s`) with +-10 % per-repetition jitter, and in half of
    the episodes pauses of 0.2-1 s between some repetitions."""
    if not 1 <= count <= 20:
        raise ValueError(f"count must be 1..20, got {count}")
    upper = min(MAX_REP_PERIOD_S, max_motion_s / (1.1 * count))
    if upper < MIN_REP_PERIOD_S:
        raise ValueError(f"{count} repetitions do not fit in {max_motion_s} s")
    base = rng.uniform(MIN_REP_PERIOD_S, upper)
    periods = [
        float(np.clip(base * rng.uniform(0.9, 1.1), MIN_REP_PERIOD_S, MAX_REP_PERIOD_S))
        for _ in range(count)
    ]
    pause_p = 0.5 if rng.random() < 0.5 else 0.0
    starts, t = [], start_s
    for k, p in enumerate(periods):
        starts.append(t)
        t += p
        left = max_motion_s - (t - start_s) - sum(periods[k + 1 :])
        if k < count - 1 and rng.random() < pause_p and left > 1.0:
            t += rng.uniform(0.2, min(1.0, left - 0.2))
    return RepSchedule(tuple(starts), tuple(periods))


def _stick_figure(
    draw: ImageDraw.ImageDraw, x: float, feet: float, s: float, colour: Colour, air: float
) -> None:
    """A stick figure standing on `feet`; legs tuck and arms rise with `air` in [0, 1]."""
    w = max(1, round(3 * s))
    hip = feet - 16 * s
    neck = hip - 17 * s
    head = 6 * s
    draw.ellipse([x - head, neck - 2 * head, x + head, neck], fill=colour)
    draw.line([x, neck, x, hip], fill=colour, width=w)
    tuck = 5 * s * air
    for side in (-1, 1):
        draw.line(
            [
                x,
                hip,
                x + side * (6 * s + tuck),
                hip + 8 * s - tuck / 2,
                x + side * 7 * s,
                feet - tuck,
            ],
            fill=colour,
            width=w,
            joint="curve",
        )
        arm_y = neck + 9 * s - 16 * s * air
        draw.line([x, neck + 3 * s, x + side * 11 * s, arm_y], fill=colour, width=w)


def repetitions(
    rng: np.random.Generator,
    schedule: RepSchedule,
    duration_s: float,
    *,
    kind: str | None = None,
    size: int = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
) -> Scene:
    """An object repeats one motion per `schedule`, then stays still: a stick figure
    jumps or a ball bounces (up from the floor), a square or a bar moves sideways and
    back. Amplitude 15-38 % of the frame; 1-2 shapes wander in the other half of the
    frame. Needs fps >= 3 / 0.6 s so every repetition is seen (`RepSchedule.displacement`)."""
    if fps * MIN_REP_PERIOD_S < 3 - 1e-9:
        raise ValueError(f"fps {fps} is too low to show {MIN_REP_PERIOD_S} s repetitions")
    if schedule.end_s > duration_s:
        raise ValueError(f"motion ends at {schedule.end_s:.2f} s, after the video ({duration_s} s)")
    kind = kind or str(rng.choice(list(REP_KINDS)))
    if kind not in REP_KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(REP_KINDS)}")
    verb, axis = REP_KINDS[kind]
    canvas = _canvas(rng, duration_s, size, fps)
    s, fs = canvas.s, float(size)
    colour = _pick_colour(
        rng,
        canvas.bg_colours,
        120.0,
        ("red", "orange", "yellow", "lime", "cyan", "blue", "magenta", "pink"),
    )
    avoid = [*canvas.bg_colours, colour]
    d = schedule.displacement(canvas.times)
    first_half = bool(rng.random() < 0.5)
    ground = fs - rng.uniform(8, 20) * s
    if axis == "y":
        amp = rng.uniform(0.15, 0.3) * fs
        x = rng.uniform(22, 52) * s if first_half else fs - rng.uniform(22, 52) * s
        half: Box = (
            (fs / 2 + 4 * s, 0, fs, ground) if first_half else (0, 0, fs / 2 - 4 * s, ground)
        )
        r = rng.uniform(8, 14) * s
        lift = amp * d
        if kind == "figure":
            centre = np.stack([np.full_like(d, x), ground - 20 * s - lift], axis=-1)
        else:
            centre = np.stack([np.full_like(d, x), ground - r - lift], axis=-1)
    else:
        amp = rng.uniform(0.22, 0.38) * fs
        r = rng.uniform(8, 13) * s
        row = rng.uniform(25, 50) * s if first_half else fs - rng.uniform(35, 55) * s
        direction = 1 if rng.random() < 0.5 else -1
        x_rest = r + 6 * s if direction > 0 else fs - r - 6 * s
        half = (0, fs / 2 + 4 * s, fs, ground) if first_half else (0, 0, fs, fs / 2 - 8 * s)
        centre = np.stack([x_rest + direction * amp * d, np.full_like(d, row)], axis=-1)
    bar_h = rng.uniform(30, 45) * s
    props = _props(rng, canvas, int(rng.integers(1, 3)), half, avoid, change_avoid=avoid)
    floor = tuple(int(c * 0.75) for c in canvas.bg_colours[0])

    def draw_frame(draw: ImageDraw.ImageDraw, i: int, t: float) -> None:
        draw.rectangle([0, ground, size, size], fill=floor)
        for p in props:
            p.draw(draw, i, t)
        cx, cy = centre[i]
        if kind == "figure":
            _stick_figure(draw, cx, cy + 20 * s, s, colour, min(1.0, 2 * float(d[i])))
        elif kind == "ball":
            _draw_shape(draw, "circle", cx, cy, r, colour)
        elif kind == "square":
            _draw_shape(draw, "square", cx, cy, r, colour)
        else:
            draw.rectangle(
                [cx - 0.5 * r, cy - bar_h / 2, cx + 0.5 * r, cy + bar_h / 2], fill=colour
            )

    frames = _render(canvas, draw_frame)
    info = {
        "kind": kind,
        "verb": verb,
        "axis": axis,
        "count": schedule.count,
        "end_s": schedule.end_s,
        "colour": colour,
        "positions": centre,
        "displacement": d,
    }
    return Scene(frames, canvas.times, schedule.peaks_s, info)


# ---------------------------------------------------------------------------------
# Looking at scenes
# ---------------------------------------------------------------------------------


def contact_sheet(
    scene: Scene, columns: int = 10, first: int = 0, count: int | None = None, scale: int = 1
) -> Image.Image:
    """Frames side by side with their times; frames at an event time get a red border.
    For people checking what a viewer (or the model) sees."""
    idx = list(range(first, len(scene.frames) if count is None else first + count))
    idx = [i for i in idx if 0 <= i < len(scene.frames)]
    h, w = scene.frames.shape[1:3]
    cw, ch = w * scale + 4, h * scale + 16
    rows = max(1, -(-len(idx) // columns))
    sheet = Image.new("RGB", (columns * cw, rows * ch), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    events = {scene.frame_index(e) for e in scene.event_times_s}
    for n, i in enumerate(idx):
        x, y = (n % columns) * cw, (n // columns) * ch
        img = Image.fromarray(scene.frames[i]).resize((w * scale, h * scale), Image.NEAREST)
        if i in events:
            draw.rectangle([x, y, x + cw - 1, y + h * scale + 3], fill=(230, 0, 0))
        sheet.paste(img, (x + 2, y + 2))
        draw.text((x + 3, y + h * scale + 4), f"{scene.times_s[i]:.1f}s", fill=(0, 0, 0))
    return sheet
