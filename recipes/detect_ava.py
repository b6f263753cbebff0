"""VideoMAE action detection on AVA v2.2 (or a built-in synthetic AVA), top to bottom in one file.

    python recipes/detect_ava.py                                  # tiny model, synthetic AVA, CPU, under 2 minutes
    python recipes/detect_ava.py --finetune outputs/pretrain_ucf101/final.pt  # tiny, patch 8 like that recipe
    torchrun --nproc-per-node 8 recipes/detect_ava.py --data-root /data/ava --model base \\
        --finetune /ckpt/videomae_vit_b_k400_pretrain.pth

The model is VideoMAE's AVA detector (Tong et al., arXiv 2203.12602; REFERENCE.md): the ViT encoder over every token
of a 16 x 4 clip centred on the keyframe, its final norm, the tokens laid out as `[b, d, T, H, W]`, a temporal mean,
RoIAlign 7 x 7 (scale 1 / patch size) on each person box, a max pool and one linear layer to the 80 AVA actions. It
trains on the ground-truth boxes (optionally jittered) with a sigmoid binary cross-entropy per action, and is tested on
person detections with score >= 0.8, each action scored as sigmoid x the box's detection score; the metric is frame
mAP at IoU 0.5 over the 60 classes of the label map, Pascal-VOC AP, with the excluded timestamps left out
([`frame_average_precision`][tubemask.eval.ava.frame_average_precision]).

`--data-root` expects the AVA layout that SlowFast and the VideoMAE detection code use, each file overridable:

    <root>/videos/<video_id>.mkv|.mp4|.webm     the 15-minute cuts (900 s to 1800 s of each movie)
    <root>/annotations/ava_train_v2.2.csv, ava_val_v2.2.csv, ava_val_excluded_timestamps_v2.2.csv,
        ava_action_list_v2.2_for_activitynet_2019.pbtxt, ava_detection_val_boxes_and_labels.csv (person boxes)

REFERENCE.md gives the head and the test protocol, not the optimiser settings of the paper's AVA runs; the defaults
with `--data-root` are this project's fine-tuning settings (AdamW, layer decay 0.75, drop path 0.2, cosine schedule),
printed at the start of the log. Without `--data-root` a synthetic AVA (textured "actors" that move left, move right,
stay or flicker, with person detections that include false positives) is generated once into `.cache/` and a
CPU-sized run trains on it. Writes checkpoints, `metrics.jsonl`, `test_results.json` (frame mAP and AP per class) and
`final.pt` to `--output-dir`; `--resume` continues exactly from the latest checkpoint.
"""

import dataclasses
import json
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import tyro
from torch.utils.data import DataLoader
from tqdm import tqdm

from tubemask.data import (
    AVADataset,
    AVAFrame,
    DecodeOptions,
    FailureLog,
    collate_ava,
    make_synthetic_ava,
    read_ava_boxes,
    read_ava_exclusions,
    read_ava_label_map,
)
from tubemask.detection import ActionDetector, videomae_action_detector
from tubemask.eval.ava import FrameMAPResult, frame_average_precision
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.models import SIZES
from tubemask.pos_embed import ResizedSinusoidPositionEmbedding
from tubemask.shapes import shape_checks_disabled
from tubemask.train.checkpoint import CheckpointManager, rng_state, save_checkpoint, set_rng_state
from tubemask.train.distributed import cleanup, setup_distributed, wrap_ddp, wrap_fsdp2
from tubemask.train.metrics import JsonlLogger, ThroughputMeter, plot_loss_curve
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.optim import build_adamw
from tubemask.train.sampler import resumable_loader
from tubemask.train.schedule import WarmupCosine, scaled_lr

REPO = Path(__file__).resolve().parent.parent
TUBELET = 2  # frames per cube, as in every VideoMAE checkpoint


@dataclass
class DetectConfig:
    """Options of the AVA detection recipe. `None` means "the preset's value" (full AVA with --data-root, a CPU-sized
    run on synthetic data without)."""

    data_root: Path | None = None
    """AVA layout (videos/ + annotations/); absent: the built-in synthetic AVA."""
    video_dir: Path | None = None
    """Folder of the videos, `<video_id>.<ext>` (default: <data-root>/videos)."""
    train_csv: Path | None = None
    """Ground-truth boxes to train on (default: annotations/ava_train_v2.2.csv)."""
    val_csv: Path | None = None
    """Ground-truth boxes to test against (default: annotations/ava_val_v2.2.csv)."""
    val_detections: Path | None = None
    """Person detections to classify at test time (default: annotations/ava_detection_val_boxes_and_labels.csv)."""
    label_map: Path | None = None
    """pbtxt of the evaluated classes (default: annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt)."""
    exclusions: Path | None = None
    """Timestamps left out of the evaluation (default: annotations/ava_val_excluded_timestamps_v2.2.csv)."""
    output_dir: Path = Path("outputs/detect_ava")
    """Checkpoints, metrics, test results and final.pt go here."""
    finetune: Path | None = None
    """Pretrained (or fine-tuned) encoder: tubemask final.pt / encoder.pt or an official VideoMAE checkpoint; absent:
    from scratch."""
    model: Literal["tiny", "small", "base", "large", "huge"] | None = None
    """Size preset (--data-root default: base, the paper's; synthetic: tiny). Must match the --finetune checkpoint."""
    patch_size: int | None = None
    """Pixels per cube side (--data-root default: 16; synthetic: 8). Must match the --finetune checkpoint."""
    num_classes: int = 80
    """Logits of the head (AVA's action ids 1..80; only the label map's classes are evaluated)."""
    epochs: int | None = None
    """Epochs of the schedule."""
    max_steps: int | None = None
    """Stop after this many optimizer steps WITHOUT changing the schedule (which follows --epochs)."""
    batch_size: int | None = None
    """Keyframes (clips) per process and micro-step."""
    accum_steps: int = 1
    """Gradient accumulation micro-steps per optimizer step."""
    lr: float | None = None
    """Absolute peak learning rate; default base lr x total batch in clips / 256."""
    base_lr: float | None = None
    """Learning rate per 256 clips of total batch."""
    min_lr: float = 1e-6
    """Final learning rate of the cosine."""
    warmup_epochs: float | None = None
    """Linear warmup."""
    weight_decay: float | None = None
    """AdamW weight decay, not on norms, biases and positions."""
    layer_decay: float | None = None
    """Layer-wise lr decay: block i of L gets lr x decay^(L - i), the embeddings decay^(L + 1)."""
    drop_path: float | None = None
    """Stochastic depth rate of the last block, rising linearly from 0."""
    head_dropout: float | None = None
    """Dropout before the linear head (default 0: VideoMAE's AVA head has none)."""
    num_frames: int | None = None
    """Frames per clip, centred on the keyframe (--data-root default: 16)."""
    sampling_rate: int | None = None
    """Frame stride (--data-root default: 4, at AVA's 30 fps)."""
    short_side: int | None = None
    """Test-time short side in pixels (--data-root default: 256); the long side is rounded to a multiple of the patch
    size."""
    scale_jitter: tuple[int, int] | None = None
    """Training short side drawn from this range (--data-root default: 256 to 320)."""
    crop_size: int | None = None
    """Training crop, a multiple of --patch-size (--data-root default: 224)."""
    flip: float | None = None
    """Horizontal flip probability in training, boxes flipped along (--data-root default: 0.5; synthetic: 0, its
    actions are directions)."""
    box_jitter: float | None = None
    """Jitter of the training ground-truth boxes, as a fraction of their size (--data-root default: 0.05; synthetic:
    0)."""
    seek_mode: Literal["exact", "approximate"] | None = None
    """torchcodec seeking (--data-root default: approximate, as opening a 15-minute movie in exact mode scans all its
    ~27k packets: 77 ms against 6 ms per open, measured on a 27k-frame file; synthetic: exact)."""
    detection_threshold: float = 0.8
    """Person detections with a lower score are not classified at test time."""
    eval_every: int = 1
    """Frame-mAP evaluation on the validation detections every N epochs; 0 = only the final test."""
    workers: int = 2
    """DataLoader worker processes per training process."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    """Autocast precision (default bf16 on CUDA, fp32 on CPU). The loss is always computed in float32."""
    compile: bool = False
    """torch.compile the model for training (runtime shape checks are off for the run)."""
    grad_checkpointing: bool = False
    """Recompute encoder activations in backward (less memory, ~30% more compute)."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation and drop path."""
    checkpoint_every: int | None = None
    """Save a checkpoint every N optimizer steps (default: once per epoch)."""
    keep_checkpoints: int = 3
    """Checkpoints kept in --output-dir."""
    resume: bool = False
    """Continue from the latest checkpoint in --output-dir."""
    max_bad_steps: int = 5
    """Non-finite losses in a row that abort the run."""
    tensorboard: bool = False
    """Also write TensorBoard scalars."""
    synthetic_videos: int = 96
    """Synthetic AVA size in videos (two thirds train); each gives a keyframe per second but the first."""
    synthetic_seconds: int = 3
    """Length of each synthetic video (many short videos: the actors' looks vary more than with few long ones)."""


FULL = dict(
    model="base",
    patch_size=16,
    epochs=30,
    batch_size=8,
    base_lr=2.5e-4,
    warmup_epochs=2.0,
    weight_decay=0.05,
    layer_decay=0.75,
    drop_path=0.2,
    head_dropout=0.0,  # REFERENCE.md's head: max pool -> Linear, no dropout
    num_frames=16,
    sampling_rate=4,
    short_side=256,
    scale_jitter=(256, 320),
    crop_size=224,
    flip=0.5,
    box_jitter=0.05,
    seek_mode="approximate",
)
SYNTHETIC = dict(
    FULL,
    model="tiny",
    patch_size=8,
    epochs=10,
    batch_size=4,
    base_lr=0.2,  # 3.1e-3 at 4 clips per step: a tiny model from scratch on 128 keyframes
    warmup_epochs=1.0,
    layer_decay=1.0,
    drop_path=0.0,
    head_dropout=0.0,
    num_frames=8,
    sampling_rate=2,
    short_side=64,
    scale_jitter=(64, 80),
    crop_size=64,
    flip=0.0,  # "move left" flipped is "move right": the synthetic labels are directions
    box_jitter=0.0,
    seek_mode="exact",
)


def resolve(cfg: DetectConfig) -> DetectConfig:
    """Fill every `None` option from the preset (full AVA with --data-root, synthetic without)."""
    preset = FULL if cfg.data_root is not None else SYNTHETIC
    values = {k: preset[k] for k in preset if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **values)


@dataclass(frozen=True)
class AVAFiles:
    """Where the run reads its videos and annotations."""

    video_dir: Path
    train_csv: Path
    val_csv: Path
    val_detections: Path
    label_map: Path
    exclusions: Path | None
    time_offset: float


def ava_files(cfg: DetectConfig, *, is_main: bool) -> AVAFiles:
    """The AVA files under --data-root (each overridable), or the synthetic AVA generated once on rank 0."""
    if cfg.data_root is None:
        # one folder per size, so runs of other sizes do not clash
        root = REPO / ".cache" / f"synthetic_ava_{cfg.synthetic_videos}x{cfg.synthetic_seconds}s"
        size = dict(num_videos=cfg.synthetic_videos, seconds=cfg.synthetic_seconds, seed=0)
        if is_main:
            make_synthetic_ava(root, **size)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        synthetic = make_synthetic_ava(root, **size)  # complete by now: returns the paths
        return AVAFiles(
            video_dir=synthetic.video_root,
            train_csv=synthetic.train_csv,
            val_csv=synthetic.val_csv,
            val_detections=synthetic.val_detections_csv,
            label_map=synthetic.label_map,
            exclusions=synthetic.exclusions,
            time_offset=synthetic.time_offset,
        )
    notes = cfg.data_root / "annotations"
    files = AVAFiles(
        video_dir=cfg.video_dir or cfg.data_root / "videos",
        train_csv=cfg.train_csv or notes / "ava_train_v2.2.csv",
        val_csv=cfg.val_csv or notes / "ava_val_v2.2.csv",
        val_detections=cfg.val_detections or notes / "ava_detection_val_boxes_and_labels.csv",
        label_map=cfg.label_map or notes / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        exclusions=cfg.exclusions or notes / "ava_val_excluded_timestamps_v2.2.csv",
        time_offset=900.0,
    )
    for field in ("video_dir", "train_csv", "val_csv", "val_detections", "label_map"):
        path = getattr(files, field)
        if not path.exists():
            raise SystemExit(f"--{field.replace('_', '-')}: {path} does not exist (see the layout in --help)")
    if not files.exclusions.exists():
        files = dataclasses.replace(files, exclusions=None)
    return files


def build_dataset(cfg: DetectConfig, frames: Mapping, files: AVAFiles, *, train: bool) -> AVADataset:
    """Keyframe clips with their boxes: scale jitter, crop, flip and box jitter for training; resize only for test."""
    return AVADataset(
        frames,
        files.video_dir,
        train=train,
        num_frames=cfg.num_frames,
        frame_stride=cfg.sampling_rate,
        time_offset=files.time_offset,
        short_side=cfg.short_side,
        scale_jitter=tuple(cfg.scale_jitter),
        crop_size=cfg.crop_size,
        flip=cfg.flip if train else 0.0,
        box_jitter=cfg.box_jitter if train else 0.0,
        size_multiple=cfg.patch_size,
        decode=DecodeOptions(seek_mode=cfg.seek_mode),
        seed=cfg.seed,
    )


def build_model(cfg: DetectConfig) -> ActionDetector:
    """VideoMAE's AVA detector: encoder with its final norm, temporal mean, RoIAlign 7 x 7, max pool, linear.

    Positions: VideoMAE's sinusoid on the training crop's grid, resized bicubically for the full-frame test clips (as
    VideoMAE's AVA code does), so a token keeps the code of its place whatever the frame's aspect ratio."""
    side = cfg.crop_size // cfg.patch_size
    base_grid = (cfg.num_frames // TUBELET, side, side)
    return videomae_action_detector(
        cfg.model,
        num_classes=cfg.num_classes,
        tubelet_size=TUBELET,
        patch_size=cfg.patch_size,
        drop_path_rate=cfg.drop_path,
        head_dropout=cfg.head_dropout,
        pos_embed=ResizedSinusoidPositionEmbedding(SIZES[cfg.model].embed_dim, base_grid),
    )


def video_batches(dataset: AVADataset, indices: range, batch_size: int) -> list[list[int]]:
    """Runs of at most `batch_size` consecutive keyframes of one video."""
    batches: list[list[int]] = []
    for i in indices:
        same_video = batches and dataset.frames[batches[-1][-1]].video_id == dataset.frames[i].video_id
        if same_video and len(batches[-1]) < batch_size:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def detect(
    model: torch.nn.Module,
    dataset: AVADataset,
    cfg: DetectConfig,
    *,
    rank: int,
    world_size: int,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    show: bool,
) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    """Score every detection box of every keyframe: sigmoid of each action's logit x the box's detection score.

    Rank r scores the r-th of `world_size` contiguous shares of the keyframes, batched within one video (test clips
    keep each video's aspect ratio, so only clips of one video share a size); the result (normalised boxes, scores
    `[r, classes]` per frame key) is gathered on every rank."""
    was_training = model.training
    model.eval()
    share = range(rank * len(dataset) // world_size, (rank + 1) * len(dataset) // world_size)
    loader = DataLoader(
        dataset,
        batch_sampler=video_batches(dataset, share, max(1, cfg.batch_size)),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_ava,
        generator=torch.Generator(),  # a loader without one draws its worker seed from the global RNG
    )
    found: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for host in tqdm(loader, desc="detect", disable=not show, leave=False, file=sys.stdout):
        batch = host.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(batch.clips, batch.rois)
        scores = (torch.sigmoid(logits.float()) * batch.scores[:, None]).cpu()
        owner = host.rois[:, 0].long()  # the loader's CPU copy: no device round trip per keyframe
        for i, key in enumerate(host.keys):
            rows = owner == i
            found[key] = (host.norm_boxes[rows], scores[rows])
    model.train(was_training)
    if world_size > 1:
        parts: list = [None] * world_size
        torch.distributed.all_gather_object(parts, found)
        found = {key: value for part in parts for key, value in part.items()}
    return found


def evaluate(
    detections: Mapping, ground_truth: Mapping[tuple[str, int], AVAFrame], class_ids: list[int], excluded: set
) -> FrameMAPResult:
    """Frame mAP at IoU 0.5 over the label map's classes, the excluded timestamps left out, and (as the official
    evaluation script reads its detections) the 50 best-scored (box, action) pairs of each frame."""
    truth = {key: (frame.boxes, frame.labels) for key, frame in ground_truth.items()}
    return frame_average_precision(
        detections, truth, class_ids=class_ids, iou_threshold=0.5, excluded=excluded, max_detections_per_frame=50
    )


def main(cfg: DetectConfig) -> dict:
    """Run the detection fine-tuning and test; returns a summary dict. With `--compile` the runtime shape checks are
    off for the run (Dynamo cannot trace them)."""
    with shape_checks_disabled() if cfg.compile else nullcontext():
        return _train(cfg)


def _train(cfg: DetectConfig) -> dict:
    cfg = resolve(cfg)
    if cfg.crop_size is None or cfg.crop_size % cfg.patch_size or cfg.num_frames % TUBELET:
        raise SystemExit(
            f"--crop-size ({cfg.crop_size}) must be a multiple of --patch-size ({cfg.patch_size}) and --num-frames "
            f"({cfg.num_frames}) of {TUBELET}: training batches clips of one size, and its grid anchors the positions"
        )
    if not 0.0 <= cfg.detection_threshold <= 1.0:
        raise SystemExit(f"--detection-threshold must be in [0, 1], got {cfg.detection_threshold}")
    ctx = setup_distributed(cfg.device)
    device = ctx.device
    precision = cfg.precision or ("bf16" if device.type == "cuda" else "fp32")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    out = cfg.output_dir
    log = print if ctx.is_main else (lambda *a, **k: None)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank

    # ---- data -------------------------------------------------------------------------------------------------
    files = ava_files(cfg, is_main=ctx.is_main)
    train_frames = read_ava_boxes(files.train_csv, kind="ground_truth", num_classes=cfg.num_classes)
    val_truth = read_ava_boxes(files.val_csv, kind="ground_truth", num_classes=cfg.num_classes)
    val_boxes = read_ava_boxes(
        files.val_detections, kind="detections", num_classes=cfg.num_classes, min_score=cfg.detection_threshold
    )
    label_map = read_ava_label_map(files.label_map)
    class_ids = sorted(label_map)
    if class_ids[-1] > cfg.num_classes:
        raise SystemExit(f"{files.label_map}: class id {class_ids[-1]} is above --num-classes {cfg.num_classes}")
    excluded = read_ava_exclusions(files.exclusions) if files.exclusions is not None else set()
    dataset = build_dataset(cfg, train_frames, files, train=True)
    journal = str(FailureLog.journal_file(out, ctx.rank))  # this rank's and its workers' bad videos
    dataset.failures.journal = journal
    sampler, loader = resumable_loader(  # (epoch, index) keys, workers kept across epochs
        dataset,
        batch_size=cfg.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        workers=cfg.workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_ava,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (drop path) off the loader's seed
    )
    steps_per_epoch = sampler.batches_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:
        raise SystemExit(
            f"one epoch has {sampler.batches_per_epoch} batches, fewer than --accum-steps "
            f"{cfg.accum_steps}; lower --batch-size/--accum-steps or add keyframes"
        )
    total_steps = steps_per_epoch * cfg.epochs
    clips_per_step = cfg.batch_size * ctx.world_size * cfg.accum_steps
    lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.base_lr, clips_per_step)

    # ---- model, optimizer, schedule ------------------------------------------------------------------------------
    model = build_model(cfg).to(device)
    manager = CheckpointManager(out, keep_last=cfg.keep_checkpoints)
    state = manager.load_latest() if cfg.resume else None
    if cfg.resume and state is None:
        log(f"--resume: no checkpoint in {out}, starting from scratch")
    if state is None and ctx.is_main:
        FailureLog.remove_run_journals(out)  # a fresh run: bad videos met by an earlier run here are not ours
    if cfg.finetune is not None and state is None:  # a resumed run has the weights in its checkpoint
        log(f"--finetune: {load_pretrained_encoder(model, cfg.finetune)}")
    elif cfg.finetune is None:
        log("no --finetune checkpoint: the encoder starts from random weights")
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = build_adamw(
        model, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), layer_decay=cfg.layer_decay
    )
    schedule = WarmupCosine(
        total_steps=total_steps,
        warmup_steps=min(round(cfg.warmup_epochs * steps_per_epoch), total_steps),
        base_lr=lr,
        min_lr=cfg.min_lr,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    guard = NonFiniteGuard(cfg.max_bad_steps, checkpoint=manager.latest)
    torch.manual_seed(cfg.seed * 1_000_003 + ctx.rank)  # drop path and dropout differ between ranks

    step, epoch, batch_in_epoch = 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        schedule.load_state_dict(state["schedule"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        guard.skipped = state["skipped_steps"]
        set_rng_state(state["rng"])
        log(f"resumed from {manager.latest()} at step {step} (epoch {epoch}, batch {batch_in_epoch})")

    train_model = model
    if ctx.is_distributed:
        train_model = wrap_fsdp2(model, ctx) if cfg.model in ("large", "huge") else wrap_ddp(model, ctx)
    if cfg.compile:
        train_model = torch.compile(train_model)

    end_step = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    ckpt_every = cfg.checkpoint_every or steps_per_epoch
    train_boxes = sum(frame.boxes.shape[0] for frame in train_frames.values())
    log(
        f"tubemask AVA detection: {len(train_frames)} train keyframes ({train_boxes} boxes), {len(val_boxes)} test "
        f"keyframes with detections >= {cfg.detection_threshold}, {len(val_truth)} with ground truth, "
        f"{len(class_ids)} evaluated of {cfg.num_classes} classes, {len(excluded)} excluded timestamps"
    )
    log(
        f"model {cfg.model} (patch {cfg.patch_size}), clips of {cfg.num_frames} frames every {cfg.sampling_rate}; "
        f"train short side {cfg.scale_jitter[0]}-{cfg.scale_jitter[1]}, crop {cfg.crop_size}, flip {cfg.flip}, box "
        f"jitter {cfg.box_jitter}; test short side {cfg.short_side}, full frame; {cfg.seek_mode} seeking"
    )
    lr_note = f"= {cfg.base_lr:g} x {clips_per_step} / 256" if cfg.lr is None else "given by --lr"
    log(
        f"effective batch {clips_per_step} clips = {cfg.batch_size} x {ctx.world_size} processes x {cfg.accum_steps} "
        f"accumulation; lr {lr:.3g} ({lr_note}), layer decay {cfg.layer_decay}, weight decay {cfg.weight_decay}, "
        f"drop path {cfg.drop_path}, head dropout {cfg.head_dropout}"
    )
    log(
        f"{steps_per_epoch} steps per epoch, {cfg.epochs} epochs = {total_steps} steps, warmup "
        f"{schedule.warmup_steps} steps; device {device}, precision {precision}, {ctx.world_size} process(es)"
        + (f"; stopping early at step {end_step} (--max-steps)" if end_step < total_steps else "")
    )

    metrics = JsonlLogger(out / "metrics.jsonl", resume_step=step) if ctx.is_main else None
    tb = None
    if cfg.tensorboard and ctx.is_main:
        from tubemask.train.metrics import TensorBoardWriter

        tb = TensorBoardWriter(out / "tensorboard")

    def checkpoint_state() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "schedule": schedule.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "skipped_steps": guard.skipped,
            "rng": rng_state(),
            "config": config_dict(cfg),
        }

    test_set = build_dataset(cfg, val_boxes, files, train=False)
    test_set.failures.journal = journal

    def frame_map(show: bool) -> FrameMAPResult:
        found = detect(
            model,
            test_set,
            cfg,
            rank=ctx.rank,
            world_size=ctx.world_size,
            amp_dtype=amp_dtype,
            device=device,
            show=show,
        )
        return evaluate(found, val_truth, class_ids, excluded)

    meter = ThroughputMeter()
    bar = tqdm(
        total=end_step,
        initial=step,
        disable=not ctx.is_main,
        dynamic_ncols=True,
        desc="detect-train",
        file=sys.stdout,
        mininterval=1.0,
    )
    stop = step >= end_step
    while not stop and epoch < cfg.epochs:
        sampler.set_epoch(epoch, start_batch=batch_in_epoch)
        dataset.set_epoch(epoch)
        train_model.train()
        micro, loss_sum = 0, 0.0
        meter.reset()
        epoch_done = False
        for batch in loader:
            meter.data_ready()
            batch = batch.to(device)
            sync = micro == cfg.accum_steps - 1
            context = (
                train_model.no_sync()
                if ctx.is_distributed and not sync and hasattr(train_model, "no_sync")
                else nullcontext()
            )
            with context:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = train_model(batch.clips, batch.rois)  # [r classes]
                loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels) / cfg.accum_steps
                scaler.scale(loss).backward()
            loss_sum += float(loss.detach())
            micro += 1
            batch_in_epoch += 1
            if not sync:
                continue
            micro = 0
            loss_value = torch.tensor(loss_sum, device=device)
            if ctx.is_distributed:
                torch.distributed.all_reduce(loss_value)
                loss_value /= ctx.world_size
            loss_sum = 0.0
            current_lr = schedule.step(optimizer, step)
            if guard.check(loss_value, step=step):
                scaler.step(optimizer)
                scaler.update()
            else:
                log(f"step {step}: non-finite loss {float(loss_value)}, step skipped ({guard.skipped} so far)")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            meter.step(batch.clips.shape[0] * cfg.accum_steps * ctx.world_size)
            if ctx.is_main:
                values = {
                    "epoch": epoch,
                    "loss": float(loss_value),
                    "lr": current_lr,
                    "clips_per_s": meter.clips_per_s,
                    "data_wait": meter.data_wait_share,
                }
                metrics.log(step, **values)
                if tb is not None:
                    tb.log(step, **values)
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{current_lr:.2e}", wait=f"{values['data_wait']:.0%}")
                bar.update(1)
            if batch_in_epoch >= sampler.batches_per_epoch - sampler.batches_per_epoch % cfg.accum_steps:
                epoch, batch_in_epoch, epoch_done = epoch + 1, 0, True
            if ctx.is_main and (step % ckpt_every == 0 or step == end_step):
                manager.save(step, checkpoint_state())
            if step >= end_step:
                stop = True
                break
            if epoch_done:
                break  # epoch finished (a tail shorter than --accum-steps is dropped)
        else:
            epoch, batch_in_epoch, epoch_done = epoch + 1, 0, True
        if epoch_done and cfg.eval_every and epoch % cfg.eval_every == 0 and epoch < cfg.epochs and not stop:
            result = frame_map(show=False)
            log(f"after epoch {epoch}: frame mAP {result.mean_ap:.4f}")
            if ctx.is_main:
                metrics.log(step, epoch=epoch - 1, val_map=result.mean_ap)
                if tb is not None:
                    tb.log(step, val_map=result.mean_ap)
    bar.close()

    # ---- final test ---------------------------------------------------------------------------------------------
    log(f"testing on {len(test_set)} keyframes of person detections")
    result = frame_map(show=ctx.is_main)
    bad = FailureLog.report_run(out, log)  # every process's bad videos (training and test; workers and ranks)
    summary = {"step": step, "epoch": epoch, "skipped_steps": guard.skipped, "map": result.mean_ap}
    summary["bad_videos"] = len(bad.counts)
    if ctx.is_main:
        metrics.log(step, test_map=result.mean_ap)
        metrics.close()
        if tb is not None:
            tb.close()
        write_test_results(out, cfg, result, label_map, step=step)
        final = {
            "model": model.state_dict(),
            "config": config_dict(cfg),
            "label_map": {str(k): v for k, v in label_map.items()},
            "step": step,
            "epoch": epoch,
            "test": {"map": result.mean_ap},
        }
        save_checkpoint(out / "final.pt", final)
        if step > 0:
            plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        log(f"test: frame mAP@0.5 {result.mean_ap:.4f} over {len(class_ids)} classes, {result.num_frames} keyframes")
        log(f"done: {step} steps; wrote {out / 'final.pt'}, {out / 'test_results.json'}, {out / 'metrics.jsonl'}")
    cleanup()
    return summary


def config_dict(cfg: DetectConfig) -> dict:
    """The config as plain values (loadable with weights_only=True)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def write_test_results(
    out: Path, cfg: DetectConfig, result: FrameMAPResult, names: dict[int, str], *, step: int
) -> None:
    """`test_results.json`: frame mAP, AP and ground-truth count per evaluated class, and the protocol."""
    per_class = {
        f"{k} {names.get(k, '')}".strip(): None if math.isnan(ap) else ap for k, ap in sorted(result.per_class.items())
    }
    report = {
        "map": result.mean_ap,
        "per_class_ap": per_class,
        "ground_truth_per_class": {str(k): n for k, n in sorted(result.num_ground_truth.items())},
        "num_frames": result.num_frames,
        "protocol": {
            "metric": "frame mAP, Pascal-VOC AP at IoU 0.5, excluded timestamps left out",
            "detection_threshold": cfg.detection_threshold,
            "score": "sigmoid(logit) x detection score",
            "short_side": cfg.short_side,
            "frames": f"{cfg.num_frames} x {cfg.sampling_rate}",
        },
        "step": step,
        "finetune": None if cfg.finetune is None else str(cfg.finetune),
    }
    (out / "test_results.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    start = time.time()
    main(tyro.cli(DetectConfig))
    print(f"wall time {time.time() - start:.0f} s")
