"""VideoMAE fine-tuning on UCF101 (or the built-in synthetic motion dataset), top to bottom in one file.

    python recipes/finetune_ucf101.py                         # tiny model, synthetic data, CPU, a few minutes
    python recipes/finetune_ucf101.py --finetune outputs/pretrain_ucf101/final.pt   # after the pretraining recipe
    torchrun --nproc-per-node 8 recipes/finetune_ucf101.py --data-root /data/ucf101 --model base \\
        --finetune outputs/pretrain_ucf101/final.pt

With `--data-root` the defaults are the paper's UCF101 ViT-B fine-tuning recipe (Tong et al., arXiv 2203.12602;
REFERENCE.md): base lr 5e-4 x total batch / 256 with 8 videos x 2 clips (repeated sampling) per process, which makes
the paper's 128 clips on 8 processes; AdamW (0.9, 0.999), weight decay 0.05, layer-wise lr decay 0.7, 100 epochs, 5
warmup epochs, cosine to 1e-6, drop path 0.2, head dropout 0.5, mixup 0.8 / cutmix 1.0, label smoothing 0.1,
RandAugment rand-m7-n4-mstd0.5-inc1, random erasing 0.25, 16 frames at stride 4; test on 5 clips x 3 crops, softmax
per view, then the mean. Without it, a synthetic UCF101-layout dataset (the pretraining recipe's) and a CPU preset run.
Options that are not given take the preset's value; the start of the log prints every effective number.

`--finetune` takes a tubemask pretraining `final.pt` / `encoder.pt`, a fine-tuned `final.pt` of this recipe, or an
official VideoMAE / V2 checkpoint (pretrained or fine-tuned), always read with `weights_only=True`. `--linear-probe`
freezes the encoder and trains only `fc_norm` + the linear head, without mixup. After training the model is tested on
the full multi-view protocol; `<output-dir>/test_results.json` holds top-1, top-5 and per-class accuracy, and
`confusion_matrix.png` the confusion matrix.
"""

import dataclasses
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import tyro
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from tubemask import VideoClassifier, videomae_classifier
from tubemask.data import (
    DecodeOptions,
    DenseSampler,
    EvalPipeline,
    FailureLog,
    FinetuneDataset,
    FinetunePipeline,
    Mixup,
    MultiViewDataset,
    SegmentSampler,
    VideoRecord,
    collate_repeated,
    make_synthetic_ucf101,
    read_ucf101,
)
from tubemask.eval.metrics import MultiViewAccumulator, MultiViewResult, confusion_matrix, save_confusion_matrix_png
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.shapes import shape_checks_disabled
from tubemask.train.checkpoint import CheckpointManager, rng_state, save_checkpoint, set_rng_state
from tubemask.train.distributed import cleanup, setup_distributed, wrap_ddp, wrap_fsdp2
from tubemask.train.metrics import JsonlLogger, ThroughputMeter, plot_loss_curve
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.optim import build_adamw
from tubemask.train.sampler import resumable_loader
from tubemask.train.schedule import WarmupCosine, scaled_lr

REPO = Path(__file__).resolve().parent.parent


@dataclass
class FinetuneConfig:
    """Options of the fine-tuning recipe. `None` means "the preset's value" (paper recipe with --data-root,
    a CPU-sized run on synthetic data without; --linear-probe then turns the regularisers off)."""

    data_root: Path | None = None
    """UCF101 layout (UCF-101/<Class>/*.avi + ucfTrainTestlist/); absent: the built-in synthetic dataset."""
    split: Literal[1, 2, 3] = 1
    """Official train/test split: its train list is trained on, its test list evaluated."""
    output_dir: Path = Path("outputs/finetune_ucf101")
    """Checkpoints, metrics, test results and final.pt go here."""
    finetune: Path | None = None
    """Pretrained weights: tubemask final.pt / encoder.pt, or an official VideoMAE checkpoint; absent: from scratch."""
    linear_probe: bool = False
    """Freeze the encoder; train only fc_norm + head, without mixup, RandAugment, erasing or drop path."""
    model: Literal["tiny", "small", "base", "large", "huge"] | None = None
    """Size preset (paper: base; synthetic: tiny). Must match the --finetune checkpoint."""
    patch_size: int | None = None
    """Pixels per cube side (paper: 16; synthetic: 8). Must match the --finetune checkpoint."""
    num_classes: int | None = None
    """Logits of the head; default: 1 + the largest label of the train and test lists."""
    epochs: int | None = None
    """Epochs of the schedule (paper: 100)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps WITHOUT changing the schedule (which follows --epochs)."""
    batch_size: int | None = None
    """Videos per process and micro-step (paper: 8 videos x 2 clips x 8 GPUs = 128 clips)."""
    accum_steps: int = 1
    """Gradient accumulation micro-steps per optimizer step."""
    lr: float | None = None
    """Absolute peak learning rate; default base lr (5e-4 paper) x total batch in clips / 256."""
    base_lr: float | None = None
    """Learning rate per 256 clips of total batch (paper: 5e-4)."""
    min_lr: float = 1e-6
    """Final learning rate of the cosine."""
    warmup_epochs: float | None = None
    """Linear warmup (paper: 5 epochs)."""
    weight_decay: float | None = None
    """AdamW weight decay, not on norms, biases and positions (paper: 0.05; linear probe: 0)."""
    layer_decay: float | None = None
    """Layer-wise lr decay: block i of L gets lr x decay^(L - i), the embeddings decay^(L + 1) (paper: 0.7)."""
    drop_path: float | None = None
    """Stochastic depth rate of the last block, rising linearly from 0 (paper: 0.2)."""
    head_dropout: float | None = None
    """Dropout before the linear head (paper: 0.5)."""
    mixup: float | None = None
    """Mixup Beta alpha, 0 = off (paper: 0.8)."""
    cutmix: float | None = None
    """CutMix Beta alpha, 0 = off (paper: 1.0); with both on, each batch picks one with probability 0.5."""
    label_smoothing: float | None = None
    """Label smoothing of the (mixed) targets (paper: 0.1)."""
    randaugment: str | None = None
    """timm RandAugment spec, or "none" (paper: rand-m7-n4-mstd0.5-inc1)."""
    random_erasing: float | None = None
    """Random erasing probability per clip (paper: 0.25)."""
    flip: float | None = None
    """Horizontal flip probability (0.5; 0 where direction is the label, e.g. SSv2)."""
    num_frames: int = 16
    """Frames per clip."""
    sampling_rate: int | None = None
    """Frame stride (paper: 4; synthetic: 2)."""
    input_size: int | None = None
    """Crop size in pixels (paper: 224; synthetic: 64)."""
    repeated_sampling: int | None = None
    """Clips drawn per decoded video, each augmented independently (paper: 2); batch clips = batch-size x this."""
    test_clips: int | None = None
    """Temporal views per test video (paper: 5)."""
    test_crops: Literal[1, 3] | None = None
    """Spatial views per test clip: 3 along the long side, or the centre (paper: 3; synthetic: 1, frames are square)."""
    eval_every: int = 1
    """Single-view (centre clip, centre crop) evaluation on the test list every N epochs; 0 = only the final test."""
    ema: bool = False
    """Keep an exponential moving average of the weights; it is what gets evaluated and tested."""
    ema_decay: float | None = None
    """EMA decay per optimizer step (paper scripts: 0.9999; synthetic: 0.99)."""
    workers: int = 2
    """DataLoader worker processes per training process."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    """Autocast precision (default bf16 on CUDA, fp32 on CPU). The loss is always computed in float32."""
    compile: bool = False
    """torch.compile the model for training (runtime shape checks are off for the run: Dynamo cannot trace them)."""
    grad_checkpointing: bool = False
    """Recompute encoder activations in backward (less memory, ~30% more compute)."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation, mixup and drop path."""
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
    synthetic_videos_per_class: int = 24
    """Synthetic dataset size (per class, 10 classes); keep it equal to the pretraining recipe's to share the files."""


PAPER = dict(
    model="base",
    patch_size=16,
    epochs=100,
    batch_size=8,
    base_lr=5e-4,
    warmup_epochs=5.0,
    weight_decay=0.05,
    layer_decay=0.7,
    drop_path=0.2,
    head_dropout=0.5,
    mixup=0.8,
    cutmix=1.0,
    label_smoothing=0.1,
    randaugment="rand-m7-n4-mstd0.5-inc1",
    random_erasing=0.25,
    flip=0.5,
    sampling_rate=4,
    input_size=224,
    repeated_sampling=2,
    test_clips=5,
    test_crops=3,
    ema_decay=0.9999,
)
SYNTHETIC = dict(
    PAPER,
    model="tiny",
    patch_size=8,
    epochs=5,
    batch_size=4,
    base_lr=3.2e-2,  # 1e-3 at 8 clips per step: a tiny model learns from scratch in a few epochs
    warmup_epochs=1.0,
    sampling_rate=2,
    input_size=64,
    test_crops=1,  # the synthetic frames are square at the input size: three crops would be the same picture
    ema_decay=0.99,
)
LINEAR_PROBE = dict(
    weight_decay=0.0,
    layer_decay=1.0,
    drop_path=0.0,
    head_dropout=0.0,
    mixup=0.0,
    cutmix=0.0,
    label_smoothing=0.0,
    randaugment="none",
    random_erasing=0.0,
)


def resolve(cfg: FinetuneConfig) -> FinetuneConfig:
    """Fill every `None` option from the preset (paper with --data-root, synthetic without, then the linear-probe
    overrides)."""
    preset = dict(PAPER if cfg.data_root is not None else SYNTHETIC)
    if cfg.linear_probe:
        preset.update(LINEAR_PROBE)
    values = {
        k: (preset[k] if getattr(cfg, k) is None and k in preset else getattr(cfg, k))
        for k in (f.name for f in dataclasses.fields(cfg))
    }
    return dataclasses.replace(cfg, **values)


def synthetic_root(cfg: FinetuneConfig, *, is_main: bool) -> Path:
    """Generate (once, on rank 0) the built-in synthetic motion dataset in the UCF101 layout and return its root.

    Same folder and arguments as the pretraining recipe, so both recipes share one copy."""
    root = REPO / ".cache" / "synthetic_ucf101"
    if is_main:
        make_synthetic_ucf101(root, videos_per_class=cfg.synthetic_videos_per_class, seed=0)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return root


def read_records(cfg: FinetuneConfig, *, train: bool, is_main: bool) -> list[VideoRecord]:
    """The train (or test) list of --split, with 0-based labels."""
    root = cfg.data_root if cfg.data_root is not None else synthetic_root(cfg, is_main=is_main)
    return read_ucf101(root, split=cfg.split, train=train)


def class_names(cfg: FinetuneConfig, records: list[VideoRecord], num_classes: int) -> list[str]:
    """A name per label: the folder of its videos (UCF101, HMDB51, Kinetics), else the label number."""
    names = {r.label: r.path.parent.name for r in records}
    return [names.get(label, str(label)) for label in range(num_classes)]


def frame_sampler(cfg: FinetuneConfig) -> DenseSampler | SegmentSampler:
    """Dense sampling: --num-frames frames every --sampling-rate frames, random start (test: evenly spaced)."""
    return DenseSampler(clip_len=cfg.num_frames, stride=cfg.sampling_rate)


def build_train_dataset(cfg: FinetuneConfig, records: list[VideoRecord]) -> FinetuneDataset:
    """Labelled clips with RandAugment, random resized crop, flip and random erasing; --repeated-sampling per video."""
    pipeline = FinetunePipeline(
        input_size=cfg.input_size,
        randaugment=None if cfg.randaugment.lower() == "none" else cfg.randaugment,
        flip_p=cfg.flip,
        erase_p=cfg.random_erasing,
    )
    return FinetuneDataset(
        records, pipeline=pipeline, sampler=frame_sampler(cfg), repeats=cfg.repeated_sampling, seed=cfg.seed
    )


def build_test_dataset(cfg: FinetuneConfig, records: list[VideoRecord], *, clips: int, crops: int) -> MultiViewDataset:
    """`clips x crops` deterministic views per video: evenly spaced clips, short side resized to the input size."""
    return MultiViewDataset(
        records,
        pipeline=EvalPipeline(crop_size=cfg.input_size, num_crops=crops),
        sampler=frame_sampler(cfg),
        num_clips=clips,
        decode=DecodeOptions(seek_mode="exact"),
    )


def build_model(cfg: FinetuneConfig, num_classes: int) -> VideoClassifier:
    """The fine-tuning VideoMAE: encoder without final norm, mean pooling, fc_norm, dropout, linear head."""
    return videomae_classifier(
        cfg.model,
        num_classes=num_classes,
        patch_size=cfg.patch_size,
        drop_path_rate=cfg.drop_path,
        head_dropout=cfg.head_dropout,
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    *,
    views: int,
    num_videos: int,
    num_classes: int,
    chunk: int,
    amp_dtype: torch.dtype | None,
    device: torch.device,
    desc: str,
    show: bool,
) -> MultiViewResult:
    """Score every video: softmax of each view's logits, mean over its views (summed over ranks)."""
    was_training = model.training
    model.eval()
    accumulator = MultiViewAccumulator(num_videos, views, num_classes, device=device)
    for clips, labels, index in tqdm(loader, desc=desc, disable=not show, leave=False, file=sys.stdout):
        b = clips.shape[0]
        clips = clips.flatten(0, 1)  # [b v c t h w] -> [(b v) c t h w], views of a video together
        logits = []
        for part in clips.split(chunk):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits.append(model(part.to(device, non_blocking=True)).float())
        accumulator.update(
            torch.cat(logits),
            labels.long().repeat_interleave(views),
            index.long().repeat_interleave(views),
            torch.arange(views).repeat(b),
        )
    model.train(was_training)
    return accumulator.compute()


def eval_loader(dataset: MultiViewDataset, cfg: FinetuneConfig, *, rank: int, world_size: int, pin: bool) -> DataLoader:
    """Every video once over all ranks (rank r takes r, r + world, ...), no drop."""
    return DataLoader(
        dataset,
        batch_size=max(1, cfg.batch_size),
        sampler=list(range(rank, len(dataset), world_size)),
        num_workers=cfg.workers,
        pin_memory=pin,
        generator=torch.Generator(),  # a loader without one draws its worker seed from the global RNG
    )


def main(cfg: FinetuneConfig) -> dict:
    """Run the fine-tuning; returns a summary dict. With `--compile` the runtime shape checks (jaxtyping) are off for
    the run and restored after it: Dynamo cannot trace their `isinstance` hooks, so every checked call would end a
    graph (the classifier's checked embedding, feature and forward calls would each split the compiled graph)."""
    with shape_checks_disabled() if cfg.compile else nullcontext():
        return _train(cfg)


def _train(cfg: FinetuneConfig) -> dict:
    cfg = resolve(cfg)
    ctx = setup_distributed(cfg.device)
    device = ctx.device
    precision = cfg.precision or ("bf16" if device.type == "cuda" else "fp32")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    out = cfg.output_dir
    log = print if ctx.is_main else (lambda *a, **k: None)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    if cfg.ema and ctx.is_distributed and cfg.model in ("large", "huge"):
        raise SystemExit("--ema is not supported with FSDP2 sharding (--model large/huge under torchrun); drop --ema")

    # ---- data -------------------------------------------------------------------------------------------------
    train_records = read_records(cfg, train=True, is_main=ctx.is_main)
    test_records = read_records(cfg, train=False, is_main=ctx.is_main)
    num_classes = cfg.num_classes or 1 + max(r.label for r in [*train_records, *test_records])
    names = class_names(cfg, [*train_records, *test_records], num_classes)
    dataset = build_train_dataset(cfg, train_records)
    journal = str(FailureLog.journal_file(out, ctx.rank))  # this rank's and its workers' bad videos, every dataset
    dataset.failures.journal = journal
    sampler, loader = resumable_loader(  # (epoch, index) keys, workers kept across epochs
        dataset,
        batch_size=cfg.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        workers=cfg.workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_repeated,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG (drop path) off the loader's seed
    )
    steps_per_epoch = sampler.batches_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:
        raise SystemExit(
            f"one epoch has {sampler.batches_per_epoch} batches, fewer than --accum-steps "
            f"{cfg.accum_steps}; lower --batch-size/--accum-steps or add videos"
        )
    total_steps = steps_per_epoch * cfg.epochs
    clips_per_step = cfg.batch_size * cfg.repeated_sampling * ctx.world_size * cfg.accum_steps
    lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.base_lr, clips_per_step)
    mixer = Mixup(
        num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing
    )  # with both alphas 0 it only smooths the one-hot targets

    # ---- model, optimizer, schedule ------------------------------------------------------------------------------
    model = build_model(cfg, num_classes).to(device)
    manager = CheckpointManager(out, keep_last=cfg.keep_checkpoints)
    state = manager.load_latest() if cfg.resume else None
    if cfg.resume and state is None:
        log(f"--resume: no checkpoint in {out}, starting from scratch")
    if state is None and ctx.is_main:
        FailureLog.remove_run_journals(out)  # a fresh run: bad videos met by an earlier run here are not ours
    if cfg.finetune is not None and state is None:  # a resumed run has the weights in its checkpoint
        report = load_pretrained_encoder(model, cfg.finetune)
        log(f"--finetune: {report}")
    elif cfg.finetune is None:
        log(
            "no --finetune checkpoint: the encoder starts from random weights"
            + (" (a linear probe of a random encoder)" if cfg.linear_probe else "")
        )
    if cfg.linear_probe:
        model.requires_grad_(False)
        model.head.requires_grad_(True)  # fc_norm + linear layer
    if cfg.grad_checkpointing and not cfg.linear_probe:  # a frozen encoder keeps no activations anyway
        model.set_grad_checkpointing(True)
    optimizer = build_adamw(
        model,
        lr=lr,
        weight_decay=cfg.weight_decay,
        betas=(0.9, 0.999),
        layer_decay=None if cfg.linear_probe else cfg.layer_decay,
    )
    schedule = WarmupCosine(
        total_steps=total_steps,
        warmup_steps=min(round(cfg.warmup_epochs * steps_per_epoch), total_steps),  # a short run: warmup is all of it
        base_lr=lr,
        min_lr=cfg.min_lr,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    guard = NonFiniteGuard(cfg.max_bad_steps, checkpoint=manager.latest)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema else None
    torch.manual_seed(cfg.seed * 1_000_003 + ctx.rank)  # drop path and dropout differ between ranks

    step, epoch, batch_in_epoch = 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        elif ema is not None:
            log("--ema: the checkpoint has no EMA weights (a run without --ema); the average starts now")
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
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(
        f"tubemask fine-tuning: {len(train_records)} train / {len(test_records)} test videos, {num_classes} classes, "
        f"model {cfg.model} (patch {cfg.patch_size}), grid {model.grid((1, 3, cfg.num_frames, cfg.input_size, cfg.input_size))}, "
        f"{trainable:,} trainable parameters" + (" (linear probe: encoder frozen)" if cfg.linear_probe else "")
    )
    lr_note = f"= {cfg.base_lr:g} x {clips_per_step} / 256" if cfg.lr is None else "given by --lr"
    log(
        f"effective batch {clips_per_step} clips = {cfg.batch_size} videos x {cfg.repeated_sampling} clips (repeated "
        f"sampling) x {ctx.world_size} processes x {cfg.accum_steps} accumulation; lr {lr:.3g} ({lr_note}), "
        f"layer decay {cfg.layer_decay if not cfg.linear_probe else 'off'}, weight decay {cfg.weight_decay}"
    )
    log(
        f"{steps_per_epoch} steps per epoch, {cfg.epochs} epochs = {total_steps} steps, warmup "
        f"{schedule.warmup_steps} steps; device {device}, precision {precision}, {ctx.world_size} process(es)"
        + (f"; stopping early at step {end_step} (--max-steps)" if end_step < total_steps else "")
    )
    log(
        f"regularisation: drop path {cfg.drop_path}, head dropout {cfg.head_dropout}, mixup {cfg.mixup}, cutmix "
        f"{cfg.cutmix}, label smoothing {cfg.label_smoothing}, RandAugment {cfg.randaugment}, random erasing "
        f"{cfg.random_erasing}, flip {cfg.flip}" + (f", EMA {cfg.ema_decay}" if ema is not None else "")
    )
    log(
        f"test: {cfg.test_clips} clips x {cfg.test_crops} crops per video, softmax per view then mean"
        + (f"; single-view evaluation every {cfg.eval_every} epoch(s)" if cfg.eval_every else "")
    )
    if cfg.repeated_sampling > 1:
        log(
            f"repeated sampling {cfg.repeated_sampling}: each epoch decodes every video once and trains on "
            f"{cfg.repeated_sampling} clips of it; {cfg.epochs} epochs = {cfg.epochs * cfg.repeated_sampling} "
            "clip-epochs"
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
            "ema": None if ema is None else ema.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "skipped_steps": guard.skipped,
            "rng": rng_state(),
            "config": config_dict(cfg),
        }

    def mixup_generator(at_step: int, micro: int) -> torch.Generator:
        # One generator per (seed, step, micro-step, rank): a resumed run mixes the same way. Each process mixes its
        # own batch with its reverse, as timm's Mixup does.
        return torch.Generator().manual_seed(((cfg.seed * 1_000_003 + at_step) * 97 + micro) * 1009 + ctx.rank)

    eval_model = ema.module if ema is not None else model
    val_set = build_test_dataset(cfg, test_records, clips=1, crops=1)
    val_set.failures.journal = journal
    pin = device.type == "cuda"

    def single_view_eval() -> MultiViewResult:
        return evaluate(
            eval_model,
            eval_loader(val_set, cfg, rank=ctx.rank, world_size=ctx.world_size, pin=pin),
            views=1,
            num_videos=len(val_set),
            num_classes=num_classes,
            chunk=cfg.batch_size * cfg.repeated_sampling,
            amp_dtype=amp_dtype,
            device=device,
            desc="eval",
            show=False,  # fast, and a second bar under the training bar garbles logs
        )

    meter = ThroughputMeter()
    bar = tqdm(
        total=end_step,
        initial=step,
        disable=not ctx.is_main,
        dynamic_ncols=True,
        desc="finetune",
        file=sys.stdout,
        mininterval=1.0,
    )
    stop = step >= end_step
    while not stop and epoch < cfg.epochs:
        sampler.set_epoch(epoch, start_batch=batch_in_epoch)
        dataset.set_epoch(epoch)
        train_model.train()
        if cfg.linear_probe:
            model.encoder.eval()  # frozen: no drop path
        micro, loss_sum = 0, 0.0
        meter.reset()
        epoch_done = False
        for clips, labels in loader:
            meter.data_ready()
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            clips, targets = mixer(clips, labels, generator=mixup_generator(step, micro))  # targets [b k], soft
            sync = micro == cfg.accum_steps - 1
            context = (
                train_model.no_sync()
                if ctx.is_distributed and not sync and hasattr(train_model, "no_sync")
                else _null()
            )
            with context:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = train_model(clips)  # [b k]
                loss = F.cross_entropy(logits.float(), targets) / cfg.accum_steps
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
                if ema is not None:
                    ema.update_parameters(model)
            else:
                log(f"step {step}: non-finite loss {float(loss_value)}, step skipped ({guard.skipped} so far)")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            meter.step(clips.shape[0] * cfg.accum_steps * ctx.world_size)
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
                bar.set_postfix(
                    loss=f"{values['loss']:.4f}",
                    lr=f"{current_lr:.2e}",
                    clips_s=f"{values['clips_per_s']:.1f}",
                    wait=f"{values['data_wait']:.0%}",
                )
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
        if epoch_done and cfg.eval_every and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            result = single_view_eval()
            log(
                f"after epoch {epoch}: single-view top-1 {result.top1:.4f}, top-5 {result.top5:.4f} "
                f"({result.num_videos} videos, centre clip and crop)"
            )
            if ctx.is_main:
                values = {"epoch": epoch - 1, "val_top1": result.top1, "val_top5": result.top5}
                metrics.log(step, **values, val_mean_class_accuracy=result.mean_class_accuracy)
                if tb is not None:
                    tb.log(step, **values)
    bar.close()

    # ---- final multi-view test ------------------------------------------------------------------------------------
    test_set = build_test_dataset(cfg, test_records, clips=cfg.test_clips, crops=cfg.test_crops)
    test_set.failures.journal = journal
    views = cfg.test_clips * cfg.test_crops
    log(f"testing {'the EMA weights' if ema is not None else 'the model'} on {len(test_set)} videos x {views} views")
    result = evaluate(
        eval_model,
        eval_loader(test_set, cfg, rank=ctx.rank, world_size=ctx.world_size, pin=pin),
        views=views,
        num_videos=len(test_set),
        num_classes=num_classes,
        chunk=cfg.batch_size * cfg.repeated_sampling,
        amp_dtype=amp_dtype,
        device=device,
        desc="test",
        show=ctx.is_main,
    )

    bad = FailureLog.report_run(out, log)  # every process's bad videos (training, validation, test; workers and ranks)
    summary = {"step": step, "epoch": epoch, "skipped_steps": guard.skipped, "top1": result.top1, "top5": result.top5}
    summary["bad_videos"] = len(bad.counts)
    if ctx.is_main:
        metrics.log(step, test_top1=result.top1, test_top5=result.top5, test_views=views)
        metrics.close()
        if tb is not None:
            tb.close()
        write_test_results(out, cfg, result, names, views=views, step=step, ema=ema is not None)
        final = {
            "model": model.state_dict(),
            "config": config_dict(cfg),
            "class_names": names,
            "step": step,
            "epoch": epoch,
            "test": {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy},
        }
        if ema is not None:
            final["model_ema"] = ema.module.state_dict()
        save_checkpoint(out / "final.pt", final)
        if step > 0:
            plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        log(
            f"test: top-1 {result.top1:.4f}, top-5 {result.top5:.4f}, mean class accuracy "
            f"{result.mean_class_accuracy:.4f} on {result.num_videos} videos x {views} views"
        )
        log(
            f"done: {step} steps; wrote {out / 'final.pt'}, {out / 'test_results.json'}, "
            f"{out / 'confusion_matrix.png'}, {out / 'metrics.jsonl'}, {out / 'loss.png'}"
        )
    cleanup()
    return summary


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def config_dict(cfg: FinetuneConfig) -> dict:
    """The config as plain values (loadable with weights_only=True)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def write_test_results(
    out: Path, cfg: FinetuneConfig, result: MultiViewResult, names: list[str], *, views: int, step: int, ema: bool
) -> None:
    """`test_results.json` (top-1, top-5, per-class accuracy, the protocol) and `confusion_matrix.png`."""
    seen = result.labels >= 0
    preds = result.probs.argmax(dim=1)[seen]
    matrix = confusion_matrix(preds, result.labels[seen], len(names))
    per_class = {
        name: None if math.isnan(acc) else acc for name, acc in zip(names, result.per_class.tolist(), strict=True)
    }
    report = {
        "top1": result.top1,
        "top5": result.top5,
        "mean_class_accuracy": result.mean_class_accuracy,
        "num_videos": result.num_videos,
        "missing_views": result.missing_views,
        "protocol": {
            "clips": cfg.test_clips,
            "crops": cfg.test_crops,
            "views": views,
            "aggregation": "softmax per view, then mean over views",
        },
        "weights": "ema" if ema else "model",
        "step": step,
        "finetune": None if cfg.finetune is None else str(cfg.finetune),
        "linear_probe": cfg.linear_probe,
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": names,
    }
    (out / "test_results.json").write_text(json.dumps(report, indent=2) + "\n")
    title = f"test top-1 {result.top1:.3f} ({cfg.test_clips} clips x {cfg.test_crops} crops)"
    save_confusion_matrix_png(matrix, out / "confusion_matrix.png", names, title=title)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    start = time.time()
    main(tyro.cli(FinetuneConfig))
    print(f"wall time {time.time() - start:.0f} s")
