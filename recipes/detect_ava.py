"""VideoMAE action detection on AVA v2.2 (or a built-in synthetic AVA), top to bottom in one file.

    python recipes/detect_ava.py                                  # tiny model, synthetic AVA, CPU, minutes
    python recipes/detect_ava.py --finetune outputs/pretrain_ucf101/final.pt  # tiny, patch 8 like that recipe
    torchrun --nproc-per-node 8 recipes/detect_ava.py --data-root /data/ava --model base \\
        --finetune /ckpt/videomae_vit_b_k400_finetune.pth    # docs/detection.md: the paper's ViT-B row
    python recipes/detect_ava.py --data-root /data/ava --model base --eval-only --finetune AVA_CHECKPOINT.pth

The model is VideoMAE's AVA detector (Tong et al., arXiv 2203.12602): the ViT over every token of a 16 x 4 clip
centred on the keyframe, its final norm, a temporal mean of the `[b, d, T, H, W]` tokens, RoIAlign 7 x 7 per person
box, a max pool and a linear layer to the 80 AVA actions; trained on ground-truth boxes with a sigmoid BCE, tested on
person detections with score >= 0.8 (score = sigmoid x detection score). The test writes `detections.csv` in the
official results format and reports frame mAP@0.5 over the label map's 60 classes as the official code computes it
from that file ([tubemask.eval.ava_protocol][]): `map` with every detection (VideoMAE / SlowFast: the protocol of the
paper's table) and `map_top50` with the ActivityNet script's 50 best pairs per frame.

`--data-root` expects SlowFast's / VideoMAE's AVA layout (docs/detection.md), each file overridable: `videos/` (the
15-minute cuts: `--time-offset 900`), `annotations/ava_{train,val}_v2.2.csv`, the exclusions, the label map, and the
person boxes (SlowFast's CSV, or AlphAction's JSON with `--val-image-map`). Its defaults are the official ViT-B AVA
scripts': base lr 5e-4 (Kinetics-fine-tuned start), layer decay 0.75, drop path 0.2, 30 epochs with 5 of warmup, a
total batch of 128 clips (gradient accumulation reaches it on fewer GPUs: the log says how), evaluation every 10
epochs; switches turn on the official augmentations, test boxes and RoIAlign. Without `--data-root` a synthetic AVA
is generated once into `.cache/` and a CPU-sized run trains on it. Writes checkpoints, `metrics.jsonl`,
`test_results.json`, `detections.csv` and `final.pt` to `--output-dir`; `--resume` continues exactly;
`--eval-only --finetune CKPT` scores a trained detector without reading the training set. The plumbing is
`tubemask.train`; this file is the method.
"""

import dataclasses
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from tubemask.data import AVADataset, AVAFiles, DecodeOptions, collate_ava, make_synthetic_ava, read_ava_boxes
from tubemask.data.ava import AVAFileOptions
from tubemask.detection import ActionDetector, videomae_action_detector
from tubemask.eval.ava_protocol import (
    ACTIVITYNET_CAP,
    AVATestAnnotations,
    AVATestResult,
    describe_test,
    read_test_annotations,
    write_test_outputs,
)
from tubemask.eval.ava_scoring import evaluate_detector
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.models import SIZES
from tubemask.pos_embed import ResizedSinusoidPositionEmbedding
from tubemask.shapes import shape_checks_disabled
from tubemask.train.config import TrainConfig, fill_from_preset
from tubemask.train.distributed import all_reduce_mean
from tubemask.train.logs import plot_loss_curve
from tubemask.train.loop import TrainLoop
from tubemask.train.optim import build_adamw
from tubemask.train.run import Run, script_main

REPO = Path(__file__).resolve().parent.parent
TUBELET = 2  # frames per cube, as in every VideoMAE checkpoint


@dataclass
class DetectConfig(AVAFileOptions, TrainConfig):
    """Options of the AVA detection recipe (AVA's files: AVAFileOptions; the run options of every recipe: TrainConfig).
    `None` means "the preset's value" (full AVA with --data-root, a CPU-sized run on synthetic data without)."""

    output_dir: Path = Path("outputs/detect_ava")
    """Checkpoints, metrics, test results and final.pt go here."""
    finetune: Path | None = None
    """Pretrained / fine-tuned weights, tubemask's or official (an AVA one with its head); absent: from scratch."""
    eval_only: bool = False
    """Score --finetune's detector on the test set and stop: no training set is read."""
    total_batch: int | None = None
    """Clips per optimizer step over all processes, reached by accumulation (--data-root default: 128, as official,
    unless --accum-steps is given)."""
    num_classes: int = 80
    """Logits of the head (AVA's action ids 1..80; only the label map's classes are evaluated)."""
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
    """Test-time short side in pixels (--data-root default: 256); the long side is rounded to the patch size."""
    scale_jitter: tuple[int, int] | None = None
    """Training short side drawn from this range (--data-root default: 256 to 320)."""
    crop_size: int | None = None
    """Training crop, a multiple of --patch-size (--data-root default: 224)."""
    flip: float | None = None
    """Training flip probability (--data-root default: 0.5; synthetic: 0, its actions are directions)."""
    box_jitter: float | None = None
    """Training box jitter, a fraction of the box's size (--data-root default: 0.05; synthetic: 0)."""
    official_box_jitter: bool = False
    """Jitter each edge of the training boxes as VideoMAE's AVA code does, instead of --box-jitter."""
    colour_jitter: bool = False
    """HSV colour jitter of the training clips as VideoMAE's AVA code does."""
    test_box_extension: tuple[float, float] = (0.0, 0.0)
    """Widen / heighten the boxes pooled at test time by these fractions (VideoMAE's AVA code: 0.1 0.05)."""
    roi_aligned: bool = True
    """RoIAlign's half-cell shift; VideoMAE's AVA code has none (--no-roi-aligned to score its checkpoints)."""
    seek_mode: Literal["exact", "approximate"] | None = None
    """torchcodec seeking (--data-root default: approximate: exact mode scans a 15-minute movie's packets at each
    open, 77 ms against 6 ms on a 27k-frame file; synthetic: exact)."""
    detection_threshold: float = 0.8
    """Person detections with a lower score are not classified at test time."""
    eval_every: int | None = None
    """Evaluate every N epochs, 0 = only the final test (--data-root default: 10, as official; synthetic: 1)."""
    synthetic_videos: int = 96
    """Synthetic AVA size in videos (two thirds train); each gives a keyframe per second but the first."""
    synthetic_seconds: int = 3
    """Length of each synthetic video (many short videos: the actors' looks vary more than with few long ones)."""


# fmt: off
FULL = dict(  # the official ViT-B AVA scripts: 4 clips x 32 GPUs = 128, lr 5e-4 x 128 / 256, val_freq 10
    model="base", patch_size=16, epochs=30, batch_size=8, total_batch=128, base_lr=5e-4, warmup_epochs=5.0,
    weight_decay=0.05, layer_decay=0.75, drop_path=0.2, head_dropout=0.0,  # the official head: no dropout
    num_frames=16, sampling_rate=4, short_side=256, scale_jitter=(256, 320), crop_size=224, flip=0.5, box_jitter=0.05,
    seek_mode="approximate", eval_every=10,
)
SYNTHETIC = dict(
    FULL, model="tiny", patch_size=8, epochs=10, batch_size=4, total_batch=None, eval_every=1, warmup_epochs=1.0,
    layer_decay=1.0, drop_path=0.0,
    base_lr=0.2,  # 3.1e-3 at 4 clips per step: a tiny model from scratch on 128 keyframes
    num_frames=8, sampling_rate=2, short_side=64, scale_jitter=(64, 80), crop_size=64, box_jitter=0.0,
    flip=0.0,  # "move left" flipped is "move right": the synthetic labels are directions
    seek_mode="exact",
)
# fmt: on


def resolve(cfg: DetectConfig) -> DetectConfig:
    """Fill every `None` option from the preset (full AVA with --data-root, synthetic without). An explicit
    --accum-steps replaces the preset's --total-batch: the two are one choice, the accumulation."""
    preset = FULL if cfg.data_root is not None else SYNTHETIC
    if cfg.accum_steps != 1:
        preset = dict(preset, total_batch=None)
    return fill_from_preset(cfg, preset)


def ava_files(cfg: DetectConfig, run: Run) -> AVAFiles:
    """The AVA files under --data-root (each overridable), or the synthetic AVA generated once on rank 0."""
    if cfg.data_root is not None:
        return cfg.files_under_root(train=not cfg.eval_only)
    root = REPO / ".cache" / f"synthetic_ava_{cfg.synthetic_videos}x{cfg.synthetic_seconds}s"  # a folder per size
    size = dict(num_videos=cfg.synthetic_videos, seconds=cfg.synthetic_seconds, seed=0)
    return run.rank0_first(lambda: make_synthetic_ava(root, **size)).files(time_offset=cfg.time_offset)


def build_dataset(cfg: DetectConfig, frames: Mapping, files: AVAFiles, *, train: bool) -> AVADataset:
    """Keyframe clips with their boxes: scale jitter, crop, flip, box and colour jitter for training; resize (and the
    test-box extension) for test."""
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
        official_box_jitter=cfg.official_box_jitter,
        colour_jitter=cfg.colour_jitter,
        test_box_extension=tuple(cfg.test_box_extension),
        size_multiple=cfg.patch_size,
        decode=DecodeOptions(seek_mode=cfg.seek_mode),
        seed=cfg.seed,
    )


def build_model(cfg: DetectConfig) -> ActionDetector:
    """VideoMAE's AVA detector: encoder with its final norm, temporal mean, RoIAlign 7 x 7, max pool, linear.

    Positions: VideoMAE's sinusoid on the training crop's grid, resized bicubically for the full-frame test clips (as
    VideoMAE's AVA code does), so a token keeps the code of its place whatever the frame's aspect ratio."""
    base_grid = (cfg.num_frames // TUBELET, cfg.crop_size // cfg.patch_size, cfg.crop_size // cfg.patch_size)
    return videomae_action_detector(
        cfg.model,
        num_classes=cfg.num_classes,
        tubelet_size=TUBELET,
        patch_size=cfg.patch_size,
        drop_path_rate=cfg.drop_path,
        head_dropout=cfg.head_dropout,
        aligned=cfg.roi_aligned,
        pos_embed=ResizedSinusoidPositionEmbedding(SIZES[cfg.model].embed_dim, base_grid),
    )


def accumulation(cfg: DetectConfig, world_size: int) -> int:
    """Micro-steps per optimizer step: --accum-steps, or what reaches --total-batch with this many processes."""
    if cfg.total_batch is None:
        return cfg.accum_steps
    per_step = cfg.batch_size * world_size
    if cfg.accum_steps != 1 or cfg.total_batch % per_step:
        raise SystemExit(
            f"--total-batch {cfg.total_batch} must be a multiple of --batch-size x processes = {cfg.batch_size} x "
            f"{world_size} = {per_step}, without --accum-steps ({cfg.accum_steps}): it sets the accumulation"
        )
    return cfg.total_batch // per_step


def main(cfg: DetectConfig) -> dict:
    """Run the detection fine-tuning and test (or, with --eval-only, the test); returns a summary dict. With
    `--compile` the runtime shape checks are off for the run (Dynamo cannot trace them)."""
    with shape_checks_disabled() if cfg.compile else nullcontext():
        return train(resolve(cfg))


def train(cfg: DetectConfig) -> dict:
    if cfg.crop_size % cfg.patch_size or cfg.num_frames % TUBELET:
        raise SystemExit(
            f"--crop-size ({cfg.crop_size}) must be a multiple of --patch-size ({cfg.patch_size}) and --num-frames "
            f"({cfg.num_frames}) of {TUBELET}: training batches clips of one size, and its grid anchors the positions"
        )
    if not 0.0 <= cfg.detection_threshold <= 1.0:
        raise SystemExit(f"--detection-threshold must be in [0, 1], got {cfg.detection_threshold}")
    if cfg.eval_only and cfg.finetune is None:
        raise SystemExit("--eval-only needs --finetune: the detector checkpoint to score")
    run = Run.start(cfg)
    ctx, device, out = run.ctx, run.device, run.out

    # ---- data -------------------------------------------------------------------------------------------------
    files = ava_files(cfg, run)
    test = read_test_annotations(files, min_score=cfg.detection_threshold, num_classes=cfg.num_classes)
    test_set = build_dataset(cfg, test.person_boxes, files, train=False)
    test_set.failures.journal = run.journal
    about = test.describe(min_score=cfg.detection_threshold, num_classes=cfg.num_classes, source=files.val_detections)
    run.log(f"test: {about}; time offset {files.time_offset:g} s")

    model = build_model(cfg)
    if cfg.eval_only:
        return evaluate_only(cfg, run, model, test_set, test)
    train_frames = read_ava_boxes(files.train_csv, kind="ground_truth", num_classes=cfg.num_classes)
    data = build_dataset(cfg, train_frames, files, train=True)
    generator = torch.Generator().manual_seed(cfg.seed)  # keeps the global RNG (drop path) off the loader's seed
    sampler, loader = run.train_loader(
        data, batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers, collate_fn=collate_ava, generator=generator
    )
    accum_steps = accumulation(cfg, ctx.world_size)
    run.cfg = cfg = dataclasses.replace(cfg, accum_steps=accum_steps)  # the step tail divides each micro-step by it
    loop = TrainLoop(loader, sampler, data, accum_steps=accum_steps, epochs=cfg.epochs, max_steps=cfg.max_steps)
    clips_per_step = cfg.batch_size * ctx.world_size * accum_steps
    lr, lr_note = cfg.peak_lr(clips_per_step)

    # ---- model, optimizer ------------------------------------------------------------------------------------------
    if cfg.finetune is not None and not run.resumed:  # a resumed run has the weights in its checkpoint
        run.log(f"--finetune: {load_pretrained_encoder(model, cfg.finetune)}")
    elif cfg.finetune is None:
        run.log("no --finetune checkpoint: the encoder starts from random weights")
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    adamw = partial(build_adamw, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), layer_decay=cfg.layer_decay)
    prepared = run.prepare(model, loop, lr=lr, build_optimizer=adamw, reseed_per_rank=True)
    model, train_model = prepared.model, prepared.train_model
    train_boxes = sum(frame.boxes.shape[0] for frame in train_frames.values())
    run.log(f"train: {len(train_frames)} keyframes ({train_boxes} boxes)")
    box_jitter = "official" if cfg.official_box_jitter else cfg.box_jitter
    run.log(
        f"model {cfg.model} (patch {cfg.patch_size}), clips of {cfg.num_frames} frames every {cfg.sampling_rate}; "
        f"train short side {cfg.scale_jitter[0]}-{cfg.scale_jitter[1]}, crop {cfg.crop_size}, flip {cfg.flip}, box "
        f"jitter {box_jitter}, colour jitter {cfg.colour_jitter}; test short side {cfg.short_side}, full frame, box "
        f"extension {tuple(cfg.test_box_extension)}; RoIAlign aligned={cfg.roi_aligned}; {cfg.seek_mode} seeking"
    )
    how = f" (--total-batch {cfg.total_batch})" if cfg.total_batch is not None else ""
    run.log(
        f"total batch {clips_per_step} clips{how} = {cfg.batch_size} per process x {ctx.world_size} processes x "
        f"{accum_steps} accumulation; lr {lr:.3g} ({lr_note}), layer decay {cfg.layer_decay}, weight decay "
        f"{cfg.weight_decay}, drop path {cfg.drop_path}, head dropout {cfg.head_dropout}"
    )

    def frame_map(show: bool) -> AVATestResult:  # under FSDP2 every rank makes as many (collective) calls
        return score_test_set(cfg, run, model, test_set, test, show=show, calls=run.eval_calls)

    run.open_metrics(resume_step=loop.step, tensorboard=cfg.tensorboard, total_steps=loop.end_step, desc="detect-train")
    for _ in loop.epochs():
        train_model.train()
        for batch in loop.batches():
            batch = batch.to(device)
            with run.stepper.accumulating(train_model, last=loop.at_step_end):
                with run.autocast():
                    logits = train_model(batch.clips, batch.rois)  # [r classes]
                # the mean over every process's boxes (a rank's share of them varies): the one-process loss
                boxes = all_reduce_mean(torch.tensor(float(logits.shape[0]), device=device))
                loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels, reduction="sum")
                run.stepper.backward(loss / (boxes * logits.shape[1]))
            if not loop.at_step_end:
                continue
            values = run.optimizer_step(loop, clips=batch.clips.shape[0] * accum_steps * ctx.world_size)
            run.log_step(loop.step, **values)
            run.save(loop, every=cfg.checkpoint_every)
        if loop.epoch_ended and cfg.eval_every and loop.epoch % cfg.eval_every == 0 and not loop.stopped:
            result = frame_map(show=False)
            run.log(
                f"after epoch {loop.epoch}: frame mAP {result.map:.4f} (top {ACTIVITYNET_CAP}: {result.map_top50:.4f})"
            )
            run.log_values(loop.step, epoch=loop.epoch - 1, val_map=result.map, val_map_top50=result.map_top50)

    # ---- final test ---------------------------------------------------------------------------------------------
    run.log(f"testing on {len(test_set)} keyframes of person detections")
    result = frame_map(show=run.is_main)
    bad = run.report_bad_videos()  # every process's bad videos (training and test; workers and ranks)
    run.log_values(loop.step, test_map=result.map, test_map_top50=result.map_top50)
    extra = dict(label_map={str(k): v for k, v in test.label_map.items()}, step=loop.step, epoch=loop.epoch)
    run.checkpointer.save_final(out / "final.pt", **extra, test={"map": result.map, "map_top50": result.map_top50})
    run.finish()
    if run.is_main:
        report_test(cfg, run, result, test.label_map, step=loop.step)
        if loop.step > 0:
            plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        run.log(f"done: {loop.step} steps; wrote final.pt, test_results.json, detections.csv, metrics.jsonl to {out}")
    summary = {"step": loop.step, "epoch": loop.epoch, "skipped_steps": run.stepper.guard.skipped}
    return summary | {"map": result.map, "map_top50": result.map_top50, "bad_videos": len(bad.counts)}


def score_test_set(cfg, run, model, test_set, test: AVATestAnnotations, *, show, calls=lambda b: None) -> AVATestResult:
    """Score every person box of the test set (split over the processes) and evaluate it as the official code does."""
    scoring = dict(batch_size=cfg.batch_size, workers=cfg.workers, device=run.device, autocast=run.autocast)
    scoring.update(rank=run.ctx.rank, world_size=run.ctx.world_size, calls=calls, show=show)
    return evaluate_detector(
        model, test_set, test.ground_truth, class_ids=test.class_ids, excluded=test.excluded, **scoring
    )


def evaluate_only(cfg, run, model, test_set, test: AVATestAnnotations) -> dict:
    """--eval-only: load --finetune's detector (head included), score the test set, write the results."""
    report = load_pretrained_encoder(model, cfg.finetune)
    run.log(f"--finetune: {report}")
    if "head.head.weight" not in report.loaded:
        raise SystemExit(
            f"--eval-only: {cfg.finetune} has no detection head of {cfg.num_classes} classes to score with"
        )
    result = score_test_set(cfg, run, model.to(run.device), test_set, test, show=run.is_main)
    bad = run.report_bad_videos()
    run.finish()
    if run.is_main:
        report_test(cfg, run, result, test.label_map, step=None)
    return {"step": 0, "map": result.map, "map_top50": result.map_top50, "bad_videos": len(bad.counts)}


def report_test(cfg, run, result: AVATestResult, label_map, *, step) -> None:
    """Write detections.csv and test_results.json, and log both figures."""
    protocol = dict(detection_threshold=cfg.detection_threshold, score="sigmoid(logit) x detection score")
    protocol.update(short_side=cfg.short_side, frames=f"{cfg.num_frames} x {cfg.sampling_rate}")
    about = dict(protocol=protocol, step=step, finetune=cfg.finetune and str(cfg.finetune), eval_only=cfg.eval_only)
    report = write_test_outputs(run.out, result, label_map, **about)
    run.log(describe_test(result, num_classes=len(label_map), rows=report["detections_csv"]))


if __name__ == "__main__":
    script_main(main, DetectConfig)
