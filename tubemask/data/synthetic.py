"""A synthetic action dataset in the UCF101 layout, whose classes differ only by motion.

Every video shows one textured shape over a static background (a random texture by default; one flat colour or
black on request). Shape, textures, colours, size and position
are drawn independently of the class; only how the shape moves over time (left, right, up, down, rotating clockwise
or counter-clockwise, growing, shrinking, fading in, fading out, orbiting) tells the classes apart, so a single frame
carries (almost) no label information and a model must look at motion.

[`make_synthetic_ucf101`][tubemask.data.synthetic.make_synthetic_ucf101] writes real video files (mpeg4 in `.avi`,
as UCF101 ships) with torchcodec's encoder plus the `ucfTrainTestlist/` split files, so the UCF101 reader and the
whole decoding path run on it. Test groups: split `k` tests on groups `g` with `(g - 1) % 3 == k - 1`.
[`cached_synthetic_ucf101`][tubemask.data.synthetic.cached_synthetic_ucf101] keeps such datasets in a cache folder,
one subfolder per settings, so runs with different settings never collide.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Int64, UInt8
from torch import Tensor

from tubemask.data.decoding import require_torchcodec
from tubemask.shapes import typechecked

__all__ = [
    "MOTION_CLASSES",
    "Background",
    "cached_synthetic_ucf101",
    "make_synthetic_ucf101",
    "random_colour_pair",
    "random_texture",
    "render_motion_clip",
    "render_motion_dataset",
    "render_object",
    "synthetic_ucf101_root",
    "write_dataset_once",
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
"""Backgrounds of [render_motion_clip][tubemask.data.synthetic.render_motion_clip]: a static random texture (the
default), one flat random colour, or black."""

_MARKER = "synthetic.json"
_CLIPS_PER_GROUP = 4


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
        background: see [render_motion_clip][tubemask.data.synthetic.render_motion_clip].

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


def _complete(root: Path, params: dict) -> bool:
    marker = root / _MARKER
    if not marker.is_file():
        return False
    found = json.loads(marker.read_text())
    if found != params:
        raise FileExistsError(
            f"{root} holds a synthetic dataset made with {found}, not {params}; pass another root or delete it"
        )
    return True


def write_dataset_once(root: Path, params: dict, build: Callable[[Path], None]) -> None:
    """Make a synthetic dataset at `root` unless it is already there, complete, with these `params`.

    `build(tmp)` writes the files into a fresh temporary sibling of `root`, on one torch thread (tiny tensors:
    threading only adds overhead; restored after); the marker with `params` is written last and the folder renamed
    into place, so an interrupted run leaves no half dataset. Two processes racing for `root` both build their own
    copy; the first rename wins and the other process, finding `root` complete with its `params`, drops its copy and
    returns: both end with the one complete dataset.

    Raises:
        FileExistsError: `root` holds something else (another dataset's marker, or files).
    """
    if _complete(root, params):
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory nor a complete synthetic dataset")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build(tmp)
        (tmp / _MARKER).write_text(json.dumps(params))
        try:
            if root.is_dir():
                root.rmdir()  # empty (checked above) unless another process has just renamed its copy here
            tmp.rename(root)
        except OSError:
            if not _complete(root, params):  # lost a race to another process? Then theirs is complete.
                raise
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ucf101_params(
    *,
    num_classes: int,
    videos_per_class: int,
    num_frames: int,
    size: int | tuple[int, int],
    fps: float,
    seed: int,
    background: Background,
) -> dict:
    """The checked settings of a synthetic UCF101 dataset as the plain dict its marker stores (and its key hashes)."""
    if not 1 <= num_classes <= len(MOTION_CLASSES):
        raise ValueError(f"num_classes={num_classes}; allowed 1..{len(MOTION_CLASSES)}")
    if videos_per_class < 1 or num_frames < 2:
        raise ValueError(f"videos_per_class={videos_per_class} must be >= 1 and num_frames={num_frames} >= 2")
    h, w = (size, size) if isinstance(size, int) else size
    if h < 16 or w < 16 or h % 2 or w % 2:
        raise ValueError(f"size={size}: sides must be even and >= 16 (yuv420 video)")
    if background not in ("texture", "flat", "black"):
        raise ValueError(f"background={background!r}; allowed 'texture', 'flat', 'black'")
    return dict(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=[h, w],
        fps=float(fps),
        seed=seed,
        background=background,
    )


def make_synthetic_ucf101(
    root: str | os.PathLike,
    *,
    num_classes: int = 10,
    videos_per_class: int = 24,
    num_frames: int = 64,
    size: int | tuple[int, int] = 64,
    fps: float = 25.0,
    seed: int = 0,
    background: Background = "texture",
) -> Path:
    """Write (once) a motion-only action dataset in the official UCF101 layout and return `root`.

    Layout: `root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi` (mpeg4, up to 4 clips per group, at least 3 groups) and
    `root/ucfTrainTestlist/{classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt}`; read it with
    [`read_ucf101`][tubemask.data.annotations.read_ucf101]. The defaults (240 videos of 64 frames at 64 x 64) take
    a few seconds on two CPU cores and fit 16-frame clips at stride 4 and input size 64.

    Idempotent and atomic: a complete dataset (marked by `synthetic.json` with these parameters) is returned as is;
    otherwise everything is written into a temporary sibling directory that is renamed to `root` at the end, so an
    interrupted run never leaves a half-written dataset. Concurrent callers (e.g. several ranks) are safe.

    Args:
        root: Dataset directory to create (must not exist, be empty, or hold this same dataset).
        num_classes: Classes, at most `len(MOTION_CLASSES)` (12).
        videos_per_class: Videos per class.
        num_frames: Frames per video.
        size: Frame side or `(height, width)`.
        fps: Frame rate written into the files.
        seed: Dataset seed; the same arguments always produce the same frames.
        background: `"texture"`, `"flat"` or `"black"`, see
            [render_motion_clip][tubemask.data.synthetic.render_motion_clip]. Black makes the pretext task
            informative at CPU scale: every non-zero pixel belongs to the moving object (docs/data_efficiency.md).

    Returns:
        `root` as a `Path`.

    Raises:
        ValueError: Arguments out of range.
        FileExistsError: `root` holds something else.
        MissingDecoderError: torchcodec or FFmpeg's libraries are missing (they write the videos).
    """
    params = _ucf101_params(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
        background=background,
    )
    h, w = params["size"]
    VideoEncoder = require_torchcodec("encoders").VideoEncoder  # lazy: tubemask.data imports without it
    root = Path(root)

    def build(tmp: Path) -> None:
        classes = MOTION_CLASSES[:num_classes]
        per_group = max(1, min(_CLIPS_PER_GROUP, videos_per_class // 3))  # at least 3 groups: every split has both
        lists = {name: [] for k in (1, 2, 3) for name in (f"trainlist0{k}.txt", f"testlist0{k}.txt")}
        for label, name in enumerate(classes):
            (tmp / "UCF-101" / name).mkdir(parents=True)
            for j in range(videos_per_class):
                group, clip = j // per_group + 1, j % per_group + 1
                relative = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
                frames = render_motion_clip(
                    label, num_frames=num_frames, size=(h, w), seed=seed * 100_003 + j, background=background
                )
                VideoEncoder(frames, frame_rate=fps).to_file(
                    str(tmp / "UCF-101" / relative), codec="mpeg4", extra_options={"qscale": 3}
                )
                for k in (1, 2, 3):
                    if (group - 1) % 3 == k - 1:
                        lists[f"testlist0{k}.txt"].append(relative)
                    else:
                        lists[f"trainlist0{k}.txt"].append(f"{relative} {label + 1}")
        (tmp / "ucfTrainTestlist").mkdir()
        classind = "".join(f"{i + 1} {name}\n" for i, name in enumerate(classes))
        (tmp / "ucfTrainTestlist" / "classInd.txt").write_text(classind)
        for file, lines in lists.items():
            (tmp / "ucfTrainTestlist" / file).write_text("".join(line + "\n" for line in lines))

    write_dataset_once(root, params, build)
    return root


def synthetic_ucf101_root(
    cache_dir: str | os.PathLike,
    *,
    num_classes: int = 10,
    videos_per_class: int = 24,
    num_frames: int = 64,
    size: int | tuple[int, int] = 64,
    fps: float = 25.0,
    seed: int = 0,
    background: Background = "texture",
) -> Path:
    """The folder in `cache_dir` where [cached_synthetic_ucf101][tubemask.data.synthetic.cached_synthetic_ucf101]
    keeps the dataset with these settings (arguments as
    [make_synthetic_ucf101][tubemask.data.synthetic.make_synthetic_ucf101]). Pure: nothing is read or written.

    The name has readable parts and a short hash of all settings, e.g.
    `synthetic_ucf101-10x24-64f-64x64-texture-seed0-3f2a9c1b0d`: different settings never share a folder, and the
    same settings always give the same one (the hash is of the sorted JSON of the settings).

    Raises:
        ValueError: Arguments out of range.
    """
    params = _ucf101_params(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
        background=background,
    )
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    h, w = params["size"]
    name = f"synthetic_ucf101-{num_classes}x{videos_per_class}-{num_frames}f-{h}x{w}-{background}-seed{seed}-{digest}"
    return Path(cache_dir) / name


def cached_synthetic_ucf101(
    cache_dir: str | os.PathLike,
    *,
    num_classes: int = 10,
    videos_per_class: int = 24,
    num_frames: int = 64,
    size: int | tuple[int, int] = 64,
    fps: float = 25.0,
    seed: int = 0,
    background: Background = "texture",
) -> Path:
    """The synthetic UCF101 dataset with these settings, generated into its own folder of `cache_dir` unless it is
    already there; returns its root (the folder named by
    [synthetic_ucf101_root][tubemask.data.synthetic.synthetic_ucf101_root]). Arguments as
    [make_synthetic_ucf101][tubemask.data.synthetic.make_synthetic_ucf101].

    Datasets with other settings live beside it untouched. Safe when several processes ask at once: each may build
    a copy in a temporary folder, the first to finish renames it into place and the others return that one.

    Raises:
        ValueError: Arguments out of range.
        MissingDecoderError: torchcodec or FFmpeg's libraries are missing (they write the videos).
    """
    settings = dict(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
        background=background,
    )
    return make_synthetic_ucf101(synthetic_ucf101_root(cache_dir, **settings), **settings)
