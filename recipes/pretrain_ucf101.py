"""VideoMAE pretraining on UCF101 (or the built-in synthetic motion dataset), top to bottom in one file.

    python recipes/pretrain_ucf101.py                         # tiny model, synthetic data, CPU, a few minutes
    python recipes/pretrain_ucf101.py --data-root /data/ucf101 --model base --device cuda --precision bf16
    torchrun --nproc-per-node 8 recipes/pretrain_ucf101.py --data-root /data/ucf101 --model base

With `--data-root` the defaults are the paper's UCF101 ViT-B recipe (Tong et al., arXiv 2203.12602; REFERENCE.md):
tube masking 0.75, 3200 epochs, base lr 3e-4 x total batch / 256, AdamW (0.9, 0.95), weight decay 0.05 (none on norms,
biases, positions and the mask token), 40 warmup epochs, cosine to 1e-5, 16 frames at stride 4, multi-scale crop, no
flip. Without it, a synthetic UCF101-layout dataset is generated once into `.cache/` and a CPU-sized preset runs.
Options that are not given take the preset's value; the start of the log prints every effective number. The plumbing
(processes, precision, checkpoints, the optimizer-step tail) is `tubemask.train`; this file is the method.
"""

import math
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch

from tubemask import FrameMasker, RandomMasker, RunningCellMasker, TubeMasker, videomae_pretrain
from tubemask.data import (
    DenseSampler,
    PretrainDataset,
    PretrainPipeline,
    SegmentSampler,
    VideoRecord,
    collate_repeated,
    normalize_batch,
    read_ucf101,
)
from tubemask.eval.diagnostics import plot_diagnostics, probe_encoder, probe_set_from_records, token_diagnostics
from tubemask.masking import draw_mask
from tubemask.shapes import shape_checks_disabled
from tubemask.train.checkpoint import save_checkpoint
from tubemask.train.config import DatasetPreset, TrainConfig, config_dict, fill_from_preset
from tubemask.train.layouts import synthetic_ucf101_records
from tubemask.train.logs import plot_loss_curve, read_jsonl
from tubemask.train.loop import TrainLoop
from tubemask.train.optim import build_adamw
from tubemask.train.run import Run, script_main
from tubemask.train.seeding import step_generator
from tubemask.viz import save_model_reconstruction

REPO = Path(__file__).resolve().parent.parent


@dataclass
class PretrainConfig(TrainConfig):
    """Options of the pretraining recipe (and the run options of every recipe, see TrainConfig). `None` means "the
    preset's value": the paper's recipe with --data-root (epochs 3200, batch 24 per GPU x 8, base lr 3e-4, 40 warmup
    epochs, weight decay 0.05), a CPU-sized run on synthetic data without."""

    data_root: Path | None = None
    """UCF101 layout (UCF-101/<Class>/*.avi + ucfTrainTestlist/); absent: the built-in synthetic dataset."""
    split: Literal[1, 2, 3] = 1
    """Official train/test split whose train list is used."""
    output_dir: Path = Path("outputs/pretrain_ucf101")
    """Checkpoints, metrics, pictures and final.pt go here."""
    target: Literal["norm_pix", "norm_pix_joint", "pixels"] | None = None
    """Reconstruction target: per-cube normalised pixels (paper: norm_pix), jointly normalised (mae_st), or raw pixels
    in [0, 1] (synthetic: a black background's pixels are predictable where norm-pix's are not)."""
    mask_type: Literal["tube", "frame", "random"] = "tube"
    """Encoder masking strategy."""
    mask_ratio: float | None = None
    """Share of tokens hidden from the encoder (UCF101 recipe: 0.75)."""
    decoder_mask_ratio: float = 0.0
    """Dual masking (VideoMAE V2): share of the masked tokens NOT reconstructed (running cell); 0 = off."""
    min_lr: float = 1e-5
    """Final learning rate of the cosine."""
    num_frames: int | None = None
    """Frames per clip (paper: 16; synthetic: 8)."""
    sampling_rate: int | None = None
    """Frame stride (paper: 4; synthetic: 2)."""
    input_size: int | None = None
    """Crop size in pixels (paper: 224; synthetic: 32)."""
    repeated_sampling: int = 1
    """Clips drawn per decoded video (each an independent augmentation); batch clips = batch-size x this."""
    vis_every: int | None = None
    """Reconstruction pictures every N epochs (and at the end); default: 10% of the epochs."""
    diagnostics_every: int = 50
    """Log encoder-token norm and participation ratio every N steps (collapse shows as a ratio near 1)."""
    probe_every: int | None = None
    """Linear probe of the frozen encoder every N optimizer steps, at the start and at the end (0 = off; synthetic
    preset: 250; paper preset: off, as the probe clips are held in memory)."""
    probe_videos_per_class: int | None = None
    """Labelled training videos per class for the probe: the first half of them fit it, the second half score it."""
    synthetic_videos_per_class: int = 200
    """Synthetic dataset size (per class, 10 classes; the fine-tuning recipe's default is the same, so the two share
    the files)."""


# fmt: off
PAPER = dict(
    model="base", patch_size=16, epochs=3200, batch_size=24, base_lr=3e-4, warmup_epochs=40.0, weight_decay=0.05,
    target="norm_pix", mask_ratio=0.75, num_frames=16, sampling_rate=4, input_size=224, probe_every=0,
    probe_videos_per_class=4,
)
SYNTHETIC = dict(  # learns in minutes on 2 CPU cores (README): loss well under its floor, the probe up by ~0.3
    model="tiny", patch_size=8, epochs=48, batch_size=32, warmup_epochs=3.0, weight_decay=0.05, target="pixels",
    base_lr=6e-3,  # 7.5e-4 at 32 clips; 3e-3 collapses this model's tokens (participation ratio 12 -> under 2)
    mask_ratio=0.75, num_frames=8, sampling_rate=2, input_size=32, probe_every=250, probe_videos_per_class=40,
)
# fmt: on
UCF101 = DatasetPreset(
    "UCF101", read=lambda cfg, train: read_ucf101(cfg.data_root, split=cfg.split, train=train), paper=PAPER
)
MASKERS = {"tube": TubeMasker, "frame": FrameMasker, "random": RandomMasker}


def read_records(cfg: PretrainConfig, dataset: DatasetPreset, run: Run) -> list[VideoRecord]:
    """The training videos (labels are not used in pretraining): the dataset's train list, or the synthetic set,
    generated on rank 0 into `.cache/` (one folder per settings) while the other ranks wait."""
    if cfg.data_root is not None:
        return dataset.read(cfg, train=True)
    return synthetic_ucf101_records(cfg, run, REPO / ".cache", train=True)


def frame_sampler(cfg: PretrainConfig, dataset: DatasetPreset) -> DenseSampler | SegmentSampler:
    """Dense sampling (--num-frames frames every --sampling-rate, random start), or TSN segments (SSv2)."""
    if dataset.sampling == "segment":
        return SegmentSampler(num_segments=cfg.num_frames)
    return DenseSampler(clip_len=cfg.num_frames, stride=cfg.sampling_rate)


def main(cfg: PretrainConfig, dataset: DatasetPreset = UCF101) -> dict:
    """Run the pretraining; returns a summary dict. Options left at `None` take the dataset's paper value with
    --data-root, the synthetic preset's without. With `--compile` the runtime shape checks (jaxtyping) are off for
    the run and restored after it: Dynamo cannot trace their `isinstance` hooks (each checked call would end a graph)."""
    with shape_checks_disabled() if cfg.compile else nullcontext():
        presets = [dataset.paper] if cfg.data_root is not None else [SYNTHETIC, dataset.synthetic]
        return train(fill_from_preset(cfg, *presets), dataset)


def train(cfg: PretrainConfig, dataset: DatasetPreset) -> dict:
    if cfg.probe_every < 0:
        raise SystemExit(f"--probe-every {cfg.probe_every}: must be >= 0 (0 = off)")
    run = Run.start(cfg)
    ctx, device, out = run.ctx, run.device, run.out

    # ---- data: uint8 clips with the V1 multi-scale crop, no flip; normalised on the device --------------------------
    records = read_records(cfg, dataset, run)
    sampler_ = frame_sampler(cfg, dataset)
    pipeline = PretrainPipeline(input_size=cfg.input_size, flip_p=0.0, normalize=False)
    data = PretrainDataset(records, pipeline=pipeline, sampler=sampler_, repeats=cfg.repeated_sampling, seed=cfg.seed)
    sampler, loader = run.train_loader(
        data, batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers, collate_fn=collate_repeated
    )
    loop = TrainLoop(loader, sampler, data, accum_steps=cfg.accum_steps, epochs=cfg.epochs, max_steps=cfg.max_steps)
    clips_per_step = cfg.batch_size * cfg.repeated_sampling * ctx.world_size * cfg.accum_steps
    lr, lr_note = cfg.peak_lr(clips_per_step)

    # ---- model, masks, optimizer ----------------------------------------------------------------------------------
    model = videomae_pretrain(cfg.model, patch_size=cfg.patch_size, target=cfg.target)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)  # encoder and decoder (the decoder runs every token of the clip)
    grid = model.grid((1, 3, cfg.num_frames, cfg.input_size, cfg.input_size))
    masker = MASKERS[cfg.mask_type](mask_ratio=cfg.mask_ratio)
    decoder_masker = RunningCellMasker(mask_ratio=cfg.decoder_mask_ratio) if cfg.decoder_mask_ratio > 0 else None
    adamw = partial(build_adamw, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    prepared = run.prepare(model, loop, lr=lr, build_optimizer=adamw)
    model, train_model, stepper = prepared.model, prepared.train_model, run.stepper
    run.log(
        f"tubemask pretraining: {len(data)} videos, model {cfg.model} (patch {cfg.patch_size}), grid {grid}, "
        f"{masker.num_masked(grid)}/{math.prod(grid)} tokens masked ({cfg.mask_type} {cfg.mask_ratio})"
        + (f", decoder keeps {1 - cfg.decoder_mask_ratio:.2f} of them (running cell)" if decoder_masker else "")
    )
    run.log(
        f"effective batch {clips_per_step} clips = {cfg.batch_size} videos x {cfg.repeated_sampling} clips (repeated "
        f"sampling) x {ctx.world_size} processes x {cfg.accum_steps} accumulation; lr {lr:.3g} ({lr_note})"
    )
    if cfg.repeated_sampling > 1:
        run.log(
            f"repeated sampling {cfg.repeated_sampling}: each epoch decodes every video once and trains on "
            f"{cfg.repeated_sampling} clips of it; {cfg.epochs} epochs = {cfg.epochs * cfg.repeated_sampling} clip-epochs"
        )

    probes = None
    probe_args = dict(videos_per_class=cfg.probe_videos_per_class, input_size=cfg.input_size, sampler=sampler_)
    if cfg.probe_every and run.is_main:
        if prepared.fsdp:  # the forward of a sharded model is a collective; the probe runs on rank 0 alone
            run.log("linear probe off under FSDP2 (run it on a saved encoder.pt instead)")
        elif (probes := probe_set_from_records(records, **probe_args)) is None:
            run.log("linear probe off: the training records carry fewer than two labelled classes")

    def run_probe(at_step: int) -> None:
        """Frozen-encoder linear probe + token statistics of whole probe clips, logged under `probe_*` keys."""
        was_training = model.training
        model.eval()

        def encode(clips: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), run.autocast():
                return model.forward_features(normalize_batch(clips.to(device))).float()

        values = probe_encoder(encode, probes, time_slots=grid[0], batch_size=cfg.batch_size)
        model.train(was_training)
        run.log_values(
            at_step,
            probe_mean_pool=values["probe_mean_pool"],
            probe_per_time=values["probe_per_time"],
            clip_token_participation_ratio=values["participation_ratio"],  # whole clips, not the visible tokens
            clip_token_position_variance=values["position_variance_fraction"],
        )
        run.log(
            f"step {at_step}: linear probe {values['probe_mean_pool']:.3f} (mean pool) / {values['probe_per_time']:.3f}"
            f" (per time slot), token participation ratio {values['participation_ratio']:.2f}"
        )

    run.open_metrics(resume_step=loop.step, tensorboard=cfg.tensorboard, total_steps=loop.end_step, desc="pretrain")
    if loop.step == 0 and probes is not None:
        run_probe(0)  # the random-initialisation baseline

    def masks_for(video: torch.Tensor, micro: int) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, int]]:
        # One generator per (seed, step, micro-step) for the GLOBAL batch, each rank taking its rows: masks do not
        # depend on the number of processes, and a resumed run draws the same ones. A content-aware masker reads this
        # rank's clips, so it draws this rank's rows from a generator of its own. The counts per row, read on the host
        # before the masks move, spare the forward its reads back from the device.
        rows, world, rank = video.shape[0], ctx.world_size, ctx.rank
        if masker.needs_video:
            g = step_generator(cfg.seed, loop.step, micro, rank=rank)
            mask = draw_mask(masker, rows, grid, generator=g, video=video)
        else:
            g = step_generator(cfg.seed, loop.step, micro)
            mask = draw_mask(masker, rows * world, grid, generator=g)[rank::world]
        counts = {"num_masked": masker.num_masked(grid)}
        if decoder_masker is None:
            return mask.to(device, non_blocking=True), None, counts
        dmask = decoder_masker(rows * world, grid, generator=g)[rank::world].to(mask.device)
        counts["num_queried"] = int((mask[0] & ~dmask[0]).sum())
        return mask.to(device, non_blocking=True), dmask.to(device, non_blocking=True), counts

    vis_every = cfg.vis_every or max(1, cfg.epochs // 10)
    last_vis_batch = None
    for _ in loop.epochs():
        train_model.train()
        for video in loop.batches():
            # uint8 [b c t h w] (channels-last memory) -> contiguous float32, normalised on the device
            video = normalize_batch(video.to(device, non_blocking=True))
            mask, dmask, counts = masks_for(video, loop.micro)
            with stepper.accumulating(train_model, last=loop.at_step_end):
                with run.autocast():
                    output = train_model(video, mask, dmask, **counts)
                # trivial floors: the loss of predicting all zeros, and of predicting the targets' mean (the best
                # constant; the same for per-cube normalised targets). A loss on its floor has learned nothing
                target = output.target.detach()
                floors = dict(zero_floor=target.pow(2).mean(), mean_floor=target.var(correction=0))
                latent, loss = output.latent.detach(), output.loss
                del output, target  # predictions and targets are freed once the backward has used them
                stepper.backward(loss, **floors)
            if not loop.at_step_end:
                continue
            values = run.optimizer_step(loop, clips=video.shape[0] * cfg.accum_steps * ctx.world_size)
            last_vis_batch = (video[:1].detach(), mask[:1], None if dmask is None else dmask[:1])
            if loop.every(cfg.diagnostics_every) and run.is_main:
                tokens = token_diagnostics(latent.float())
                values.update(token_norm=tokens["mean_norm"], participation_ratio=tokens["participation_ratio"])
            run.log_step(loop.step, **values)
            if probes is not None and loop.every(cfg.probe_every):
                run_probe(loop.step)
            run.save(loop, every=cfg.checkpoint_every)
        if (
            last_vis_batch is not None
            and (loop.epoch % vis_every == 0 or loop.stopped)
            and (run.is_main or prepared.fsdp)
        ):
            # FSDP2 gathers weights collectively, so there every rank runs the forward and rank 0 writes
            stem = out / f"reconstruction-epoch{loop.epoch:04d}"
            save_model_reconstruction(model, *last_vis_batch, stem, autocast=run.autocast, write=run.is_main)
    if probes is not None and not loop.every(cfg.probe_every):
        run_probe(loop.step)  # the final encoder

    bad = run.report_bad_videos()  # every process's bad videos, workers and ranks included
    dataset_note = {"name": dataset.name if cfg.data_root is not None else "synthetic", "sampler": repr(sampler_)}
    model_state = run.checkpointer.save_final(out / "final.pt", step=loop.step, epoch=loop.epoch, dataset=dataset_note)
    run.finish()
    if run.is_main:
        encoder = {k: v for k, v in model_state.items() if k.startswith(("tokenizer.", "encoder."))}
        save_checkpoint(out / "encoder.pt", {"model": encoder, "config": config_dict(cfg)})
        plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        plot_diagnostics(read_jsonl(out / "metrics.jsonl"), out / "diagnostics.png", title="pretraining diagnostics")
        run.log(
            f"done: {loop.step} steps; wrote final.pt, encoder.pt, metrics.jsonl, loss.png, diagnostics.png and "
            f"reconstruction pictures to {out}"
        )
    return {
        "step": loop.step,
        "epoch": loop.epoch,
        "skipped_steps": stepper.guard.skipped,
        "bad_videos": len(bad.counts),
    }


if __name__ == "__main__":
    script_main(main, PretrainConfig)
