"""Does VideoMAE pretraining make a ViT data-efficient? A seeded, pre-registered comparison on synthetic motion clips.

    python recipes/data_efficiency.py --quick          # CI-sized: a few minutes on 2 CPU cores
    python recipes/data_efficiency.py --seeds 0 1 2 --output-dir docs/results/data_efficiency/explore
    python recipes/data_efficiency.py --summarise-only --output-dir docs/results/data_efficiency/explore

For each seed:

1. Render the task's sets in memory (default: [tubemask.data.scenes][], several objects on a smooth, panning
   background, one actor whose motion is the class; `--data.task motion` is the older one-object task): a labelled
   training set, a validation set and a test set, all disjoint, and the pretraining pool: the labelled training
   clips themselves (`--data.pool-factor 1`, VideoMAE's setting of pretraining on the same small dataset), or with
   `(k - 1)` times as many unlabelled clips added (`--data.pool-factor k`).
2. Pretrain a small VideoMAE on the pool (tube masking). Every `--pretrain.probe-every` steps log the loss next to
   its trivial floor, token norm, participation ratio and a linear probe of frozen features (diagnostics only).
3. Run the arms, each on the same splits: `pretrained` (fine-tune the pretrained encoder), `scratch` (the same
   classifier from VideoMAE's initialisation), `pretrained_probe` and `random_probe` (a linear classifier on the
   frozen per-time-slot features of the pretrained / a randomly initialised encoder) and `handmade` (a linear
   classifier on hand-made motion features, [tubemask.eval.motion_features][]). Fine-tuning arms train at every
   learning rate of their grid with label-preserving augmentation, keep the epoch with the best validation accuracy
   and, of the grid, the learning rate with the best validation accuracy; probe arms choose their weight decay on
   validation. Only then is the test set scored.

Each (seed, arm) writes `seed{N}/{arm}.json` when it finishes and is skipped when that file exists, so a study
resumes where it stopped; `seed{N}/pretrain.json` holds the pretraining history and `seed{N}/pretrained.pt` the
weights (for reuse; not meant to be committed). `summary.md` is rebuilt from whatever result files exist: per arm
mean and standard error, and paired comparisons (two-sided paired t-test with its 95% interval, exact sign test).
Nothing is downloaded.
"""

import dataclasses
import functools
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import tyro

from tubemask import videomae_classifier
from tubemask.atomic import atomic_path
from tubemask.data import normalize_batch
from tubemask.data.scenes import SCENE_CLASSES, SceneBackground, render_scene_dataset
from tubemask.data.synthetic import Background, render_motion_dataset
from tubemask.eval.diagnostics import ProbeSet, linear_probe_accuracy, plot_diagnostics, pooled_features, probe_encoder
from tubemask.eval.motion_features import motion_features
from tubemask.eval.study import load_results, mean_se, result_path, summarise, test_scores
from tubemask.hog import HOGTarget
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.masking import FrameMasker, RandomMasker, TubeMasker, draw_mask
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.motion_aware import MotionAwareMasker
from tubemask.motion_guided import MotionGuidedMasker
from tubemask.teacher import TeacherTarget
from tubemask.train.optim import build_adamw
from tubemask.train.schedule import WarmupCosine

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

Arm = Literal["pretrained", "scratch", "pretrained_probe", "random_probe", "handmade"]
ARMS: tuple[Arm, ...] = ("pretrained", "scratch", "pretrained_probe", "random_probe", "handmade")


@dataclass
class DataConfig:
    """The synthetic task and its splits."""

    task: Literal["scenes", "motion"] = "scenes"
    """`scenes`: [tubemask.data.scenes][] (8 classes, several objects, panning background); `motion`: the older
    one-object task of [tubemask.data.synthetic][] (its first `num_classes` classes)."""
    num_classes: int = 8
    """Classes (the scenes task has exactly 8)."""
    frames: int = 8
    """Frames per clip."""
    size: int = 32
    """Frame height and width in pixels."""
    background: Background = "black"
    """The motion task's background: `texture`, `flat` or `black`."""
    scene_background: SceneBackground = "panning"
    """The scenes task's background: `panning`, `smooth` or `black`."""
    distractors: int = 1
    """Scenes task: objects crossing the frame in straight lines besides the actor and its partner."""
    object_size: float = 0.13
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
    target: Literal["norm_pix", "pixels", "hog", "teacher"] = "pixels"
    """`hog`: MaskFeat's HOG histograms ([tubemask.hog][]); `teacher`: the features of the frozen encoder saved at
    `--pretrain.teacher` ([tubemask.teacher][])."""
    teacher: Path | None = None
    """`target teacher`: a `pretrained.pt` of this recipe (same model options) whose encoder is the teacher."""
    flip: bool = True
    """Random horizontal flips of pretraining clips (no labels are used, so mirrored classes are not confused)."""
    probe_every: int = 500
    """Diagnostics and linear probe every this many steps (and at the start and the end)."""


@dataclass
class FinetuneOptions:
    """Supervised training of the two fine-tuning arms on the labelled set (the same for both)."""

    epochs: int = 60
    """Epochs at most; the epoch with the best validation accuracy is kept (checked every `eval_every`)."""
    eval_every: int = 2
    """Validation every this many epochs (and after the last)."""
    batch_size: int = 16
    pretrained_lrs: tuple[float, ...] = (2.5e-4, 5e-4, 1e-3, 2e-3)
    """The pretrained arm's learning-rate grid (peak AdamW lr, betas 0.9 / 0.999)."""
    scratch_lrs: tuple[float, ...] = (1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3)
    """The scratch arm's learning-rate grid, wider: a model from scratch is tuned at least as hard as the pretrained
    one."""
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


@dataclass
class ExperimentConfig:
    """The arms of a data-efficiency study, over several seeds, one result file per (seed, arm)."""

    output_dir: Path = Path("outputs/data_efficiency")
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[Arm, ...] = ARMS
    """Arms to run (each needs its own result file; the pretraining runs once per seed for the arms that need it)."""
    quick: bool = False
    """CI-sized run: tiny sets, short pretraining and fine-tuning, one learning rate per arm."""
    stage: Literal["all", "pretrain"] = "all"
    """`pretrain` stops after pretraining and its diagnostics (for scouting designs)."""
    summarise_only: bool = False
    """Rebuild `summary.md` and the plot from the result files in `--output-dir`; run nothing."""
    threads: int = 2
    """`torch.set_num_threads`."""
    baselines_dir: Path | None = None
    """Take the arms that do not depend on pretraining (`scratch`, `random_probe`, `handmade`) from the result files
    of another study with the same task, splits, model and fine-tuning options (checked against its `config.json`),
    e.g. when comparing pretraining designs; they are neither rerun nor copied."""
    pretrained_dir: Path | None = None
    """Take each seed's encoder from `DIR/seed{N}/pretrained.pt` of an earlier study instead of pretraining (for
    fine-tuning-side comparisons such as label budgets)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainOptions = field(default_factory=PretrainOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)


def apply_quick(cfg: ExperimentConfig) -> ExperimentConfig:
    """Shrink a configuration to minutes (keeps every code path: pretraining, probes, every arm, the choices)."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, labels_per_class=4, val_per_class=4, test_per_class=8, probe_per_class=6, pool_factor=4.0
        ),
        pretrain=dataclasses.replace(cfg.pretrain, steps=40, batch_size=16, warmup_steps=5, probe_every=20),
        finetune=dataclasses.replace(
            cfg.finetune,
            epochs=4,
            batch_size=8,
            warmup_epochs=1,
            pretrained_lrs=cfg.finetune.pretrained_lrs[1:2],
            scratch_lrs=cfg.finetune.scratch_lrs[2:3],
            probe_weight_decays=cfg.finetune.probe_weight_decays[:2],
        ),
    )


def normalise(clips: torch.Tensor) -> torch.Tensor:
    """uint8 `[b 3 t h w]` -> float, normalised with `MEAN` / `STD`."""
    return normalize_batch(clips, MEAN, STD)


def vit_size(m: ModelConfig) -> ViTSize:
    return ViTSize(m.embed_dim, m.depth, m.num_heads, m.decoder_dim, m.decoder_depth, m.decoder_heads)


@dataclass
class Split:
    clips: torch.Tensor
    labels: torch.Tensor


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


def make_data(cfg: ExperimentConfig, seed: int) -> dict[str, Split]:
    """Disjoint sets for one seed (each set has its own dataset seed, so no clip repeats across sets); the pool is
    the labelled training set plus `(pool_factor - 1)` times as many clips of a further disjoint set."""
    d = cfg.data
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


def probe_set(data: dict[str, Split]) -> ProbeSet:
    return ProbeSet(
        data["probe_train"].clips, data["probe_train"].labels, data["probe_test"].clips, data["probe_test"].labels
    )


def make_masker(p: PretrainOptions):
    """The pretraining masker of `--pretrain.mask` at `--pretrain.mask-ratio`."""
    if p.mask == "motion_aware":
        return MotionAwareMasker(p.mask_ratio, query_ratio=p.query_ratio)
    if p.mask == "motion_guided":
        return MotionGuidedMasker(p.mask_ratio)
    return {"tube": TubeMasker, "random": RandomMasker, "frame": FrameMasker}[p.mask](p.mask_ratio)


def make_target(cfg: ExperimentConfig):
    """The reconstruction target of `--pretrain.target` (a built-in's name, or a HOG / teacher piece)."""
    p, m = cfg.pretrain, cfg.model
    if p.target == "hog":
        return HOGTarget()
    if p.target == "teacher":
        if p.teacher is None or not p.teacher.is_file():
            raise FileNotFoundError(f"--pretrain.teacher: {p.teacher} is not a file (a pretrained.pt of this recipe)")
        teacher = videomae_pretrain(vit_size(m), tubelet_size=m.tubelet_size, patch_size=m.patch_size)
        teacher.load_state_dict(torch.load(p.teacher, map_location="cpu", weights_only=True))
        return TeacherTarget(teacher)
    return p.target


def effective_mask_ratio(cfg: ExperimentConfig) -> float:
    """The share of tokens actually masked: `num_masked / tokens` on this configuration's grid."""
    m = cfg.model
    grid = (cfg.data.frames // m.tubelet_size, cfg.data.size // m.patch_size, cfg.data.size // m.patch_size)
    return make_masker(cfg.pretrain).num_masked(grid) / math.prod(grid)


def pretrain(cfg: ExperimentConfig, data: dict[str, Split], seed: int, log) -> tuple[dict, list[dict]]:
    """Masked-autoencoder pretraining; returns the model state dict and the diagnostic history."""
    p, m = cfg.pretrain, cfg.model
    torch.manual_seed(seed)
    model = videomae_pretrain(
        vit_size(m),
        tubelet_size=m.tubelet_size,
        patch_size=m.patch_size,
        target=make_target(cfg),
        pixel_mean=MEAN,
        pixel_std=STD,
    )
    optimizer = build_adamw(model, lr=p.lr, weight_decay=p.weight_decay, betas=(0.9, 0.95))
    schedule = WarmupCosine(total_steps=p.steps, warmup_steps=p.warmup_steps, base_lr=p.lr, min_lr=p.lr * 0.01)
    masker = make_masker(p)
    gen = torch.Generator().manual_seed(seed)
    pool = data["pool"].clips

    def encode(clips: torch.Tensor) -> torch.Tensor:
        model.eval()
        return model.forward_features(normalise(clips))

    probes = probe_set(data)
    time_slots = cfg.data.frames // m.tubelet_size

    history: list[dict] = []
    window: list[tuple[float, float]] = []
    start = time.perf_counter()
    for step in range(p.steps + 1):
        if step % p.probe_every == 0 or step == p.steps:
            row = {"step": step, **probe_encoder(encode, probes, time_slots=time_slots)}
            if window:
                row["loss"] = statistics.fmean(x for x, _ in window)
                row["zero_floor"] = statistics.fmean(y for _, y in window)
                window.clear()
            row["seconds"] = round(time.perf_counter() - start, 1)
            history.append(row)
            log("pretrain " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if step == p.steps:
            break
        model.train()
        schedule.step(optimizer, step)
        idx = torch.randint(pool.shape[0], (p.batch_size,), generator=gen)
        video = normalise(pool[idx])
        if p.flip:
            flip = torch.rand(p.batch_size, generator=gen) < 0.5
            video = torch.where(flip.view(-1, 1, 1, 1, 1), video.flip(-1), video)
        grid = model.grid(video.shape)
        if isinstance(masker, MotionAwareMasker):
            mask, decoder_mask = masker.decoder_mask(p.batch_size, grid, generator=gen, video=video)
            out = model(video, mask, decoder_mask=decoder_mask, num_queried=masker.num_queried(grid))
        else:
            out = model(video, draw_mask(masker, p.batch_size, grid, generator=gen, video=video))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append((out.loss.item(), out.target.square().mean().item()))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def augment(video: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation of a normalised batch `[b c t h w]`: each clip shifted by up to `shift` pixels
    (edges replicated, the same shift for every frame) and its brightness and contrast jittered by up to 10%."""
    b = video.shape[0]
    out = torch.empty_like(video)
    padded = F.pad(video, (shift, shift, shift, shift, 0, 0), mode="replicate") if shift else video
    h, w = video.shape[-2:]
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=gen)
    for i in range(b):
        y, x = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = padded[i, :, :, y : y + h, x : x + w]
    scale = 1 + 0.1 * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1)
    bias = 0.1 * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1) / STD[0]
    return out * scale + bias


def finetune(
    cfg: ExperimentConfig, data: dict[str, Split], seed: int, lr: float, pretrained: dict | None
) -> dict[str, float]:
    """Train a classifier (pretrained encoder or scratch) on the labelled set, keep the epoch with the best
    validation accuracy, and report its train / val / test accuracy."""
    f, m = cfg.finetune, cfg.model
    torch.manual_seed(seed)
    model = videomae_classifier(
        vit_size(m),
        num_classes=cfg.data.num_classes,
        tubelet_size=m.tubelet_size,
        patch_size=m.patch_size,
        drop_path_rate=f.drop_path,
        head_dropout=f.head_dropout,
    )
    if pretrained is not None:
        load_pretrained_encoder(model, pretrained, strict=True)
    optimizer = build_adamw(
        model, lr=lr, weight_decay=f.weight_decay, betas=(0.9, 0.999), layer_decay=f.layer_decay, num_layers=m.depth
    )
    train = data["train"]
    n = train.clips.shape[0]
    per_epoch = math.ceil(n / f.batch_size)
    total = f.epochs * per_epoch
    schedule = WarmupCosine(total_steps=total, warmup_steps=f.warmup_epochs * per_epoch, base_lr=lr, min_lr=lr * 0.01)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    best = {"val": -1.0}
    best_state = None
    for epoch in range(1, f.epochs + 1):
        order = torch.randperm(n, generator=gen)
        model.train()
        for start in range(0, n, f.batch_size):
            idx = order[start : start + f.batch_size]
            schedule.step(optimizer, step)
            video = normalise(train.clips[idx])
            if f.augment:
                video = augment(video, f.shift, gen)
            loss = F.cross_entropy(model(video), train.labels[idx], label_smoothing=f.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
        if epoch % f.eval_every == 0 or epoch == f.epochs:
            val = accuracy(model, data["val"])
            if val > best["val"]:  # ties keep the earlier epoch
                best = {"val": val, "epoch": epoch}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {**{name: accuracy(model, data[name]) for name in ("train", "val", "test")}, "epoch": best["epoch"]}


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: Split, batch: int = 128) -> float:
    model.eval()
    correct = 0
    for start in range(0, split.clips.shape[0], batch):
        logits = model(normalise(split.clips[start : start + batch]))
        correct += int((logits.argmax(dim=1) == split.labels[start : start + batch]).sum())
    return correct / split.clips.shape[0]


@torch.no_grad()
def encoder_features(cfg: ExperimentConfig, state: dict | None, seed: int, clips: torch.Tensor) -> torch.Tensor:
    """Frozen per-time-slot features `[n e]` of the pretraining encoder with weights `state` (None: its random
    initialisation under `seed`)."""
    m = cfg.model
    torch.manual_seed(seed)
    model = videomae_pretrain(vit_size(m), tubelet_size=m.tubelet_size, patch_size=m.patch_size)
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    slots = cfg.data.frames // m.tubelet_size
    return torch.cat(
        [
            pooled_features(model.forward_features(normalise(clips[i : i + 128])), slots)[1]
            for i in range(0, len(clips), 128)
        ]
    )


def probe_arm(cfg: ExperimentConfig, data: dict[str, Split], features) -> dict:
    """A linear classifier on frozen features: the weight decay chosen on validation, then scored on test once."""
    x = {name: features(data[name].clips) for name in ("train", "val", "test")}
    y = {name: data[name].labels for name in ("train", "val", "test")}
    runs = []
    for wd in cfg.finetune.probe_weight_decays:
        val = linear_probe_accuracy(
            x["train"], y["train"], x["val"], y["val"], weight_decay=wd, num_classes=cfg.data.num_classes
        )
        runs.append({"weight_decay": wd, "val": val})
    chosen = max(runs, key=lambda r: (r["val"], r["weight_decay"]))  # ties: the stronger penalty
    chosen = {
        **chosen,
        "test": linear_probe_accuracy(
            x["train"],
            y["train"],
            x["test"],
            y["test"],
            weight_decay=chosen["weight_decay"],
            num_classes=cfg.data.num_classes,
        ),
    }
    return {"runs": runs, "chosen": chosen}


def finetune_arm(cfg: ExperimentConfig, data: dict[str, Split], seed: int, state: dict | None, lrs, log, arm) -> dict:
    """Every learning rate of the arm's grid; the one with the best validation accuracy is chosen (ties: smaller)."""
    runs = []
    for lr in lrs:
        t0 = time.perf_counter()
        runs.append({"lr": lr, **finetune(cfg, data, seed, lr, state), "seconds": round(time.perf_counter() - t0, 1)})
        log(f"seed {seed} {arm} lr={lr:g}: " + " ".join(f"{k}={v}" for k, v in runs[-1].items() if k != "lr"))
    chosen = max(runs, key=lambda r: (r["val"], -r["lr"]))
    edge = len(lrs) > 1 and chosen["lr"] in (min(lrs), max(lrs))
    return {"runs": runs, "chosen": chosen, "chosen_on_grid_edge": edge}


COMPARISONS = (
    ("pretrained", "scratch"),
    ("pretrained", "handmade"),
    ("pretrained", "random_probe"),
    ("pretrained_probe", "random_probe"),
    ("scratch", "handmade"),
)
"""Paired comparisons reported in the summary (first minus second)."""


def plot(results: dict[int, dict[str, dict]], histories: dict[int, list[dict]], num_classes: int, path: Path) -> None:
    """Test accuracy per arm and seed, and the pretraining curves (loss vs floor; probe and participation ratio)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    arms = [arm for arm in ARMS if any(arm in r for r in results.values())]
    for i, arm in enumerate(arms):
        values = list(test_scores(results, arm).values())
        mean, se = mean_se(values)
        ax.bar(
            i,
            mean,
            yerr=0 if math.isnan(se) else se,
            color="tab:blue" if "pretrained" in arm else "tab:grey",
            alpha=0.6,
        )
        ax.scatter([i] * len(values), values, color="k", zorder=3, s=8)
    ax.axhline(1.0 / num_classes, ls="--", color="r", label="chance")
    ax.set_xticks(range(len(arms)), [a.replace("_", "\n") for a in arms], fontsize=8)
    ax.set_ylabel("test top-1")
    ax.legend()
    for seed, hist in sorted(histories.items()):
        steps = [r["step"] for r in hist if "loss" in r]
        axes[1].plot(steps, [r["loss"] for r in hist if "loss" in r], label=f"loss seed {seed}")
        axes[1].plot(steps, [r["zero_floor"] for r in hist if "loss" in r], ls="--", label=f"floor seed {seed}")
        all_steps = [r["step"] for r in hist]
        axes[2].plot(all_steps, [r["probe_per_time"] for r in hist], label=f"probe seed {seed}")
        axes[2].plot(all_steps, [r["participation_ratio"] / 20 for r in hist], ls=":", label=f"PR/20 seed {seed}")
    axes[1].set_xlabel("pretraining step")
    axes[1].set_title("loss vs zero floor")
    axes[2].set_xlabel("pretraining step")
    axes[2].set_title("linear probe (per-time features), participation ratio / 20")
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=str))


PRETRAINING_FREE = ("scratch", "random_probe", "handmade")
"""Arms whose result does not depend on the pretraining design (same splits, model and fine-tuning options)."""


def check_baselines(cfg: ExperimentConfig) -> None:
    """Refuse a `--baselines-dir` whose study rendered other splits or trained another model."""
    path = cfg.baselines_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--baselines-dir: {path} does not exist (not a study folder)")
    theirs, ours = json.loads(path.read_text()), json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    pool_fields = ("pool_factor", "pool_domain")
    for section in ("data", "model", "finetune"):
        a = {k: v for k, v in theirs.get(section, {}).items() if k not in pool_fields}
        b = {k: v for k, v in ours[section].items() if k not in pool_fields}
        if a != b:
            changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise ValueError(f"--baselines-dir {cfg.baselines_dir}: its {section} options differ in {changed}")


def study_results(cfg: ExperimentConfig) -> dict[int, dict[str, dict]]:
    """This study's result files, with the pretraining-free arms of `--baselines-dir` where this study has none."""
    results = load_results(cfg.output_dir, ARMS)
    if cfg.baselines_dir is not None:
        for seed, arms in load_results(cfg.baselines_dir, PRETRAINING_FREE).items():
            if seed in cfg.seeds or seed in results:
                results.setdefault(seed, {})
                for arm, result in arms.items():
                    results[seed].setdefault(arm, result)
    return results


def write_summary(cfg: ExperimentConfig) -> str:
    """Rebuild `summary.md` and `data_efficiency.png` from the result files in `cfg.output_dir`."""
    results = study_results(cfg)
    histories = {}
    for folder in cfg.output_dir.glob("seed*/pretrain.json"):
        histories[int(folder.parent.name[4:])] = json.loads(folder.read_text())["history"]
    table = summarise(results, ARMS, COMPARISONS, chance=1 / cfg.data.num_classes)
    with atomic_path(cfg.output_dir / "summary.md") as tmp:
        Path(tmp).write_text(table)
    if results or histories:
        plot(results, histories, cfg.data.num_classes, cfg.output_dir / "data_efficiency.png")
    return table


def pretrained_state(cfg: ExperimentConfig, data: dict[str, Split], seed: int, log) -> dict:
    """This seed's pretrained weights: from `--pretrained-dir`, from this study's `seed{N}/pretrained.pt`, or by
    pretraining now (then saved with its history)."""
    folder = cfg.output_dir / f"seed{seed}"
    if cfg.pretrained_dir is not None:
        source = cfg.pretrained_dir / f"seed{seed}" / "pretrained.pt"
        if not source.is_file():
            raise FileNotFoundError(f"--pretrained-dir: {source} does not exist (run that seed's pretraining first)")
        log(f"seed {seed}: pretrained encoder from {source}")
        return torch.load(source, map_location="cpu", weights_only=True)
    if (folder / "pretrained.pt").is_file():
        return torch.load(folder / "pretrained.pt", map_location="cpu", weights_only=True)
    t0 = time.perf_counter()
    state, history = pretrain(cfg, data, seed, log)
    with atomic_path(folder / "pretrained.pt") as tmp:
        torch.save(state, tmp)
    ratio = effective_mask_ratio(cfg)
    log(f"seed {seed}: {cfg.pretrain.mask} masking, ratio {cfg.pretrain.mask_ratio:g} asked, {ratio:.4g} effective")
    summary = {"seed": seed, "mask": cfg.pretrain.mask, "mask_ratio": cfg.pretrain.mask_ratio}
    summary |= {"effective_mask_ratio": ratio, "pool_clips": int(data["pool"].clips.shape[0])}
    write_json(folder / "pretrain.json", {**summary, "history": history, "seconds": round(time.perf_counter() - t0, 1)})
    plot_diagnostics(history, folder / "pretrain.png", title=f"pretraining, seed {seed}")
    return state


def main(cfg: ExperimentConfig) -> dict[int, dict[str, dict]]:
    if cfg.quick:
        cfg = apply_quick(cfg)
    if not cfg.seeds:
        raise ValueError("--seeds: give at least one seed")
    if not cfg.arms:
        raise ValueError(f"--arms: give at least one of {', '.join(ARMS)}")
    if not cfg.finetune.pretrained_lrs or not cfg.finetune.scratch_lrs:
        raise ValueError("--finetune.pretrained-lrs / --finetune.scratch-lrs: give at least one learning rate each")
    if not cfg.finetune.probe_weight_decays:
        raise ValueError("--finetune.probe-weight-decays: give at least one weight decay")
    torch.set_num_threads(cfg.threads)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.baselines_dir is not None:
        check_baselines(cfg)
    if cfg.summarise_only:
        print(write_summary(cfg))
        return study_results(cfg)
    log_file = (cfg.output_dir / "log.txt").open("a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    config = dataclasses.asdict(cfg)
    write_json(cfg.output_dir / "config.json", config)
    log(f"config {json.dumps(config, default=str)}")
    began = time.perf_counter()
    lrs = {"pretrained": cfg.finetune.pretrained_lrs, "scratch": cfg.finetune.scratch_lrs}
    for seed in cfg.seeds:
        todo = [arm for arm in cfg.arms if not result_path(cfg.output_dir, seed, arm).is_file()]
        if cfg.baselines_dir is not None:
            todo = [
                a for a in todo if a not in PRETRAINING_FREE or not result_path(cfg.baselines_dir, seed, a).is_file()
            ]
        if cfg.stage == "pretrain":
            todo = []
        needs_pretraining = cfg.stage == "pretrain" or any(a in ("pretrained", "pretrained_probe") for a in todo)
        if not todo and not needs_pretraining:
            log(f"seed {seed}: every arm has its result file; skipped")
            continue
        t0 = time.perf_counter()
        data = make_data(cfg, seed)
        log(f"seed {seed}: data rendered in {time.perf_counter() - t0:.1f} s")
        state = pretrained_state(cfg, data, seed, log) if needs_pretraining else None
        for arm in todo:
            t0 = time.perf_counter()
            if arm in ("pretrained", "scratch"):
                result = finetune_arm(cfg, data, seed, state if arm == "pretrained" else None, lrs[arm], log, arm)
            elif arm == "handmade":
                result = probe_arm(cfg, data, motion_features)
            else:
                weights = state if arm == "pretrained_probe" else None
                result = probe_arm(cfg, data, functools.partial(encoder_features, cfg, weights, seed))
            result = {"seed": seed, "arm": arm, **result, "seconds": round(time.perf_counter() - t0, 1)}
            write_json(result_path(cfg.output_dir, seed, arm), result)
            log(f"seed {seed} {arm}: chosen {result['chosen']}")
    table = write_summary(cfg)
    log("\n" + table)
    log(f"done in {time.perf_counter() - began:.0f} s; results in {cfg.output_dir}")
    log_file.close()
    return study_results(cfg)


if __name__ == "__main__":
    main(tyro.cli(ExperimentConfig))
