"""The data-efficiency study's design (`recipes/data_efficiency.py`): its options, its splits and the pieces its
options build.

The study renders disjoint labelled, validation and test sets of a synthetic motion task for each seed
([make_splits][tubemask.eval.data_efficiency.make_splits]; the pretraining pool is the labelled clips themselves,
VideoMAE's setting, or grows with unlabelled or out-of-domain clips), pretrains with the masker, target and loss its
options name ([make_masker][tubemask.eval.data_efficiency.make_masker],
[make_target][tubemask.eval.data_efficiency.make_target], [make_loss][tubemask.eval.data_efficiency.make_loss]),
then runs its arms on the same splits ([tubemask.eval.arms][]).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from tubemask.data import normalize_batch
from tubemask.data.motion_clips import Background, render_motion_dataset
from tubemask.data.scenes import SCENE_CLASSES, SceneBackground, render_scene_dataset
from tubemask.hog import HOGTarget
from tubemask.losses import Loss, reconstruction_mse, reconstruction_smooth_l1
from tubemask.masking import FrameMasker, RandomMasker, TubeMasker
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.motion_aware import MotionAwareMasker
from tubemask.motion_guided import MotionGuidedMasker
from tubemask.teacher import TeacherTarget

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "DataConfig",
    "ModelConfig",
    "PretrainOptions",
    "FinetuneOptions",
    "vit_size",
    "make_masker",
    "make_loss",
    "make_target",
    "study_grid",
    "effective_mask_ratio",
    "Split",
    "normalise",
    "render",
    "make_splits",
]

PIXEL_MEAN = (0.5, 0.5, 0.5)
"""The study's normalisation (its clips are synthetic: ImageNet statistics mean nothing here)."""
PIXEL_STD = (0.25, 0.25, 0.25)


@dataclass
class DataConfig:
    """The synthetic task and its splits."""

    task: Literal["scenes", "motion"] = "scenes"
    """`scenes`: [tubemask.data.scenes][] (8 classes: the shape of an actor's path or its relation to a partner); `motion`: the older
    one-object task of [tubemask.data.motion_clips][] (its first `num_classes` classes)."""
    num_classes: int = 8
    """Classes (the scenes task has exactly 8)."""
    frames: int = 8
    """Frames per clip."""
    size: int = 32
    """Frame height and width in pixels."""
    background: Background = "black"
    """The motion task's background: `texture`, `flat` or `black`."""
    scene_background: SceneBackground = "black"
    """The scenes task's background: `panning`, `smooth` or `black` (the frozen design: black; the tiny ViT did not
    learn the classes on the others at this budget, docs/data_efficiency.md)."""
    distractors: int = 0
    """Scenes task: objects crossing the frame in straight lines besides the actor and its partner."""
    object_size: float = 0.2
    """Scenes task: mean object radius as a share of the frame side."""
    pool_factor: float = 1.0
    """Pretraining pool in multiples of the labelled training set: 1 pretrains on the labelled clips alone (their
    labels unused); `k > 1` adds `(k - 1)` times as many unlabelled clips of the same task."""
    pool_domain: Literal["same", "shifted"] = "same"
    """`same`: the pool described by `pool_factor`; `shifted`: an out-of-domain pool of `pool_factor` times the
    labelled set's size instead, none of it from the task: the one-object task's 12 motions (moves, rotations,
    scaling, fades, orbits) on textured backgrounds (the paper's domain-shift question: a larger pool from another
    domain against a smaller one from the task's)."""
    labels_per_class: int = 20
    """Labelled training clips per class (the data-efficiency budget)."""
    val_per_class: int = 20
    """Validation clips per class (every choice: epoch, learning rate, probe weight decay)."""
    test_per_class: int = 50
    """Test clips per class (scored once per arm, after every choice)."""
    probe_per_class: int = 30
    """Labelled clips per class for the pretraining diagnostics' linear probe (never used for a choice)."""


@dataclass
class FinetuneOptions:
    """Supervised training of the two fine-tuning arms on the labelled set (the same for both)."""

    epochs: int = 240
    """Epochs at most; the epoch with the best validation accuracy is kept (checked every `eval_every`). 240: at 120
    the scratch arm still gained (exploration seed 0: validation 0.556 at 120, 0.631 at 240, best epoch 196)."""
    eval_every: int = 2
    """Validation every this many epochs (and after the last)."""
    batch_size: int = 16
    pretrained_lrs: tuple[float, ...] = (1e-3, 2e-3, 4e-3, 8e-3)
    """The pretrained arm's learning-rate grid (peak AdamW lr, betas 0.9 / 0.999), centred by exploration on the
    values it chose (2e-3 and 4e-3 at 120 epochs; 1e-3 once at 60; 2.5e-4 and 5e-4, tried at 60, never)."""
    scratch_lrs: tuple[float, ...] = (2.5e-4, 5e-4, 1e-3, 2e-3)
    """The scratch arm's learning-rate grid, centred by exploration on the values it chose (5e-4 and 1e-3; over 1e-4
    to 4e-3 at 60 epochs, 1e-4 and 4e-3 were never within 0.1 of the best validation accuracy)."""
    layer_decay: float = 0.75
    """Layer-wise lr decay for both arms (the scratch arm gets the same optimiser)."""
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    drop_path: float = 0.1
    head_dropout: float = 0.0
    label_smoothing: float = 0.1
    augment: bool = True
    """Label-preserving augmentation for both arms: a random shift of the whole clip by up to `shift` pixels
    (edges replicated) and brightness / contrast jitter of 10%. No flips: a mirror turns clockwise into
    counter-clockwise."""
    shift: int = 4
    probe_weight_decays: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    """The probe arms' L2 grid (chosen on validation)."""
    motion_drop: float = 0.0
    """Share of each clip's cubes the fine-tuned arms drop before the encoder, the least moving first, in training
    and evaluation (EVEREST's fine-tuning: 0.4); 0 = every cube (the frozen design)."""


@dataclass
class ModelConfig:
    """Encoder and decoder of the small ViT."""

    patch_size: int = 8
    tubelet_size: int = 2
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 2


@dataclass
class PretrainOptions:
    """Masked-autoencoder pretraining on the pool."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1.5e-3
    """Peak AdamW learning rate (betas 0.9 / 0.95)."""
    weight_decay: float = 0.05
    warmup_steps: int = 100
    mask: Literal["tube", "random", "frame", "motion_aware", "motion_guided"] = "tube"
    """`motion_aware`: the encoder sees the most-moving cubes, the decoder reconstructs the next `query_ratio` of them
    ([tubemask.motion_aware][]); `motion_guided`: tube-like masks carried along a block-matching flow
    ([tubemask.motion_guided][])."""
    mask_ratio: float = 0.75
    """Asked ratio; the masked count is `int(ratio * units)` of the masker's units, so the effective ratio (logged and
    saved in `pretrain.json`) can be lower, much lower for frame masking over few time slots."""
    query_ratio: float | None = None
    """`motion_aware` only: share of all cubes the decoder reconstructs (None: every hidden cube)."""
    motion_visible: Literal["top", "random"] = "top"
    """`motion_aware` only: the encoder sees the highest-ranked of the kept cubes (`top`) or a random draw among them
    (`random`, EVEREST's official pretraining code)."""
    motion_energy: Literal["pixels", "embedding"] = "pixels"
    """`motion_aware` only: rank cubes by their mean absolute pixel change (`pixels`) or by the L2 distance of their
    embeddings under the model's own tokenizer (`embedding`, EVEREST's measure)."""
    target: Literal["norm_pix", "pixels", "hog", "teacher"] = "pixels"
    """`hog`: MaskFeat's HOG histograms ([tubemask.hog][]); `teacher`: the features of the frozen encoder saved at
    `--pretrain.teacher` ([tubemask.teacher][])."""
    teacher: Path | None = None
    """`target teacher`: a `pretrained.pt` of this recipe (same model options) whose encoder is the teacher."""
    loss: Literal["mse", "smooth_l1"] = "mse"
    """The reconstruction loss over the queried cubes: mean squared error (VideoMAE), or smooth L1 (MVD's, for teacher
    features; [tubemask.losses][])."""
    flip: bool = True
    """Random horizontal flips of pretraining clips (no labels are used, so mirrored classes are not confused)."""
    probe_every: int = 500
    """Diagnostics and linear probe every this many steps (and at the start and the end)."""


@dataclass
class Split:
    """Clips (uint8 `[n 3 t h w]`) and their labels (`[n]`; -1 for the unlabelled pool)."""

    clips: torch.Tensor
    labels: torch.Tensor


def normalise(clips: torch.Tensor) -> torch.Tensor:
    """uint8 `[b 3 t h w]` -> float, normalised with `PIXEL_MEAN` / `PIXEL_STD`."""
    return normalize_batch(clips, PIXEL_MEAN, PIXEL_STD)


def vit_size(m: ModelConfig) -> ViTSize:
    return ViTSize(m.embed_dim, m.depth, m.num_heads, m.decoder_dim, m.decoder_depth, m.decoder_heads)


def render(d: DataConfig, count: int, seed: int) -> Split:
    """`count` clips of the configured task with dataset seed `seed` (classes in turn)."""
    if d.task == "scenes":
        if d.num_classes != len(SCENE_CLASSES):
            raise ValueError(f"--data.num-classes={d.num_classes}: the scenes task has {len(SCENE_CLASSES)} classes")
        clips, labels = render_scene_dataset(
            count,
            num_frames=d.frames,
            size=(d.size, d.size),
            seed=seed,
            background=d.scene_background,
            distractors=d.distractors,
            object_size=d.object_size,
        )
    else:
        clips, labels = render_motion_dataset(
            count,
            num_classes=d.num_classes,
            num_frames=d.frames,
            size=(d.size, d.size),
            seed=seed,
            background=d.background,
        )
    return Split(clips, labels)


def make_splits(d: DataConfig, seed: int) -> dict[str, Split]:
    """Disjoint sets for one seed (each set has its own dataset seed, so no clip repeats across sets): `train`, `val`,
    `test`, `probe_train`, `probe_test` and `pool`, the labelled training set plus `(pool_factor - 1)` times as many
    clips of a further disjoint set (or, with `pool_domain="shifted"`, `pool_factor` times as many out-of-domain
    clips instead)."""
    if d.pool_factor < 1:
        raise ValueError(f"--data.pool-factor={d.pool_factor}; must be >= 1 (1: the labelled clips alone)")
    sizes = {
        "train": d.labels_per_class * d.num_classes,
        "val": d.val_per_class * d.num_classes,
        "test": d.test_per_class * d.num_classes,
        "probe_train": d.probe_per_class * d.num_classes,
        "probe_test": d.probe_per_class * d.num_classes,
    }
    out = {
        name: render(d, count, seed=10_000 * (seed + 1) + offset) for offset, (name, count) in enumerate(sizes.items())
    }
    if d.pool_domain == "shifted":
        count = round(d.pool_factor * sizes["train"])
        clips, _ = render_motion_dataset(
            count,
            num_classes=12,
            num_frames=d.frames,
            size=(d.size, d.size),
            seed=10_000 * (seed + 1) + 8,
            background="texture",
        )
        out["pool"] = Split(clips, torch.full((count,), -1))
        return out
    extra = round((d.pool_factor - 1) * sizes["train"])
    extra_clips = render(d, extra, seed=10_000 * (seed + 1) + 9).clips
    out["pool"] = Split(torch.cat([out["train"].clips, extra_clips]), torch.full((sizes["train"] + extra,), -1))
    return out


def make_masker(p: PretrainOptions, tokenizer: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """The pretraining masker of `--pretrain.mask` at `--pretrain.mask-ratio` (`tokenizer`: the model's cube
    embedding, which `--pretrain.motion-energy embedding` ranks by).

    Raises:
        ValueError: when a `motion_aware` option is set for another mask, or the embedding energy lacks `tokenizer`.
    """
    if p.mask == "motion_aware":
        embed = None
        if p.motion_energy == "embedding":
            if tokenizer is None:
                raise ValueError("--pretrain.motion-energy embedding ranks by the model's tokenizer: pass tokenizer=")
            embed = tokenizer
        return MotionAwareMasker(p.mask_ratio, query_ratio=p.query_ratio, visible=p.motion_visible, embed=embed)
    if p.query_ratio is not None or p.motion_visible != "top" or p.motion_energy != "pixels":
        raise ValueError(
            f"--pretrain.query-ratio / --pretrain.motion-visible / --pretrain.motion-energy apply to --pretrain.mask "
            f"motion_aware only, not to {p.mask!r}"
        )
    if p.mask == "motion_guided":
        return MotionGuidedMasker(p.mask_ratio)
    return {"tube": TubeMasker, "random": RandomMasker, "frame": FrameMasker}[p.mask](p.mask_ratio)


def make_target(p: PretrainOptions, m: ModelConfig):
    """The reconstruction target of `--pretrain.target` (a built-in's name, or a HOG / teacher piece)."""
    if p.target == "hog":
        return HOGTarget()
    if p.target == "teacher":
        if p.teacher is None or not p.teacher.is_file():
            raise FileNotFoundError(f"--pretrain.teacher: {p.teacher} is not a file (a pretrained.pt of this recipe)")
        teacher = videomae_pretrain(vit_size(m), tubelet_size=m.tubelet_size, patch_size=m.patch_size)
        teacher.load_state_dict(torch.load(p.teacher, map_location="cpu", weights_only=True))
        return TeacherTarget(teacher)
    return p.target


def make_loss(p: PretrainOptions) -> Loss:
    """The reconstruction loss of `--pretrain.loss`."""
    return reconstruction_smooth_l1 if p.loss == "smooth_l1" else reconstruction_mse


def study_grid(m: ModelConfig, d: DataConfig) -> tuple[int, int, int]:
    """The token grid `(t, h, w)` of the study's clips under its model's cubes."""
    return (d.frames // m.tubelet_size, d.size // m.patch_size, d.size // m.patch_size)


def effective_mask_ratio(p: PretrainOptions, m: ModelConfig, d: DataConfig) -> float:
    """The share of tokens actually masked: `num_masked / tokens` on the study's grid."""
    grid = study_grid(m, d)
    counting = replace(p, motion_energy="pixels")  # the count does not depend on what ranks the cubes
    return make_masker(counting).num_masked(grid) / math.prod(grid)
