"""A harder synthetic motion task: several objects on a smooth, possibly panning background, one actor whose motion
pattern is the class.

[tubemask.data.motion_clips][] shows one object on a static background, and a few hand-made features (centroid, area
and intensity change per frame) nearly solve it. Here every clip holds four objects drawn from the same appearance
distribution: the *actor*, whose trajectory defines the class; a *partner* that stays put (except when the actor
pushes it); and two *distractors* that cross the frame in straight lines. The background is a smooth random colour
field that pans with the camera in half of the clips. The classes share their displacement statistics (every
direction is drawn at random) and differ in the shape of the path or in how the actor relates to the partner:

| class | the actor |
|---|---|
| `OrbitClockwise`, `OrbitCounterclockwise` | circles a point (1.5 pi over the clip) |
| `Bounce` | moves straight, reverses at a random time |
| `ZigZag` | drifts while stepping side to side every two frames |
| `Approach`, `Recede` | moves straight towards the partner until they touch; the reverse |
| `Push` | moves to the partner and stops; the partner moves on in the same direction |
| `StopAndGo` | moves, stops for the middle third of the clip, moves on |

A single frame carries no label information; the frame differences carry the camera's, the distractors' and the
actor's motion together, so the class needs the actor's path to be told apart from the others.
"""

import math
from typing import Literal

import numpy as np
import torch
from jaxtyping import Int64, UInt8
from torch import Tensor

from tubemask.data.motion_clips import random_colour_pair, render_object
from tubemask.shapes import typechecked

__all__ = ["SCENE_CLASSES", "SceneBackground", "render_scene_clip", "render_scene_dataset"]

SCENE_CLASSES = (
    "OrbitClockwise",
    "OrbitCounterclockwise",
    "Bounce",
    "ZigZag",
    "Approach",
    "Recede",
    "Push",
    "StopAndGo",
)
"""Class names in label order."""

SceneBackground = Literal["panning", "smooth", "black"]
"""`panning`: a smooth random colour field that moves with a random camera velocity in half of the clips (static in
the other half); `smooth`: the same field, always static; `black`: no background (objects only)."""


def _smooth_field(rng: np.random.Generator, h: int, w: int, frames: int, pan: tuple[float, float]) -> Tensor:
    """A smooth two-colour field `[3 t h w]` in [0, 1], shifted by `pan` pixels per frame (bilinear)."""
    grid = torch.tensor(rng.uniform(0, 1, (1, 1, 4, 4)), dtype=torch.float32)
    margin = int(math.ceil(max(abs(pan[0]), abs(pan[1])) * frames)) + 2
    big = torch.nn.functional.interpolate(grid, size=(h + 2 * margin, w + 2 * margin), mode="bicubic").clamp(0, 1)
    big = big[0, 0]
    t = torch.arange(frames, dtype=torch.float32)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) + margin + pan[1] * t.view(-1, 1, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) + margin + pan[0] * t.view(-1, 1, 1)
    # bilinear sampling of `big` at (ys, xs) per frame
    y0, x0 = ys.floor(), xs.floor()
    wy, wx = ys - y0, xs - x0
    y0, x0 = y0.long().clamp(0, big.shape[0] - 2), x0.long().clamp(0, big.shape[1] - 2)
    y0, x0 = y0.expand(frames, h, w), x0.expand(frames, h, w)
    wy, wx = wy.expand(frames, h, w), wx.expand(frames, h, w)
    top = big[y0, x0] * (1 - wx) + big[y0, x0 + 1] * wx
    bottom = big[y0 + 1, x0] * (1 - wx) + big[y0 + 1, x0 + 1] * wx
    field = top * (1 - wy) + bottom * wy  # [t h w]
    a, b = random_colour_pair(rng)
    return (0.25 + 0.5 * a) * field + (0.25 + 0.5 * b) * (1 - field)  # muted colours: objects stay visible


def _trajectories(name: str, rng: np.random.Generator, s: Tensor, short: int, radius: float) -> dict[str, Tensor]:
    """Centres `(x, y)` per frame, `[t 1 1]` each, of the actor and the partner for class `name`."""
    angle = rng.uniform(0, 2 * math.pi)
    d = torch.tensor([math.cos(angle), math.sin(angle)]).view(2, 1, 1, 1)
    centre = torch.tensor(rng.uniform(0.35, 0.65, 2) * short, dtype=torch.float32).view(2, 1, 1, 1)
    travel = short * rng.uniform(0.35, 0.5)
    partner = torch.tensor(rng.uniform(0.25, 0.75, 2) * short, dtype=torch.float32).view(2, 1, 1, 1)
    partner = partner.expand(2, s.shape[0], 1, 1)
    frames = s.shape[0]
    k = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1)
    if name in ("OrbitClockwise", "OrbitCounterclockwise"):
        phi = rng.uniform(0, 2 * math.pi) + (1 if name == "OrbitClockwise" else -1) * 1.5 * math.pi * s
        r = short * rng.uniform(0.18, 0.25)
        actor = centre + r * torch.stack([torch.cos(phi), torch.sin(phi)])
    elif name == "Bounce":
        turn = rng.uniform(0.35, 0.65)
        path = torch.where(s < turn, s, 2 * turn - s)  # out, then back the way it came
        actor = centre + travel * d * (path - turn / 2)
    elif name == "ZigZag":
        side = torch.stack([-d[1], d[0]])
        step = torch.sin(math.pi / 2 * (k + int(rng.integers(4))))  # -1, 0, 1, 0, ... every two frames a swing
        actor = centre + travel * d * (s - 0.5) + short * rng.uniform(0.09, 0.13) * side * step
    elif name in ("Approach", "Recede", "Push"):
        touch = 2.1 * radius
        far = touch + travel
        if name == "Approach":
            gap = far + (touch - far) * s
        elif name == "Recede":
            gap = touch + (far - touch) * s
        else:
            gap = far + (touch - far) * (2 * s).clamp(max=1.0)  # reaches the partner at mid-clip and stops
            partner = partner - travel * d * (2 * s - 1).clamp(min=0.0)  # the partner moves on in the same direction
        actor = partner + gap * d  # d points from the partner to the actor: the actor moves along -d
    elif name == "StopAndGo":
        path = torch.where(s < 1 / 3, s, torch.where(s < 2 / 3, torch.full_like(s, 1 / 3), s - 1 / 3))
        actor = centre + travel * d * (1.5 * path - 0.5)
    else:
        raise ValueError(f"unknown scene class {name!r}")
    return {"actor": actor, "partner": partner}


@typechecked
def render_scene_clip(
    label: int,
    *,
    num_frames: int = 8,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    background: SceneBackground = "panning",
    distractors: int = 2,
    object_size: float = 0.13,
) -> UInt8[Tensor, "t 3 h w"]:
    """Render one clip of class `SCENE_CLASSES[label]`, deterministic in `(label, seed)`.

    Args:
        label: class index into `SCENE_CLASSES`.
        num_frames: frames `t` (at least 4: the zig-zag swings every two frames).
        size: `(height, width)`.
        seed: appearance, trajectory and background seed.
        background: see [SceneBackground][tubemask.data.scenes.SceneBackground].
        distractors: objects that cross the frame in straight lines besides the actor and the partner.
        object_size: mean object radius as a share of the shorter side (each clip draws within +-15%).

    Returns:
        uint8 frames `[t 3 h w]`.

    Raises:
        ValueError: for a label outside `0..7`, fewer than 4 frames, a negative `distractors` or an unknown
            background.
    """
    if not 0 <= label < len(SCENE_CLASSES):
        raise ValueError(f"render_scene_clip: label={label}; allowed 0..{len(SCENE_CLASSES) - 1}")
    if num_frames < 4:
        raise ValueError(f"render_scene_clip: num_frames={num_frames}; need at least 4")
    if distractors < 0:
        raise ValueError(f"render_scene_clip: distractors={distractors}; must be >= 0")
    if not 0 < object_size < 0.5:
        raise ValueError(f"render_scene_clip: object_size={object_size}; must be in (0, 0.5)")
    if background not in ("panning", "smooth", "black"):
        raise ValueError(f"render_scene_clip: background={background!r}; allowed 'panning', 'smooth', 'black'")
    rng = np.random.default_rng([seed, label, 7])
    h, w = size
    short = min(h, w)
    s = torch.linspace(0.0, 1.0, num_frames).view(num_frames, 1, 1)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)

    pans = rng.uniform(-1.0, 1.0, 2) * (rng.uniform() < 0.5)  # pixels per frame; 0 in half of the clips
    field = _smooth_field(rng, h, w, num_frames, (float(pans[0]), float(pans[1])))
    if background == "smooth":
        field = field[:, :1].expand_as(field)
    elif background == "black":
        field = torch.zeros_like(field)

    radius = short * object_size * rng.uniform(0.85, 1.15)
    paths = _trajectories(SCENE_CLASSES[label], rng, s, short, radius)
    centres = [paths["actor"], paths["partner"]]
    for _ in range(distractors):
        angle = rng.uniform(0, 2 * math.pi)
        d = torch.tensor([math.cos(angle), math.sin(angle)]).view(2, 1, 1, 1)
        mid = torch.tensor(rng.uniform(0.25, 0.75, 2) * short, dtype=torch.float32).view(2, 1, 1, 1)
        centres.append(mid + short * rng.uniform(0.25, 0.5) * d * (s - 0.5))
    frames = field
    for index in rng.permutation(len(centres)):  # drawing order at random: being on top says nothing
        theta = torch.full_like(s, rng.uniform(0, 2 * math.pi))
        size_px = radius * rng.uniform(0.85, 1.15)
        foreground, inside = render_object(
            rng, xs, ys, cx=centres[index][0], cy=centres[index][1], theta=theta, size=size_px
        )
        frames = frames * (1 - inside) + foreground * inside
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 0, 2, 3).contiguous()


@typechecked
def render_scene_dataset(
    count: int,
    *,
    num_frames: int = 8,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    background: SceneBackground = "panning",
    distractors: int = 2,
    object_size: float = 0.13,
) -> tuple[UInt8[Tensor, "n 3 t h w"], Int64[Tensor, " n"]]:
    """Render `count` labelled scene clips in memory, classes in turn (clip `i` has label `i % 8`).

    Clip `i` is `render_scene_clip(label, seed=s_i)` with `s_i = numpy.random.SeedSequence([seed, i])
    .generate_state(1)[0]`, so sets with different `seed` share no clip and the same arguments give the same tensors.

    Returns:
        `(clips, labels)`: uint8 clips `[n 3 t h w]` (channels first, as models take them) and int64 labels.

    Raises:
        ValueError: for `count < 0`, or the errors of [render_scene_clip][tubemask.data.scenes.render_scene_clip].
    """
    if count < 0:
        raise ValueError(f"render_scene_dataset: count={count}; must be >= 0")
    clips = torch.empty(count, 3, num_frames, *size, dtype=torch.uint8)
    labels = torch.arange(count, dtype=torch.int64) % len(SCENE_CLASSES)
    for i in range(count):
        clip_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        frames = render_scene_clip(
            int(labels[i]),
            num_frames=num_frames,
            size=size,
            seed=clip_seed,
            background=background,
            distractors=distractors,
            object_size=object_size,
        )
        clips[i] = frames.permute(1, 0, 2, 3)
    return clips, labels
