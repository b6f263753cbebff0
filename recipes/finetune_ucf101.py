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
`confusion_matrix.png` the confusion matrix. The plumbing (processes, precision, checkpoints, the optimizer-step tail)
is `tubemask.train`; this file is the method.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tubemask import VideoClassifier, videomae_classifier
from tubemask.data import (
    DecodeOptions,
    DenseSampler,
    EvalPipeline,
    FinetuneDataset,
    FinetunePipeline,
    Mixup,
    MultiViewDataset,
    SegmentSampler,
    VideoRecord,
    collate_repeated,
    read_ucf101,
)
from tubemask.eval.metrics import MultiViewResult, evaluate_multiview, write_classification_report
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.motion_aware import MotionAwareMasker
from tubemask.shapes import shape_checks_disabled
from tubemask.train.config import DatasetPreset, TrainConfig, fill_from_preset
from tubemask.train.layouts import synthetic_ucf101_records
from tubemask.train.logs import plot_loss_curve
from tubemask.train.loop import TrainLoop
from tubemask.train.optim import build_adamw
from tubemask.train.run import Run, script_main
from tubemask.train.seeding import step_generator

REPO = Path(__file__).resolve().parent.parent


@dataclass
class FinetuneConfig(TrainConfig):
    """Options of the fine-tuning recipe (and the run options of every recipe, see TrainConfig). `None` means "the
    preset's value": the paper's recipe with --data-root (base, patch 16, 100 epochs, 8 videos x 2 clips per GPU,
    base lr 5e-4, 5 warmup epochs, weight decay 0.05), a CPU-sized run on synthetic data without; --linear-probe then
    turns the regularisers off."""

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
    num_classes: int | None = None
    """Logits of the head; default: 1 + the largest label of the train and test lists."""
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
    num_frames: int | None = None
    """Frames per clip (paper: 16; synthetic: 8)."""
    sampling_rate: int | None = None
    """Frame stride (paper: 4; synthetic: 2)."""
    input_size: int | None = None
    """Crop size in pixels (paper: 224; synthetic: 32)."""
    repeated_sampling: int | None = None
    """Clips drawn per decoded video, each augmented independently (paper: 2); batch clips = batch-size x this."""
    test_clips: int | None = None
    """Temporal views per test video (paper: 5)."""
    test_crops: Literal[1, 3] | None = None
    """Spatial views per test clip: 3 along the long side, or the centre (paper: 3; synthetic: 1, frames are square)."""
    eval_every: int = 1
    """Single-view (centre clip, centre crop) evaluation on the test list every N epochs; 0 = only the final test."""
    motion_drop: float = 0.0
    """Share of each clip's cubes dropped before the encoder, the least moving first, at training and test alike
    (EVEREST's fine-tuning, arXiv 2211.10636, drops 0.4): the encoder's cost falls with the tokens; 0 = every cube."""
    ema: bool = False
    """Keep an exponential moving average of the weights; it is what gets evaluated and tested."""
    ema_decay: float | None = None
    """EMA decay per optimizer step (paper scripts: 0.9999; synthetic: 0.99)."""
    synthetic_videos_per_class: int = 200
    """Synthetic dataset size (per class, 10 classes); keep it equal to the pretraining recipe's to share the files."""


# fmt: off
PAPER = dict(
    model="base", patch_size=16, epochs=100, batch_size=8, base_lr=5e-4, warmup_epochs=5.0, weight_decay=0.05,
    layer_decay=0.7, drop_path=0.2, head_dropout=0.5, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
    randaugment="rand-m7-n4-mstd0.5-inc1", random_erasing=0.25, flip=0.5, sampling_rate=4, input_size=224,
    repeated_sampling=2, test_clips=5, test_crops=3, ema_decay=0.9999, num_frames=16,
)
SYNTHETIC = dict(  # the pretraining recipe's synthetic clips: 8 frames of 32 pixels, black background
    PAPER, model="tiny", patch_size=8, epochs=3, batch_size=16, warmup_epochs=1.0, num_frames=8, sampling_rate=2,
    input_size=32, base_lr=8e-3,  # 1e-3 at 32 clips per step
    flip=0.0,  # the synthetic classes are directions: a flipped "move left" is "move right"
    test_crops=1,  # the synthetic frames are square at the input size: three crops would be the same picture
    ema_decay=0.99,
)
LINEAR_PROBE = dict(  # a frozen encoder: no regularisers
    weight_decay=0.0, layer_decay=1.0, drop_path=0.0, head_dropout=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0,
    randaugment="none", random_erasing=0.0,
)
# fmt: on
UCF101 = DatasetPreset(
    "UCF101", read=lambda cfg, train: read_ucf101(cfg.data_root, split=cfg.split, train=train), paper=PAPER
)


def resolve(cfg: FinetuneConfig, dataset: DatasetPreset = UCF101) -> FinetuneConfig:
    """Fill every `None` option: the dataset's paper recipe with --data-root, the synthetic preset (with the dataset's
    synthetic overrides) without, then the linear-probe overrides."""
    preset = dataset.paper if cfg.data_root is not None else {**SYNTHETIC, **dataset.synthetic}
    return fill_from_preset(cfg, preset, LINEAR_PROBE if cfg.linear_probe else {})


def read_records(cfg: FinetuneConfig, dataset: DatasetPreset, run: Run, *, train: bool) -> list[VideoRecord]:
    """The train (or test) list, with 0-based labels: the dataset's, or the synthetic set's (the pretraining
    recipe's files, generated on rank 0 into `.cache/` while the other ranks wait)."""
    if cfg.data_root is not None:
        return dataset.read(cfg, train=train)
    return synthetic_ucf101_records(cfg, run, REPO / ".cache", train=train)


def class_names(cfg: FinetuneConfig, dataset: DatasetPreset, records: list[VideoRecord], n: int) -> list[str]:
    """A name per label: the dataset's own, else the folder of each label's videos (UCF101, HMDB51, synthetic)."""
    if cfg.data_root is not None and dataset.class_names is not None:
        names = dict(enumerate(dataset.class_names(cfg, records, n)))
    else:
        names = {r.label: r.path.parent.name for r in records}
    return [names.get(label, str(label)) for label in range(n)]


def frame_sampler(cfg: FinetuneConfig, dataset: DatasetPreset) -> DenseSampler | SegmentSampler:
    """Dense sampling (--num-frames every --sampling-rate; test: evenly spaced), or TSN segments (SSv2)."""
    if dataset.sampling == "segment":
        return SegmentSampler(num_segments=cfg.num_frames)
    return DenseSampler(clip_len=cfg.num_frames, stride=cfg.sampling_rate)


def build_model(cfg: FinetuneConfig, num_classes: int) -> VideoClassifier:
    """The fine-tuning VideoMAE: encoder without final norm, mean pooling, fc_norm, dropout, linear head; with
    `--motion-drop`, over the clip's most moving cubes only."""
    if not 0.0 <= cfg.motion_drop < 1.0:
        raise ValueError(f"--motion-drop {cfg.motion_drop}: the share of cubes dropped must be in [0, 1)")
    return videomae_classifier(
        cfg.model,
        num_classes=num_classes,
        patch_size=cfg.patch_size,
        drop_path_rate=cfg.drop_path,
        head_dropout=cfg.head_dropout,
        selector=MotionAwareMasker(mask_ratio=cfg.motion_drop) if cfg.motion_drop > 0 else None,
    )


def main(cfg: FinetuneConfig, dataset: DatasetPreset = UCF101) -> dict:
    """Run the fine-tuning; returns a summary dict. With `--compile` the runtime shape checks (jaxtyping) are off for
    the run and restored after it: Dynamo cannot trace their `isinstance` hooks (each checked call would end a graph)."""
    with shape_checks_disabled() if cfg.compile else nullcontext():
        return train(resolve(cfg, dataset), dataset)


def train(cfg: FinetuneConfig, dataset: DatasetPreset) -> dict:
    run = Run.start(cfg)
    ctx, device, out = run.ctx, run.device, run.out

    # ---- data: RandAugment, random resized crop, flip, random erasing; --repeated-sampling clips per video ----------
    train_records = read_records(cfg, dataset, run, train=True)
    test_records = read_records(cfg, dataset, run, train=False)
    num_classes = cfg.num_classes or 1 + max(r.label for r in [*train_records, *test_records])
    names = class_names(cfg, dataset, [*train_records, *test_records], num_classes)
    sampler_ = frame_sampler(cfg, dataset)
    randaugment = None if cfg.randaugment.lower() == "none" else cfg.randaugment
    pipeline = FinetunePipeline(cfg.input_size, randaugment=randaugment, flip_p=cfg.flip, erase_p=cfg.random_erasing)
    data = FinetuneDataset(
        train_records, pipeline=pipeline, sampler=sampler_, repeats=cfg.repeated_sampling, seed=cfg.seed
    )
    generator = torch.Generator().manual_seed(cfg.seed)  # keeps the global RNG (drop path) off the loader's seed
    sampler, loader = run.train_loader(
        data,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        workers=cfg.workers,
        collate_fn=collate_repeated,
        generator=generator,
    )
    loop = TrainLoop(loader, sampler, data, accum_steps=cfg.accum_steps, epochs=cfg.epochs, max_steps=cfg.max_steps)
    clips_per_step = cfg.batch_size * cfg.repeated_sampling * ctx.world_size * cfg.accum_steps
    lr, lr_note = cfg.peak_lr(clips_per_step)
    mixer = Mixup(num_classes, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing)

    # ---- model, optimizer ------------------------------------------------------------------------------------------
    model = build_model(cfg, num_classes)
    if cfg.finetune is not None and not run.resumed:  # a resumed run has the weights in its checkpoint
        run.log(f"--finetune: {load_pretrained_encoder(model, cfg.finetune)}")
    elif cfg.finetune is None:
        run.log("no --finetune checkpoint: the encoder starts from random weights")
    if cfg.linear_probe:
        model.requires_grad_(False)
        model.head.requires_grad_(True)  # fc_norm + linear layer
    if cfg.grad_checkpointing and not cfg.linear_probe:  # a frozen encoder keeps no activations anyway
        model.set_grad_checkpointing(True)
    layer_decay = None if cfg.linear_probe else cfg.layer_decay
    adamw = partial(build_adamw, lr=lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), layer_decay=layer_decay)
    ema_decay = cfg.ema_decay if cfg.ema else None
    prepared = run.prepare(model, loop, lr=lr, build_optimizer=adamw, ema_decay=ema_decay, reseed_per_rank=True)
    model, train_model, ema = prepared.model, prepared.train_model, run.stepper.ema
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.log(
        f"tubemask fine-tuning: {len(train_records)} train / {len(test_records)} test videos, {num_classes} classes, "
        f"model {cfg.model} (patch {cfg.patch_size}), {trainable:,} trainable parameters"
        + (" (linear probe: encoder frozen)" if cfg.linear_probe else "")
    )
    run.log(
        f"effective batch {clips_per_step} clips = {cfg.batch_size} videos x {cfg.repeated_sampling} clips (repeated "
        f"sampling) x {ctx.world_size} processes x {cfg.accum_steps} accumulation; lr {lr:.3g} ({lr_note}), "
        f"layer decay {layer_decay or 'off'}, weight decay {cfg.weight_decay}"
    )
    run.log(
        f"regularisation: drop path {cfg.drop_path}, head dropout {cfg.head_dropout}, mixup {cfg.mixup}, cutmix "
        f"{cfg.cutmix}, label smoothing {cfg.label_smoothing}, RandAugment {cfg.randaugment}, random erasing "
        f"{cfg.random_erasing}, flip {cfg.flip}" + (f", EMA {cfg.ema_decay}" if ema is not None else "")
    )
    run.log(f"test: {cfg.test_clips} clips x {cfg.test_crops} crops per video, softmax per view then mean")
    if cfg.motion_drop > 0:
        grid = model.grid((1, 3, cfg.num_frames, cfg.input_size, cfg.input_size))
        n = grid[0] * grid[1] * grid[2]
        kept = n - MotionAwareMasker(mask_ratio=cfg.motion_drop).num_masked(grid)
        run.log(
            f"--motion-drop {cfg.motion_drop}: the encoder sees the {kept} most moving of {n} cubes (train and test)"
        )

    eval_model = ema.module if ema is not None else model

    def test(clips: int, crops: int) -> MultiViewResult:
        """Every test video on `clips x crops` views, each video on one rank (rank r takes r, r + world, ...)."""
        views = MultiViewDataset(
            test_records,
            pipeline=EvalPipeline(crop_size=cfg.input_size, num_crops=crops),
            sampler=sampler_,
            num_clips=clips,
            decode=DecodeOptions(seek_mode="exact"),
        )
        views.failures.journal = run.journal
        share = list(range(ctx.rank, len(views), ctx.world_size))
        kwargs = dict(
            batch_size=cfg.batch_size, sampler=share, num_workers=cfg.workers, pin_memory=device.type == "cuda"
        )
        test_loader = DataLoader(views, **kwargs, generator=torch.Generator())  # worker seeds off the global RNG
        return evaluate_multiview(
            eval_model,
            test_loader,
            num_videos=len(views),
            views=clips * crops,
            num_classes=num_classes,
            chunk=cfg.batch_size * cfg.repeated_sampling,
            device=device,
            autocast=run.autocast,
            calls=run.eval_calls(len(test_loader)),
        )

    run.open_metrics(resume_step=loop.step, tensorboard=cfg.tensorboard, total_steps=loop.end_step, desc="finetune")
    for _ in loop.epochs():
        train_model.train()
        if cfg.linear_probe:
            model.encoder.eval()  # frozen: no drop path
        for clips, labels in loop.batches():
            clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            # each process mixes its own batch with its reverse (timm's Mixup), from a generator per (step, rank)
            g = step_generator(cfg.seed, loop.step, loop.micro, rank=ctx.rank)
            clips, targets = mixer(clips, labels, generator=g)  # targets [b k], soft
            with run.stepper.accumulating(train_model, last=loop.at_step_end):
                with run.autocast():
                    logits = train_model(clips)  # [b k]
                run.stepper.backward(F.cross_entropy(logits.float(), targets))
            if not loop.at_step_end:
                continue
            values = run.optimizer_step(loop, clips=clips.shape[0] * cfg.accum_steps * ctx.world_size)
            run.log_step(loop.step, **values)
            run.save(loop, every=cfg.checkpoint_every)
        if loop.epoch_ended and cfg.eval_every and (loop.epoch % cfg.eval_every == 0 or loop.epoch == cfg.epochs):
            result = test(clips=1, crops=1)
            run.log(
                f"after epoch {loop.epoch}: single-view top-1 {result.top1:.4f}, top-5 {result.top5:.4f} "
                f"({result.num_videos} videos, centre clip and crop)"
            )
            values = {"epoch": loop.epoch - 1, "val_top1": result.top1, "val_top5": result.top5}
            run.log_values(loop.step, **values, val_mean_class_accuracy=result.mean_class_accuracy)

    # ---- final multi-view test ------------------------------------------------------------------------------------
    views = cfg.test_clips * cfg.test_crops
    run.log(f"testing {'the EMA weights' if ema else 'the model'} on {len(test_records)} videos x {views} views")
    result = test(clips=cfg.test_clips, crops=cfg.test_crops)
    bad = run.report_bad_videos()  # every process's bad videos (training, validation, test; workers and ranks)
    run.log_values(loop.step, test_top1=result.top1, test_top5=result.top5, test_views=views)
    scores = {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy}
    extra = {"model_ema": ema.module.state_dict()} if ema is not None else {}
    run.checkpointer.save_final(
        out / "final.pt", class_names=names, step=loop.step, epoch=loop.epoch, test=scores, **extra
    )
    run.finish()
    if run.is_main:
        protocol = {"clips": cfg.test_clips, "crops": cfg.test_crops, "views": views}
        protocol["aggregation"] = "softmax per view, then mean over views"
        about = dict(
            protocol=protocol, weights="ema" if ema else "model", step=loop.step, linear_probe=cfg.linear_probe
        )
        write_classification_report(out, result, names, **about, finetune=cfg.finetune and str(cfg.finetune))
        if loop.step > 0:
            plot_loss_curve(out / "metrics.jsonl", out / "loss.png")
        run.log(
            f"test: top-1 {result.top1:.4f}, top-5 {result.top5:.4f}, mean class accuracy "
            f"{result.mean_class_accuracy:.4f} on {result.num_videos} videos x {views} views"
        )
        run.log(
            f"done: {loop.step} steps; wrote final.pt, test_results.json, confusion_matrix.png, metrics.jsonl to {out}"
        )
    summary = {"step": loop.step, "epoch": loop.epoch, "skipped_steps": run.stepper.guard.skipped}
    return summary | {"top1": result.top1, "top5": result.top5, "bad_videos": len(bad.counts)}


if __name__ == "__main__":
    script_main(main, FinetuneConfig)
