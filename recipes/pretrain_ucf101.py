"""VideoMAE pretraining on UCF101 (or the built-in synthetic motion dataset), top to bottom in one file.

    python recipes/pretrain_ucf101.py                         # tiny model, synthetic data, CPU, a few minutes
    python recipes/pretrain_ucf101.py --data-root /data/ucf101 --model base --device cuda --precision bf16
    torchrun --nproc-per-node 8 recipes/pretrain_ucf101.py --data-root /data/ucf101 --model base

With `--data-root` the defaults are the paper's UCF101 ViT-B recipe (Tong et al., arXiv 2203.12602; REFERENCE.md):
tube masking 0.75, 3200 epochs, base lr 3e-4 x total batch / 256, AdamW (0.9, 0.95), weight decay 0.05 (none on norms,
biases, positions and the mask token), 40 warmup epochs, cosine to 1e-5, 16 frames at stride 4, multi-scale crop, no
flip. Without it, a synthetic UCF101-layout dataset is generated once into `.cache/` and a CPU-sized preset runs.
Options that are not given take the preset's value; the start of the log prints every effective number.
"""

import dataclasses
import logging
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
import tyro
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_optimizer_state_dict
from tqdm import tqdm

import tubemask
from tubemask import FrameMasker, RandomMasker, RunningCellMasker, TubeMasker
from tubemask.data import (
    DenseSampler,
    EvalPipeline,
    FailureLog,
    MultiViewDataset,
    PretrainDataset,
    PretrainPipeline,
    SegmentSampler,
    VideoRecord,
    collate_repeated,
    make_synthetic_ucf101,
    normalize_batch,
    read_ucf101,
)
from tubemask.eval.diagnostics import ProbeSet, plot_diagnostics, probe_encoder, token_diagnostics
from tubemask.shapes import shape_checks_disabled
from tubemask.train.checkpoint import CheckpointManager, rng_state, save_checkpoint, set_rng_state
from tubemask.train.distributed import cleanup, setup_distributed, wrap_ddp, wrap_fsdp2
from tubemask.train.metrics import JsonlLogger, ThroughputMeter, plot_loss_curve, read_jsonl
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.optim import build_adamw
from tubemask.train.sampler import resumable_loader
from tubemask.train.schedule import WarmupCosine, scaled_lr
from tubemask.viz import masked_input, reconstruct_video, save_reconstruction_mp4, save_reconstruction_png, unnormalize

REPO = Path(__file__).resolve().parent.parent


@dataclass
class PretrainConfig:
    """Options of the pretraining recipe. `None` means "the preset's value" (paper recipe with --data-root,
    a CPU-sized run on synthetic data without)."""

    data_root: Path | None = None
    """UCF101 layout (UCF-101/<Class>/*.avi + ucfTrainTestlist/); absent: the built-in synthetic dataset."""
    split: Literal[1, 2, 3] = 1
    """Official train/test split whose train list is used."""
    output_dir: Path = Path("outputs/pretrain_ucf101")
    """Checkpoints, metrics, pictures and final.pt go here."""
    model: Literal["tiny", "small", "base", "large", "huge"] | None = None
    """Size preset (paper: base; synthetic: tiny)."""
    patch_size: int | None = None
    """Pixels per cube side (paper: 16; synthetic: 8)."""
    target: Literal["norm_pix", "pixels"] = "norm_pix"
    """Reconstruction target: per-cube normalised pixels (the paper) or raw pixels in [0, 1]."""
    mask_type: Literal["tube", "frame", "random"] = "tube"
    """Encoder masking strategy."""
    mask_ratio: float = 0.75
    """Share of tokens hidden from the encoder (UCF101 recipe: 0.75)."""
    decoder_mask_ratio: float = 0.0
    """Dual masking (VideoMAE V2): share of the masked tokens NOT reconstructed (running cell); 0 = off."""
    epochs: int | None = None
    """Epochs of the schedule (paper: 3200)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps WITHOUT changing the schedule (which follows --epochs)."""
    batch_size: int | None = None
    """Videos per process and micro-step (paper: 24 per GPU x 8 GPUs = 192)."""
    accum_steps: int = 1
    """Gradient accumulation micro-steps per optimizer step."""
    lr: float | None = None
    """Absolute peak learning rate; default base lr (3e-4 paper) x total batch / 256."""
    base_lr: float | None = None
    """Learning rate per 256 clips of total batch (paper: 3e-4)."""
    min_lr: float = 1e-5
    """Final learning rate of the cosine."""
    warmup_epochs: float | None = None
    """Linear warmup (paper: 40 epochs)."""
    weight_decay: float = 0.05
    """AdamW weight decay (not on norms, biases, positions, mask token)."""
    num_frames: int = 16
    """Frames per clip."""
    sampling_rate: int | None = None
    """Frame stride (paper: 4; synthetic: 2)."""
    input_size: int | None = None
    """Crop size in pixels (paper: 224; synthetic: 64)."""
    repeated_sampling: int = 1
    """Clips drawn per decoded video (each an independent augmentation); batch clips = batch-size x this."""
    workers: int = 2
    """DataLoader worker processes per training process."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    """Autocast precision (default bf16 on CUDA, fp32 on CPU). Targets are always float32."""
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"
    """Under torchrun: DDP, or FSDP2 (parameters sharded per block); auto = FSDP2 for large and huge."""
    compile: bool = False
    """torch.compile the model (runtime shape checks are off for the run: Dynamo cannot trace them)."""
    grad_checkpointing: bool = False
    """Recompute encoder and decoder block activations in backward (less memory, more compute)."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation and masks."""
    checkpoint_every: int | None = None
    """Save a checkpoint every N optimizer steps (default: once per epoch)."""
    keep_checkpoints: int = 3
    """Checkpoints kept in --output-dir."""
    resume: bool = False
    """Continue from the latest checkpoint in --output-dir."""
    vis_every: int | None = None
    """Reconstruction pictures every N epochs (and at the end); default: 10% of the epochs."""
    max_bad_steps: int = 5
    """Non-finite losses in a row that abort the run."""
    diagnostics_every: int = 50
    """Log encoder-token norm and participation ratio every N steps (collapse shows as a ratio near 1)."""
    probe_every: int | None = None
    """Linear probe of the frozen encoder every N optimizer steps, at the start and at the end (0 = off; synthetic
    preset: 100; paper preset: off, as the probe clips are held in memory)."""
    probe_videos_per_class: int = 4
    """Labelled training videos per class for the probe: the first half of them fit it, the second half score it."""
    tensorboard: bool = False
    """Also write TensorBoard scalars."""
    synthetic_videos_per_class: int = 24
    """Synthetic dataset size (per class, 10 classes)."""


PAPER = dict(
    base_lr=3e-4,
    model="base",
    patch_size=16,
    epochs=3200,
    batch_size=24,
    warmup_epochs=40.0,
    sampling_rate=4,
    input_size=224,
    precision=None,
    probe_every=0,
)
SYNTHETIC = dict(
    base_lr=2.4e-2,
    model="tiny",
    patch_size=8,
    epochs=30,
    batch_size=8,
    warmup_epochs=3.0,
    sampling_rate=2,
    input_size=64,
    precision=None,
    probe_every=100,
)


def resolve(cfg: PretrainConfig) -> PretrainConfig:
    """Fill every `None` option from the preset (paper with --data-root, synthetic without)."""
    preset = PAPER if cfg.data_root is not None else SYNTHETIC
    values = {
        k: (preset[k] if getattr(cfg, k) is None and k in preset else getattr(cfg, k))
        for k in (f.name for f in dataclasses.fields(cfg))
    }
    return dataclasses.replace(cfg, **values)


MASKERS = {"tube": TubeMasker, "frame": FrameMasker, "random": RandomMasker}
BUILDERS = {
    "tiny": tubemask.videomae_vit_tiny,
    "small": tubemask.videomae_vit_s,
    "base": tubemask.videomae_vit_b,
    "large": tubemask.videomae_vit_l,
    "huge": tubemask.videomae_vit_h,
}


def synthetic_root(cfg: PretrainConfig, *, is_main: bool) -> Path:
    """Generate (once, on rank 0) the built-in synthetic motion dataset in the UCF101 layout and return its root."""
    root = REPO / ".cache" / "synthetic_ucf101"
    if is_main:
        make_synthetic_ucf101(root, videos_per_class=cfg.synthetic_videos_per_class, seed=0)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return root


def read_records(cfg: PretrainConfig, *, is_main: bool) -> list[VideoRecord]:
    """The training videos: the UCF101 train list of --split (labels are not used in pretraining)."""
    root = cfg.data_root if cfg.data_root is not None else synthetic_root(cfg, is_main=is_main)
    return read_ucf101(root, split=cfg.split, train=True)


def frame_sampler(cfg: PretrainConfig) -> DenseSampler | SegmentSampler:
    """Dense sampling: --num-frames frames every --sampling-rate frames, random start."""
    return DenseSampler(clip_len=cfg.num_frames, stride=cfg.sampling_rate)


def build_dataset(cfg: PretrainConfig, records: list[VideoRecord]) -> PretrainDataset:
    """Clips with the V1 multi-scale crop (scales 1, .875, .75, .66), no flip, as uint8: the training loop applies the
    ImageNet normalisation on the device (normalize_batch), so the loader moves a quarter of the bytes."""
    return PretrainDataset(
        records,
        pipeline=PretrainPipeline(input_size=cfg.input_size, flip_p=0.0, normalize=False),
        sampler=frame_sampler(cfg),
        repeats=cfg.repeated_sampling,
        seed=cfg.seed,
    )


def build_probe_set(cfg: PretrainConfig, records: list[VideoRecord]) -> ProbeSet | None:
    """Centre clips (uint8, one view) of `--probe-videos-per-class` labelled videos per class: the first half of each
    class fits the linear probe, the second half scores it. None when the records carry no labels."""
    by_class: dict[int, list[VideoRecord]] = {}
    for record in sorted(records, key=lambda r: str(r.path)):
        if record.label is not None:
            by_class.setdefault(record.label, []).append(record)
    half = cfg.probe_videos_per_class // 2
    if half < 1:
        raise SystemExit(
            f"--probe-videos-per-class {cfg.probe_videos_per_class}: need at least 2 (one to fit, one to score)"
        )
    fit = [r for rs in by_class.values() for r in rs[:half]]
    score = [r for rs in by_class.values() for r in rs[half : 2 * half]]
    if len(by_class) < 2 or not score:
        return None

    def load(chosen: list[VideoRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = MultiViewDataset(
            chosen,
            pipeline=EvalPipeline(crop_size=cfg.input_size, num_crops=1, normalize=False),
            sampler=frame_sampler(cfg),
            num_clips=1,
        )
        items = [dataset[i] for i in range(len(dataset))]
        return torch.stack([views[0] for views, _, _ in items]), torch.tensor([label for _, label, _ in items])

    return ProbeSet(*load(fit), *load(score))


def main(cfg: PretrainConfig) -> dict:
    """Run the pretraining; returns a summary dict. With `--compile` the runtime shape checks (jaxtyping) are off for
    the run and restored after it: Dynamo cannot trace their `isinstance` hooks, so every checked call would end a
    graph (the decoder, the position tables and the cube gather would each run as separate graphs)."""
    with shape_checks_disabled() if cfg.compile else nullcontext():
        return _train(cfg)


def _train(cfg: PretrainConfig) -> dict:
    cfg = resolve(cfg)
    ctx = setup_distributed(cfg.device)
    device = ctx.device
    precision = cfg.precision or ("bf16" if device.type == "cuda" else "fp32")
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    out = cfg.output_dir
    log = print if ctx.is_main else (lambda *a, **k: None)
    if cfg.probe_every < 0:
        raise SystemExit(f"--probe-every {cfg.probe_every}: must be >= 0 (0 = off)")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank

    # ---- data -------------------------------------------------------------------------------------------------
    records = read_records(cfg, is_main=ctx.is_main)  # every rank: generating the synthetic set ends in a barrier
    dataset = build_dataset(cfg, records)
    dataset.failures.journal = str(FailureLog.journal_file(out, ctx.rank))  # this rank's and its workers' bad videos
    sampler, loader = resumable_loader(  # (epoch, index) keys, workers kept across epochs
        dataset,
        batch_size=cfg.batch_size,
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg.seed,
        workers=cfg.workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_repeated,
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

    # ---- model, optimizer, schedule ------------------------------------------------------------------------------
    model = BUILDERS[cfg.model](patch_size=cfg.patch_size, target=cfg.target).to(device)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)  # encoder and decoder (the decoder runs every token of the clip)
    grid = model.grid((1, 3, cfg.num_frames, cfg.input_size, cfg.input_size))
    masker = MASKERS[cfg.mask_type](mask_ratio=cfg.mask_ratio)
    decoder_masker = RunningCellMasker(mask_ratio=cfg.decoder_mask_ratio) if cfg.decoder_mask_ratio > 0 else None
    schedule = WarmupCosine(
        total_steps=total_steps,
        warmup_steps=min(total_steps, round(cfg.warmup_epochs * steps_per_epoch)),
        base_lr=lr,
        min_lr=cfg.min_lr,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    manager = CheckpointManager(out, keep_last=cfg.keep_checkpoints)
    guard = NonFiniteGuard(cfg.max_bad_steps, checkpoint=manager.latest)

    state = manager.load_latest() if cfg.resume else None
    if state is not None:
        model.load_state_dict(state["model"])  # full weights, before sharding
    elif ctx.is_main:
        FailureLog.remove_run_journals(out)  # a fresh run: bad videos met by an earlier run here are not ours

    # DDP keeps the parameters; FSDP2 replaces them by shards, so the optimizer is built after wrapping
    fsdp = ctx.is_distributed and (
        cfg.sharding == "fsdp" or (cfg.sharding == "auto" and cfg.model in ("large", "huge"))
    )
    train_model = model
    if ctx.is_distributed:
        train_model = wrap_fsdp2(model, ctx) if fsdp else wrap_ddp(model, ctx)
    optimizer = build_adamw(model, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    if cfg.compile:
        train_model = torch.compile(train_model)

    def full_state() -> tuple[dict, dict]:
        """Unsharded model and optimizer state (a collective under FSDP2: every rank calls it)."""
        if not fsdp:
            return model.state_dict(), optimizer.state_dict()
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=options)

    step, epoch, batch_in_epoch = 0, 0, 0
    if cfg.resume:
        if state is None:
            log(f"--resume: no checkpoint in {out}, starting from scratch")
        else:
            if fsdp:
                options = StateDictOptions(full_state_dict=True)
                set_optimizer_state_dict(model, optimizer, state["optimizer"], options=options)
            else:
                optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            schedule.load_state_dict(state["schedule"])
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            guard.skipped = state["skipped_steps"]
            set_rng_state(state["rng"])
            log(f"resumed from {manager.latest()} at step {step} (epoch {epoch}, batch {batch_in_epoch})")

    end_step = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    vis_every = cfg.vis_every or max(1, cfg.epochs // 10)
    ckpt_every = cfg.checkpoint_every or steps_per_epoch
    log(
        f"tubemask pretraining: {len(dataset)} videos, model {cfg.model} (patch {cfg.patch_size}), grid {grid}, "
        f"{masker.num_masked(grid)}/{math.prod(grid)} tokens masked ({cfg.mask_type} {cfg.mask_ratio})"
        + (f", decoder keeps {1 - cfg.decoder_mask_ratio:.2f} of them (running cell)" if decoder_masker else "")
    )
    lr_note = f"= {cfg.base_lr:g} x {clips_per_step} / 256" if cfg.lr is None else "given by --lr"
    log(
        f"effective batch {clips_per_step} clips = {cfg.batch_size} videos x {cfg.repeated_sampling} clips (repeated "
        f"sampling) x {ctx.world_size} processes x {cfg.accum_steps} accumulation; lr {lr:.3g} ({lr_note})"
    )
    log(
        f"{steps_per_epoch} steps per epoch, {cfg.epochs} epochs = {total_steps} steps, warmup "
        f"{schedule.warmup_steps} steps; device {device}, precision {precision}, {ctx.world_size} process(es)"
        + (f"; stopping early at step {end_step} (--max-steps)" if end_step < total_steps else "")
    )
    if cfg.repeated_sampling > 1:
        log(
            f"repeated sampling {cfg.repeated_sampling}: each epoch decodes every video once and trains on "
            f"{cfg.repeated_sampling} clips of it, so one epoch here is {cfg.repeated_sampling} clip-epochs of the "
            f"paper's counting; {cfg.epochs} epochs = {cfg.epochs * cfg.repeated_sampling} clip-epochs"
        )

    metrics = JsonlLogger(out / "metrics.jsonl", resume_step=step) if ctx.is_main else None
    probes = None
    if cfg.probe_every and ctx.is_main:
        if fsdp:  # the forward of a sharded model is a collective; the probe runs on rank 0 alone
            log("linear probe off under FSDP2 (run it on a saved encoder.pt instead)")
        else:
            probes = build_probe_set(cfg, records)
            if probes is None:
                log("linear probe off: the training records carry fewer than two labelled classes")

    def run_probe(at_step: int) -> None:
        """Frozen-encoder linear probe + token statistics on the probe clips, logged under `probe_*` keys."""
        if probes is None:
            return
        was_training = model.training
        model.eval()

        def encode(clips: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                return model.forward_features(normalize_batch(clips.to(device))).float()

        values = probe_encoder(encode, probes, time_slots=grid[0], batch_size=cfg.batch_size)
        model.train(was_training)
        # token statistics of whole probe clips go under their own names (the training log has those of visible tokens)
        metrics.log(
            at_step,
            probe_mean_pool=values["probe_mean_pool"],
            probe_per_time=values["probe_per_time"],
            clip_token_participation_ratio=values["participation_ratio"],
            clip_token_position_variance=values["position_variance_fraction"],
        )
        log(
            f"step {at_step}: linear probe {values['probe_mean_pool']:.3f} (mean pool) / "
            f"{values['probe_per_time']:.3f} (per time slot), token participation ratio "
            f"{values['participation_ratio']:.2f}"
        )

    if step == 0 and cfg.probe_every:
        run_probe(0)  # the random-initialisation baseline
    tb = None
    if cfg.tensorboard and ctx.is_main:
        from tubemask.train.metrics import TensorBoardWriter

        tb = TensorBoardWriter(out / "tensorboard")

    def checkpoint_state() -> dict:
        model_state, optimizer_state = full_state()
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": scaler.state_dict(),
            "schedule": schedule.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "skipped_steps": guard.skipped,
            "rng": rng_state(),
            "config": config_dict(cfg),
        }

    def masks_for(batch: int, at_step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        # One generator per (seed, step, micro-step) for the GLOBAL batch; each rank takes its rows, so masks do not
        # depend on the number of processes and a resumed run draws the same ones.
        g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + at_step) * 97 + micro)
        rows = batch * ctx.world_size
        mask = masker(rows, grid, generator=g)[ctx.rank :: ctx.world_size]
        dmask = None
        if decoder_masker is not None:
            dmask = decoder_masker(rows, grid, generator=g)[ctx.rank :: ctx.world_size]
        return mask.to(device, non_blocking=True), None if dmask is None else dmask.to(device, non_blocking=True)

    meter = ThroughputMeter()
    last_vis_batch = None
    bar = tqdm(
        total=end_step,
        initial=step,
        disable=not ctx.is_main,
        dynamic_ncols=True,
        desc="pretrain",
        file=sys.stdout,
        mininterval=1.0,
    )
    stop = step >= end_step
    while not stop and epoch < cfg.epochs:
        sampler.set_epoch(epoch, start_batch=batch_in_epoch)
        dataset.set_epoch(epoch)
        train_model.train()
        micro, loss_sum, floor_sum = 0, 0.0, 0.0
        meter.reset()
        for video in loader:
            meter.data_ready()
            # uint8 [b c t h w] (channels-last memory) -> contiguous float32, normalised on the device
            video = normalize_batch(video.to(device, non_blocking=True))
            mask, dmask = masks_for(video.shape[0], step, micro)
            sync = micro == cfg.accum_steps - 1
            # skip the gradient all-reduce on all but the last micro-step of an accumulation
            if fsdp:
                model.set_requires_gradient_sync(sync)
            context = train_model.no_sync() if ctx.is_distributed and not fsdp and not sync else nullcontext()
            with context, torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out_ = train_model(video, mask, dmask)
                loss = out_.loss / cfg.accum_steps
            # the loss of predicting all zeros, the best constant for per-cube normalised targets: a loss that sits
            # on this floor has learned nothing about the masked content (a tensor: no device sync before backward)
            floor = out_.target.detach().pow(2).mean()
            latent = out_.latent.detach()
            del out_  # predictions and targets are freed once the loss's backward has used them, not held through it
            scaler.scale(loss).backward()
            loss_sum += float(loss.detach())
            floor_sum += float(floor) / cfg.accum_steps
            micro += 1
            batch_in_epoch += 1
            if not sync:
                continue
            micro = 0
            loss_value = torch.tensor(loss_sum, device=device)
            if ctx.is_distributed:
                torch.distributed.all_reduce(loss_value)
                loss_value /= ctx.world_size
            loss_floor, loss_sum, floor_sum = floor_sum, 0.0, 0.0
            current_lr = schedule.step(optimizer, step)
            if guard.check(loss_value, step=step):
                scaler.step(optimizer)
                scaler.update()
            else:
                log(f"step {step}: non-finite loss {float(loss_value)}, step skipped ({guard.skipped} so far)")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            meter.step(video.shape[0] * cfg.accum_steps * ctx.world_size)
            last_vis_batch = (video[:1].detach(), mask[:1], None if dmask is None else dmask[:1])
            if ctx.is_main:
                values = {
                    "epoch": epoch,
                    "loss": float(loss_value),
                    "zero_floor": loss_floor,
                    "lr": current_lr,
                    "clips_per_s": meter.clips_per_s,
                    "data_wait": meter.data_wait_share,
                }
                if step % cfg.diagnostics_every == 0:
                    tokens = token_diagnostics(latent.float())
                    values.update(token_norm=tokens["mean_norm"], participation_ratio=tokens["participation_ratio"])
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
                if cfg.probe_every and step % cfg.probe_every == 0:
                    run_probe(step)
            if batch_in_epoch >= sampler.batches_per_epoch - sampler.batches_per_epoch % cfg.accum_steps:
                epoch, batch_in_epoch = epoch + 1, 0
            if step % ckpt_every == 0 or step == end_step:
                state = checkpoint_state()  # every rank: gathering FSDP2 shards is a collective
                if ctx.is_main:
                    manager.save(step, state)
            if step >= end_step:
                stop = True
                break
            if batch_in_epoch == 0:
                break  # epoch finished (a tail shorter than --accum-steps is dropped)
        else:
            epoch, batch_in_epoch = epoch + 1, 0
        if last_vis_batch is not None and (epoch % vis_every == 0 or stop) and (ctx.is_main or fsdp):
            # FSDP2 gathers weights collectively, so there every rank runs the forward and rank 0 writes
            save_pictures(model, last_vis_batch, out / f"reconstruction-epoch{epoch:04d}", amp_dtype, ctx.is_main)
    bar.close()
    if cfg.probe_every and step % cfg.probe_every != 0 and ctx.is_main:
        run_probe(step)  # the final encoder

    bad = FailureLog.report_run(out, log)  # every process's bad videos, workers and ranks included
    result = {"step": step, "epoch": epoch, "skipped_steps": guard.skipped, "bad_videos": len(bad.counts)}
    model_state, _ = full_state()
    if ctx.is_main:
        metrics.close()
        if tb is not None:
            tb.close()
        final = {"model": model_state, "config": config_dict(cfg), "step": step, "epoch": epoch}
        save_checkpoint(out / "final.pt", final)
        encoder_keys = {k: v for k, v in model_state.items() if k.startswith(("tokenizer.", "encoder."))}
        save_checkpoint(out / "encoder.pt", {"model": encoder_keys, "config": config_dict(cfg)})
        plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        plot_diagnostics(read_jsonl(out / "metrics.jsonl"), out / "diagnostics.png", title="pretraining diagnostics")
        log(
            f"done: {step} steps; wrote {out / 'final.pt'}, {out / 'encoder.pt'}, {out / 'metrics.jsonl'}, "
            f"{out / 'loss.png'}, {out / 'diagnostics.png'} and reconstruction pictures"
        )
    cleanup()
    return result


def config_dict(cfg: PretrainConfig) -> dict:
    """The config as plain values (loadable with weights_only=True)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


@torch.no_grad()
def save_pictures(
    model: torch.nn.Module, batch: tuple, stem: Path, amp_dtype: torch.dtype | None, write: bool = True
) -> None:
    """Original / masked input / reconstruction of one clip as a PNG grid and an mp4."""
    video, mask, dmask = batch
    was_training = model.training
    model.eval()
    with torch.autocast(video.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(video, mask, dmask)
    model.train(was_training)
    if not write:
        return
    geometry = dict(
        tubelet_size=model.tokenizer.tubelet_size,
        patch_size=model.tokenizer.patch_size,
        mean=model.pixel_mean,
        std=model.pixel_std,
    )
    video, mask = video.float().cpu(), mask.cpu()
    original = unnormalize(video, mean=model.pixel_mean, std=model.pixel_std)[0]
    masked = masked_input(video, mask, **geometry)[0]
    recon = reconstruct_video(
        video, out.pred.float().cpu(), out.ids.cpu(), mask, norm_pix=model.target == "norm_pix", **geometry
    )[0]
    save_reconstruction_png(stem.with_suffix(".png"), original, masked, recon)
    try:
        save_reconstruction_mp4(stem.with_suffix(".mp4"), original, masked, recon)
    except Exception as error:  # a missing encoder must not end a long run
        print(f"warning: could not write {stem.with_suffix('.mp4')}: {error}")


if __name__ == "__main__":
    # before the DataLoader starts: worker processes inherit it, so each bad video they meet is named in the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    start = time.time()
    main(tyro.cli(PretrainConfig))
    print(f"wall time {time.time() - start:.0f} s")
