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
`final.pt` to `--output-dir`; `--resume` continues exactly from the latest checkpoint. The plumbing (processes,
precision, checkpoints, the optimizer-step tail) is `tubemask.train`; this file is the method.
"""

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from tubemask.data import (
    AVADataset,
    AVAFiles,
    AVAFrame,
    DecodeOptions,
    collate_ava,
    make_synthetic_ava,
    read_ava_boxes,
    read_ava_exclusions,
    read_ava_label_map,
)
from tubemask.detection import ActionDetector, videomae_action_detector
from tubemask.eval.ava import FrameMAPResult, frame_average_precision, write_frame_map_report
from tubemask.eval.ava_scoring import score_person_boxes
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
class DetectConfig(TrainConfig):
    """Options of the AVA detection recipe (and the run options of every recipe, see TrainConfig). `None` means "the
    preset's value" (full AVA with --data-root, a CPU-sized run on synthetic data without)."""

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
    synthetic_videos: int = 96
    """Synthetic AVA size in videos (two thirds train); each gives a keyframe per second but the first."""
    synthetic_seconds: int = 3
    """Length of each synthetic video (many short videos: the actors' looks vary more than with few long ones)."""


# fmt: off
FULL = dict(
    model="base", patch_size=16, epochs=30, batch_size=8, base_lr=2.5e-4, warmup_epochs=2.0, weight_decay=0.05,
    layer_decay=0.75, drop_path=0.2, head_dropout=0.0,  # REFERENCE.md's head: max pool -> Linear, no dropout
    num_frames=16, sampling_rate=4, short_side=256, scale_jitter=(256, 320), crop_size=224, flip=0.5, box_jitter=0.05,
    seek_mode="approximate",
)
SYNTHETIC = dict(
    FULL, model="tiny", patch_size=8, epochs=10, batch_size=4, warmup_epochs=1.0, layer_decay=1.0, drop_path=0.0,
    base_lr=0.2,  # 3.1e-3 at 4 clips per step: a tiny model from scratch on 128 keyframes
    num_frames=8, sampling_rate=2, short_side=64, scale_jitter=(64, 80), crop_size=64, box_jitter=0.0,
    flip=0.0,  # "move left" flipped is "move right": the synthetic labels are directions
    seek_mode="exact",
)
# fmt: on


def resolve(cfg: DetectConfig) -> DetectConfig:
    """Fill every `None` option from the preset (full AVA with --data-root, synthetic without)."""
    return fill_from_preset(cfg, FULL if cfg.data_root is not None else SYNTHETIC)


def ava_files(cfg: DetectConfig, run: Run) -> AVAFiles:
    """The AVA files under --data-root (each overridable), or the synthetic AVA generated once on rank 0."""
    if cfg.data_root is not None:
        options = ("video_dir", "train_csv", "val_csv", "val_detections", "label_map", "exclusions")
        try:
            return AVAFiles.from_root(cfg.data_root, **{name: getattr(cfg, name) for name in options})
        except FileNotFoundError as error:
            raise SystemExit(str(error)) from None
    root = REPO / ".cache" / f"synthetic_ava_{cfg.synthetic_videos}x{cfg.synthetic_seconds}s"  # a folder per size
    size = dict(num_videos=cfg.synthetic_videos, seconds=cfg.synthetic_seconds, seed=0)
    ava = run.rank0_first(lambda: make_synthetic_ava(root, **size))
    paths = (ava.video_root, ava.train_csv, ava.val_csv, ava.val_detections_csv, ava.label_map, ava.exclusions)
    return AVAFiles(*paths, time_offset=ava.time_offset)


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
    base_grid = (cfg.num_frames // TUBELET, cfg.crop_size // cfg.patch_size, cfg.crop_size // cfg.patch_size)
    return videomae_action_detector(
        cfg.model,
        num_classes=cfg.num_classes,
        tubelet_size=TUBELET,
        patch_size=cfg.patch_size,
        drop_path_rate=cfg.drop_path,
        head_dropout=cfg.head_dropout,
        pos_embed=ResizedSinusoidPositionEmbedding(SIZES[cfg.model].embed_dim, base_grid),
    )


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
        return train(resolve(cfg))


def train(cfg: DetectConfig) -> dict:
    if cfg.crop_size % cfg.patch_size or cfg.num_frames % TUBELET:
        raise SystemExit(
            f"--crop-size ({cfg.crop_size}) must be a multiple of --patch-size ({cfg.patch_size}) and --num-frames "
            f"({cfg.num_frames}) of {TUBELET}: training batches clips of one size, and its grid anchors the positions"
        )
    if not 0.0 <= cfg.detection_threshold <= 1.0:
        raise SystemExit(f"--detection-threshold must be in [0, 1], got {cfg.detection_threshold}")
    run = Run.start(cfg)
    ctx, device, out = run.ctx, run.device, run.out

    # ---- data -------------------------------------------------------------------------------------------------
    files = ava_files(cfg, run)
    read = partial(read_ava_boxes, num_classes=cfg.num_classes)
    train_frames, val_truth = read(files.train_csv, kind="ground_truth"), read(files.val_csv, kind="ground_truth")
    val_boxes = read(files.val_detections, kind="detections", min_score=cfg.detection_threshold)
    label_map = read_ava_label_map(files.label_map)
    class_ids = sorted(label_map)
    if class_ids[-1] > cfg.num_classes:
        raise SystemExit(f"{files.label_map}: class id {class_ids[-1]} is above --num-classes {cfg.num_classes}")
    excluded = read_ava_exclusions(files.exclusions) if files.exclusions is not None else set()
    data = build_dataset(cfg, train_frames, files, train=True)
    generator = torch.Generator().manual_seed(cfg.seed)  # keeps the global RNG (drop path) off the loader's seed
    sampler, loader = run.train_loader(
        data, batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers, collate_fn=collate_ava, generator=generator
    )
    loop = TrainLoop(loader, sampler, data, accum_steps=cfg.accum_steps, epochs=cfg.epochs, max_steps=cfg.max_steps)
    clips_per_step = cfg.batch_size * ctx.world_size * cfg.accum_steps
    lr, lr_note = cfg.peak_lr(clips_per_step)

    # ---- model, optimizer ------------------------------------------------------------------------------------------
    model = build_model(cfg)
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
    run.log(
        f"tubemask AVA detection: {len(train_frames)} train keyframes ({train_boxes} boxes), {len(val_boxes)} test "
        f"keyframes with detections >= {cfg.detection_threshold}, {len(val_truth)} with ground truth, "
        f"{len(class_ids)} evaluated of {cfg.num_classes} classes, {len(excluded)} excluded timestamps"
    )
    run.log(
        f"model {cfg.model} (patch {cfg.patch_size}), clips of {cfg.num_frames} frames every {cfg.sampling_rate}; "
        f"train short side {cfg.scale_jitter[0]}-{cfg.scale_jitter[1]}, crop {cfg.crop_size}, flip {cfg.flip}, box "
        f"jitter {cfg.box_jitter}; test short side {cfg.short_side}, full frame; {cfg.seek_mode} seeking"
    )
    run.log(
        f"effective batch {clips_per_step} clips = {cfg.batch_size} x {ctx.world_size} processes x {cfg.accum_steps} "
        f"accumulation; lr {lr:.3g} ({lr_note}), layer decay {cfg.layer_decay}, weight decay {cfg.weight_decay}, "
        f"drop path {cfg.drop_path}, head dropout {cfg.head_dropout}"
    )

    test_set = build_dataset(cfg, val_boxes, files, train=False)
    test_set.failures.journal = run.journal

    def frame_map(show: bool) -> FrameMAPResult:
        found = score_person_boxes(
            model,
            test_set,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            device=device,
            autocast=run.autocast,
            rank=ctx.rank,
            world_size=ctx.world_size,
            calls=run.eval_calls,  # under FSDP2 every rank makes as many (collective) forward calls as the busiest
            show=show,
        )
        return evaluate(found, val_truth, class_ids, excluded)

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
            values = run.optimizer_step(loop, clips=batch.clips.shape[0] * cfg.accum_steps * ctx.world_size)
            run.log_step(loop.step, **values)
            run.save(loop, every=cfg.checkpoint_every)
        if loop.epoch_ended and cfg.eval_every and loop.epoch % cfg.eval_every == 0 and not loop.stopped:
            result = frame_map(show=False)
            run.log(f"after epoch {loop.epoch}: frame mAP {result.mean_ap:.4f}")
            run.log_values(loop.step, epoch=loop.epoch - 1, val_map=result.mean_ap)

    # ---- final test ---------------------------------------------------------------------------------------------
    run.log(f"testing on {len(test_set)} keyframes of person detections")
    result = frame_map(show=run.is_main)
    bad = run.report_bad_videos()  # every process's bad videos (training and test; workers and ranks)
    run.log_values(loop.step, test_map=result.mean_ap)
    label_names = {str(k): v for k, v in label_map.items()}
    extra = dict(label_map=label_names, step=loop.step, epoch=loop.epoch, test={"map": result.mean_ap})
    run.checkpointer.save_final(out / "final.pt", **extra)
    run.finish()
    if run.is_main:
        protocol = dict(metric="frame mAP, Pascal-VOC AP at IoU 0.5, excluded timestamps left out")
        protocol.update(detection_threshold=cfg.detection_threshold, score="sigmoid(logit) x detection score")
        protocol.update(short_side=cfg.short_side, frames=f"{cfg.num_frames} x {cfg.sampling_rate}")
        about = dict(protocol=protocol, step=loop.step, finetune=cfg.finetune and str(cfg.finetune))
        write_frame_map_report(out / "test_results.json", result, label_map, **about)
        if loop.step > 0:
            plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        run.log(
            f"test: frame mAP@0.5 {result.mean_ap:.4f} over {len(class_ids)} classes, {result.num_frames} keyframes"
        )
        run.log(f"done: {loop.step} steps; wrote final.pt, test_results.json, metrics.jsonl to {out}")
    summary = {"step": loop.step, "epoch": loop.epoch, "skipped_steps": run.stepper.guard.skipped}
    return summary | {"map": result.mean_ap, "bad_videos": len(bad.counts)}


if __name__ == "__main__":
    script_main(main, DetectConfig)
