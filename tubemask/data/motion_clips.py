"""Synthetic motion clips rendered in memory: one textured shape over a background, the class told only by its motion.

Every clip shows one textured shape over a static background (a random texture by default; one flat colour or black
on request). Shape, textures, colours, size and position are drawn independently of the class; only how the shape
moves over time (left, right, up, down, rotating clockwise or counter-clockwise, growing, shrinking, fading in, fading
out, orbiting) tells the classes apart, so a single frame carries (almost) no label information and a model must look
at motion.

[`render_motion_clip`][tubemask.data.motion_clips.render_motion_clip] draws one clip,
[`render_motion_dataset`][tubemask.data.motion_clips.render_motion_dataset] a labelled set of them as tensors (what
`recipes/data_efficiency.py` reads); [tubemask.data.synthetic][] writes them as video files in the UCF101 layout, and
[tubemask.data.scenes][] and [tubemask.data.synthetic_ava][] draw their objects with the same pieces.
"""

import math
from typing import Literal

import numpy as np
import torch
from jaxtyping import Int64, UInt8
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = [
    "MOTION_CLASSES",
    "Background",
    "random_colour_pair",
    "random_texture",
    "render_motion_clip",
    "render_motion_dataset",
    "render_object",
]

MOTION_CLASSES = (
    "MoveLeft",
    "MoveRight",
    "MoveUp",
    "MoveDown",
    "RotateClockwise",
    "RotateCounterclockwise",
    "Grow",
    "Shrink",
    "FadeIn",
    "FadeOut",
    "OrbitClockwise",
    "OrbitCounterclockwise",
)
"""Class names in label order; a dataset with `num_classes=k` uses the first `k`."""

Background = Literal["texture", "flat", "black"]
"""Backgrounds of [render_motion_clip][tubemask.data.motion_clips.render_motion_clip]: a static random texture (the
default), one flat random colour, or black."""

Background = Literal["texture", "flat", "black"]
"""Backgrounds of [render_motion_clip][tubemask.data.motion_clips.render_motion_clip]: a static random texture (the
default), one flat random colour, or black."""


def random_texture(rng: np.random.Generator, u: Tensor, v: Tensor) -> Tensor:
    """A random pattern in [0, 1] over coordinates `u, v` (two oriented gratings and a checker term)."""
    out = torch.zeros_like(u)
    for _ in range(2):
        angle, freq, phase = rng.uniform(0, math.pi), rng.uniform(1.5, 5.0), rng.uniform(0, 2 * math.pi)
        out = out + torch.sin(freq * math.pi * (u * math.cos(angle) + v * math.sin(angle)) + phase)
    freq = rng.uniform(2.0, 4.0)
    out = out + torch.sign(torch.sin(freq * math.pi * u) * torch.sin(freq * math.pi * v))
    return (out / 3.0 + 1.0) / 2.0


def random_colour_pair(rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Two random RGB colours in [0, 1], each float32 `[3 1 1 1]` (broadcasts over `[c t h w]`), to blend a texture
    between."""
    a = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)
    b = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)
    return a.view(3, 1, 1, 1), b.view(3, 1, 1, 1)


def render_object(
    rng: np.random.Generator, xs: Tensor, ys: Tensor, *, cx: Tensor, cy: Tensor, theta: Tensor, size: Tensor | float
) -> tuple[Tensor, Tensor]:
    """One textured shape (disc, square or diamond, drawn from `rng`) with two random colours, posed per frame.

    Args:
        rng: draws the shape kind, then the colours, then the texture (in that order).
        xs: pixel column coordinates, `[1 1 w]`.
        ys: pixel row coordinates, `[1 h 1]`.
        cx: the centre's column per frame, `[t 1 1]`.
        cy: the centre's row per frame, `[t 1 1]`.
        theta: the rotation per frame, `[t 1 1]`.
        size: the shape's radius in pixels (per frame `[t 1 1]`, or one number).

    Returns:
        `(foreground, inside)`: the object's colours `[3 t h w]` (the texture moves and turns with it) and its
        coverage `[t h w]` (1.0 inside, 0.0 outside).
    """
    dx, dy = (xs - cx) / size, (ys - cy) / size  # [t h w]
    u = dx * torch.cos(theta) + dy * torch.sin(theta)
    v = -dx * torch.sin(theta) + dy * torch.cos(theta)
    kind = int(rng.integers(3))
    if kind == 0:
        inside = u**2 + v**2 <= 1.0
    elif kind == 1:
        inside = torch.maximum(u.abs(), v.abs()) <= 0.85
    else:
        inside = u.abs() + v.abs() <= 1.15
    fg_a, fg_b = random_colour_pair(rng)
    pattern = random_texture(rng, u, v)  # [t h w]
    return fg_a * pattern + fg_b * (1 - pattern), inside.float()


@typechecked
def render_motion_clip(
    label: int,
    *,
    num_frames: int = 64,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    background: Background = "texture",
) -> UInt8[Tensor, "t 3 h w"]:
    """Render one clip of class `MOTION_CLASSES[label]`, deterministic in `(label, seed)`.

    Args:
        label: Class index into `MOTION_CLASSES`.
        num_frames: Frames `t`.
        size: `(height, width)`.
        seed: Appearance and trajectory seed.
        background: `"texture"` (static random texture), `"flat"` (one random colour) or `"black"`. The random draws
            are the same for every choice, so a seed gives the same object and trajectory on each background.

    Returns:
        uint8 frames `[t 3 h w]`.
    """
    if not 0 <= label < len(MOTION_CLASSES):
        raise ValueError(f"label={label}; allowed 0..{len(MOTION_CLASSES) - 1}")
    if background not in ("texture", "flat", "black"):
        raise ValueError(f"background={background!r}; allowed 'texture', 'flat', 'black'")
    name = MOTION_CLASSES[label]
    rng = np.random.default_rng([seed, label])
    h, w = size
    s = torch.linspace(0.0, 1.0, num_frames).view(num_frames, 1, 1)  # time in [0, 1]
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    short = min(h, w)

    # Background: static texture in pixel coordinates.
    bg_a, bg_b = random_colour_pair(rng)
    bg = random_texture(rng, xs.expand(1, h, w) / short, ys.expand(1, h, w) / short)  # [1 h w]
    background_frames = bg_a * bg + bg_b * (1 - bg)  # [3 1 h w]
    if background == "flat":
        background_frames = bg_a.expand(3, 1, h, w)
    elif background == "black":
        background_frames = torch.zeros(3, 1, h, w)

    # Object appearance and a base pose; only the trajectory depends on the class.
    radius = short * rng.uniform(0.16, 0.24)
    cx0, cy0 = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65)
    theta0 = rng.uniform(0, 2 * math.pi)
    travel = short * rng.uniform(0.45, 0.6)
    turn = rng.uniform(0.6, 0.9) * 2 * math.pi
    cx, cy = torch.full_like(s, cx0), torch.full_like(s, cy0)
    theta, scale, alpha = torch.full_like(s, theta0), torch.ones_like(s), torch.ones_like(s)
    ramp = s - 0.5
    if name in ("MoveLeft", "MoveRight"):
        cx = cx - travel * ramp if name == "MoveLeft" else cx + travel * ramp
    elif name in ("MoveUp", "MoveDown"):
        cy = cy - travel * ramp if name == "MoveUp" else cy + travel * ramp
    elif name in ("RotateClockwise", "RotateCounterclockwise"):  # image y points down: +theta turns clockwise
        theta = theta + (turn if name == "RotateClockwise" else -turn) * s
    elif name in ("Grow", "Shrink"):
        scale = 0.55 + 0.8 * (s if name == "Grow" else 1 - s)
    elif name in ("FadeIn", "FadeOut"):
        alpha = (s if name == "FadeIn" else 1 - s).clamp(0, 1)
    else:  # orbit around the base position
        phi = rng.uniform(0, 2 * math.pi) + (1 if name == "OrbitClockwise" else -1) * 1.5 * math.pi * s
        cx, cy = cx + 0.25 * short * torch.cos(phi), cy + 0.25 * short * torch.sin(phi)

    foreground, inside = render_object(rng, xs, ys, cx=cx, cy=cy, theta=theta, size=radius * scale)
    weight = inside * alpha  # [t h w]
    frames = background_frames * (1 - weight) + foreground * weight
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 0, 2, 3).contiguous()


@typechecked
def render_motion_dataset(
    count: int,
    *,
    num_classes: int = 10,
    num_frames: int = 16,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    background: Background = "texture",
) -> tuple[UInt8[Tensor, "n 3 t h w"], Int64[Tensor, " n"]]:
    """Render `count` labelled clips in memory (no files), classes in turn, for experiments that do not need the
    decoding path (e.g. `recipes/data_efficiency.py`).

    Clip `i` has label `i % num_classes` and is `render_motion_clip(label, seed=s_i)` with
    `s_i = numpy.random.SeedSequence([seed, i]).generate_state(1)[0]`, so two sets with different `seed` share no
    clip and the same arguments give the same tensors.

    Args:
        count: number of clips.
        num_classes: the first `num_classes` of `MOTION_CLASSES`.
        num_frames: frames per clip.
        size: `(height, width)`.
        seed: dataset seed.
        background: see [render_motion_clip][tubemask.data.motion_clips.render_motion_clip].

    Returns:
        `(clips, labels)`: uint8 clips `[n 3 t h w]` (channels first, as models take them) and int64 labels.

    Raises:
        ValueError: for `count < 0` or `num_classes` outside `1..len(MOTION_CLASSES)`.
    """
    if count < 0:
        raise ValueError(f"render_motion_dataset: count={count}; must be >= 0")
    if not 1 <= num_classes <= len(MOTION_CLASSES):
        raise ValueError(f"render_motion_dataset: num_classes={num_classes}; allowed 1..{len(MOTION_CLASSES)}")
    clips = torch.empty(count, 3, num_frames, *size, dtype=torch.uint8)
    labels = torch.arange(count, dtype=torch.int64) % num_classes
    for i in range(count):
        clip_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        frames = render_motion_clip(
            int(labels[i]), num_frames=num_frames, size=size, seed=clip_seed, background=background
        )
        clips[i] = frames.permute(1, 0, 2, 3)
    return clips, labels
