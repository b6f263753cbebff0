"""The arms of the data-efficiency study (`recipes/data_efficiency.py`), run on one seed's splits
([tubemask.eval.data_efficiency][]):

- fine-tuning ([train_classifier][tubemask.eval.arms.train_classifier]): a classifier trained with label-preserving
  augmentation ([augment][tubemask.eval.arms.augment]), the epoch with the best validation accuracy kept; the learning
  rate chosen on validation over a grid ([choose_learning_rate][tubemask.eval.arms.choose_learning_rate]);
- linear probes ([probe_arm][tubemask.eval.arms.probe_arm]): a linear classifier on frozen features
  ([frozen_features][tubemask.eval.arms.frozen_features]), its weight decay chosen on validation.

Every choice is made on the validation set; the test set is scored once, for the choice.
"""

import math
import time
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from tubemask.eval.data_efficiency import PIXEL_STD, FinetuneOptions, ModelConfig, Split, normalise, vit_size
from tubemask.eval.diagnostics import linear_probe_accuracy, pooled_features
from tubemask.eval.study import best_lr_run
from tubemask.models import videomae_pretrain
from tubemask.train.optim import build_adamw
from tubemask.train.schedule import WarmupCosine

__all__ = ["augment", "accuracy", "train_classifier", "frozen_features", "choose_learning_rate", "probe_arm"]


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
    bias = 0.1 * (2 * torch.rand(b, 1, 1, 1, 1, generator=gen) - 1) / PIXEL_STD[0]
    return out * scale + bias


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: Split, batch: int = 128) -> float:
    """Top-1 accuracy of a classifier on a split, in eval mode."""
    model.eval()
    correct = 0
    for start in range(0, split.clips.shape[0], batch):
        logits = model(normalise(split.clips[start : start + batch]))
        correct += int((logits.argmax(dim=1) == split.labels[start : start + batch]).sum())
    return correct / split.clips.shape[0]


def train_classifier(
    model: torch.nn.Module,
    data: Mapping[str, Split],
    f: FinetuneOptions,
    *,
    lr: float,
    seed: int,
    num_layers: int,
) -> dict[str, float]:
    """Train `model` (a built classifier, pretrained or not) on `data["train"]` with AdamW (layer-wise lr decay over
    `num_layers` blocks), a warmup-cosine schedule and the options' augmentation; keep the epoch with the best
    validation accuracy (ties: the earlier) and report its train / val / test accuracy and the epoch."""
    optimizer = build_adamw(
        model, lr=lr, weight_decay=f.weight_decay, betas=(0.9, 0.999), layer_decay=f.layer_decay, num_layers=num_layers
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
def frozen_features(m: ModelConfig, frames: int, state: dict | None, seed: int, clips: torch.Tensor) -> torch.Tensor:
    """Frozen per-time-slot features `[n e]` of the pretraining encoder with weights `state` (None: its random
    initialisation under `seed`), for the probe arms. Only the tokenizer's and encoder's weights are read: the decoder's
    head is as wide as the pretraining target (27 HOG values, a teacher's width), which the probe never uses.

    Raises:
        ValueError: when `state` lacks a weight of the tokenizer or the encoder.
    """
    torch.manual_seed(seed)
    model = videomae_pretrain(vit_size(m), tubelet_size=m.tubelet_size, patch_size=m.patch_size)
    if state is not None:
        encoder_parts = ("tokenizer.", "encoder.")
        missing = model.load_state_dict({k: v for k, v in state.items() if k.startswith(encoder_parts)}, strict=False)
        lacking = [k for k in missing.missing_keys if k.startswith(encoder_parts)]
        if lacking:
            raise ValueError(f"frozen_features: the pretrained weights lack {lacking[:3]} ({len(lacking)} in all)")
    model.eval()
    slots = frames // m.tubelet_size
    return torch.cat(
        [
            pooled_features(model.forward_features(normalise(clips[i : i + 128])), slots)[1]
            for i in range(0, len(clips), 128)
        ]
    )


def choose_learning_rate(
    run: Callable[[float], dict], lrs: tuple[float, ...], log: Callable[[str], None] = print, prefix: str = ""
) -> dict:
    """`run(lr)` at every learning rate of the grid; the one with the best validation accuracy is chosen (ties: the
    smaller). Returns every run, the choice and whether it sits on an edge of the grid (then the grid should grow)."""
    runs = []
    for lr in lrs:
        t0 = time.perf_counter()
        runs.append({"lr": lr, **run(lr), "seconds": round(time.perf_counter() - t0, 1)})
        log(f"{prefix}lr={lr:g}: " + " ".join(f"{k}={v}" for k, v in runs[-1].items() if k != "lr"))
    chosen = best_lr_run(runs)
    edge = len(lrs) > 1 and chosen["lr"] in (min(lrs), max(lrs))
    return {"runs": runs, "chosen": chosen, "chosen_on_grid_edge": edge}


def probe_arm(
    features: Callable[[torch.Tensor], torch.Tensor],
    data: Mapping[str, Split],
    weight_decays: tuple[float, ...],
    num_classes: int,
) -> dict:
    """A linear classifier on frozen `features(clips)`: the weight decay chosen on validation (ties: the stronger
    penalty), then scored on test once."""
    x = {name: features(data[name].clips) for name in ("train", "val", "test")}
    y = {name: data[name].labels for name in ("train", "val", "test")}
    runs = []
    for wd in weight_decays:
        val = linear_probe_accuracy(
            x["train"], y["train"], x["val"], y["val"], weight_decay=wd, num_classes=num_classes
        )
        runs.append({"weight_decay": wd, "val": val})
    chosen = max(runs, key=lambda r: (r["val"], r["weight_decay"]))
    test = linear_probe_accuracy(
        x["train"], y["train"], x["test"], y["test"], weight_decay=chosen["weight_decay"], num_classes=num_classes
    )
    return {"runs": runs, "chosen": {**chosen, "test": test}}
