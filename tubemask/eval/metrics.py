"""Classification metrics and VideoMAE's multi-view test protocol.

VideoMAE tests each video on several views (UCF101: 5 clips x 3 crops; SSv2: 2 x 3), takes the softmax of each view's
logits and averages the probabilities over the views (Tong et al., arXiv 2203.12602).
[MultiViewAccumulator][tubemask.eval.metrics.MultiViewAccumulator] gathers the views batch by batch and across ranks.
"""

import json
import math
import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.atomic import atomic_path
from tubemask.shapes import typechecked

__all__ = [
    "topk_accuracy",
    "multiview_predictions",
    "per_class_accuracy",
    "confusion_matrix",
    "save_confusion_matrix_png",
    "MultiViewResult",
    "MultiViewAccumulator",
    "evaluate_multiview",
    "write_classification_report",
]


def _check_labels(values: Tensor, num_classes: int, what: str) -> None:
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(
            f"{what} must lie in [0, {num_classes}); got values from {int(values.min())} to {int(values.max())}"
        )


@typechecked
def topk_accuracy(
    logits: Float[Tensor, "b classes"], labels: Int[Tensor, " b"], ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Fraction of rows whose label is among the `k` highest scores, for each `k` in `ks`.

    `k` larger than the number of classes counts every row as correct. Ties are broken by `torch.topk`.

    Args:
        logits: scores (logits or probabilities) per class.
        labels: true class per row.
        ks: the `k` values.

    Returns:
        `{k: accuracy in [0, 1]}`; NaN for an empty batch.

    Raises:
        ValueError: for labels outside `[0, classes)` or a `k` below 1.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"topk_accuracy: every k must be >= 1, got {ks}")
    _check_labels(labels, logits.shape[1], "topk_accuracy: labels")
    if logits.shape[0] == 0:
        return {k: float("nan") for k in ks}
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # [b kmax]
    hits = top == labels[:, None]
    return {k: float(hits[:, : min(k, kmax)].any(dim=1).float().mean()) for k in ks}


@typechecked
def multiview_predictions(logits_per_view: Float[Tensor, "videos views classes"]) -> Float[Tensor, "videos classes"]:
    """VideoMAE's test protocol: softmax over classes per view, then the mean over views (in float32)."""
    return logits_per_view.float().softmax(dim=-1).mean(dim=1)


@typechecked
def confusion_matrix(preds: Int[Tensor, " b"], labels: Int[Tensor, " b"], num_classes: int) -> Int[Tensor, "c c"]:
    """Counts `[true class, predicted class]` (rows: truth, columns: prediction), int64.

    Raises:
        ValueError: for predictions or labels outside `[0, num_classes)`.
    """
    _check_labels(preds, num_classes, "confusion_matrix: preds")
    _check_labels(labels, num_classes, "confusion_matrix: labels")
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@typechecked
def per_class_accuracy(preds: Int[Tensor, " b"], labels: Int[Tensor, " b"], num_classes: int) -> Float[Tensor, " c"]:
    """Accuracy within each true class (recall per class), float32; NaN for classes with no sample.

    The mean over the non-NaN entries is the class-balanced ("mean class") accuracy.
    """
    matrix = confusion_matrix(preds, labels, num_classes)
    totals = matrix.sum(dim=1)
    correct = matrix.diagonal()
    acc = correct.float() / totals.clamp(min=1).float()
    return torch.where(totals > 0, acc, torch.full_like(acc, float("nan")))


def save_confusion_matrix_png(
    matrix: Tensor,
    path: str | os.PathLike,
    class_names: list[str] | None = None,
    *,
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix to a PNG (matplotlib, Agg backend, imported here).

    Args:
        matrix: `[c, c]` counts, rows = truth, columns = prediction.
        path: destination; parent directories are created.
        class_names: tick labels (drawn only up to 60 classes).
        normalize: divide each row by its total (rows with no sample stay zero).
        title: figure title.

    Returns:
        The written path.

    Raises:
        ValueError: for a non-square matrix or a `class_names` of the wrong length.
        ImportError: without matplotlib.
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"save_confusion_matrix_png: matrix must be square, got shape {tuple(matrix.shape)}")
    c = matrix.shape[0]
    if class_names is not None and len(class_names) != c:
        raise ValueError(f"save_confusion_matrix_png: {len(class_names)} class names for a {c}-class matrix")
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("save_confusion_matrix_png needs matplotlib (pip install matplotlib)") from err
    values = matrix.detach().cpu().double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp(min=1)
    size = min(4 + 0.25 * c, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        image = ax.imshow(values.numpy(), cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        if class_names is not None and c <= 60:
            ax.set_xticks(range(c), class_names, rotation=90, fontsize=6)
            ax.set_yticks(range(c), class_names, fontsize=6)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out


@dataclass
class MultiViewResult:
    """Video-level results of a multi-view test.

    Attributes:
        top1: top-1 accuracy over the videos with at least one view.
        top5: top-5 accuracy over the same videos.
        per_class: accuracy per true class `[classes]`, NaN where a class has no video.
        mean_class_accuracy: mean of the non-NaN `per_class` entries.
        probs: averaged probabilities `[videos, classes]` (rows of videos without views are zero).
        labels: the label of each video (-1 where none was seen).
        num_videos: videos that had at least one view.
        missing_views: `(video, view)` places that never received logits.
    """

    top1: float
    top5: float
    per_class: Tensor
    mean_class_accuracy: float
    probs: Tensor
    labels: Tensor
    num_videos: int
    missing_views: int


class MultiViewAccumulator:
    """Collect logits by `(video_index, view_index)` across batches (and ranks) and score videos by VideoMAE's protocol.

    A place written twice keeps the last logits (on one rank) or their mean (across ranks, e.g. the padding of
    `DistributedSampler` repeats samples). Storage is `[num_videos, num_views, num_classes]` float32 on `device`.

    Example:
        ```python
        acc = MultiViewAccumulator(num_videos=len(videos), num_views=15, num_classes=101)
        for clips, labels, video_index, view_index in loader:
            acc.update(model(clips), labels, video_index, view_index)
        result = acc.compute()  # all ranks call it; it syncs when torch.distributed is initialised
        ```

    Args:
        num_videos: videos in the test set.
        num_views: views per video (clips x crops).
        num_classes: logits per view.
        device: where the storage lives (use the GPU for NCCL).
    """

    def __init__(
        self, num_videos: int, num_views: int, num_classes: int, *, device: torch.device | str = "cpu"
    ) -> None:
        if min(num_videos, num_views, num_classes) <= 0:
            raise ValueError(
                f"MultiViewAccumulator: sizes must be positive, got num_videos={num_videos}, num_views={num_views}, "
                f"num_classes={num_classes}"
            )
        self.num_videos = num_videos
        self.num_views = num_views
        self.num_classes = num_classes
        self.logits = torch.zeros(num_videos, num_views, num_classes, device=device)
        self.count = torch.zeros(num_videos, num_views, device=device)
        self.labels = torch.full((num_videos,), -1, dtype=torch.long, device=device)

    @typechecked
    def update(
        self,
        logits: Float[Tensor, "b classes"],
        labels: Int[Tensor, " b"],
        video_index: Int[Tensor, " b"],
        view_index: Int[Tensor, " b"],
    ) -> None:
        """Store one batch of view logits.

        Raises:
            ValueError: for indices or labels out of range, a class count other than `num_classes`, or a video seen
                with two different labels.
        """
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"MultiViewAccumulator: got {logits.shape[1]} classes, expected {self.num_classes}")
        _check_labels(video_index, self.num_videos, "MultiViewAccumulator: video_index")
        _check_labels(view_index, self.num_views, "MultiViewAccumulator: view_index")
        _check_labels(labels, self.num_classes, "MultiViewAccumulator: labels")
        dev = self.logits.device
        vi, wi, lab = video_index.to(dev), view_index.to(dev), labels.to(dev)
        known = self.labels[vi]
        clash = (known >= 0) & (known != lab)
        if bool(clash.any()):
            bad = int(vi[clash][0])
            raise ValueError(
                f"MultiViewAccumulator: video {bad} seen with label {int(lab[clash][0])}, before with {int(known[clash][0])}"
            )
        self.logits[vi, wi] = logits.detach().to(device=dev, dtype=torch.float32)
        self.count[vi, wi] = 1.0
        self.labels[vi] = lab

    def _synced(self) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, counts and labels summed over ranks (logits averaged where ranks overlap)."""
        logits, count, labels = self.logits * self.count[..., None], self.count.clone(), self.labels.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dev = logits.device
            if dist.get_backend() == "nccl":
                dev = torch.device("cuda", torch.cuda.current_device())
            logits, count, labels = logits.to(dev), count.to(dev), labels.to(dev)
            dist.all_reduce(logits, op=dist.ReduceOp.SUM)
            dist.all_reduce(count, op=dist.ReduceOp.SUM)
            dist.all_reduce(labels, op=dist.ReduceOp.MAX)
            logits, count, labels = logits.to(self.logits.device), count.to(self.logits.device), labels.cpu()
        logits = logits / count.clamp(min=1)[..., None]
        return logits, count, labels.to(self.logits.device)

    def compute(self) -> MultiViewResult:
        """Video-level top-1 / top-5 / per-class accuracy from the softmax-averaged views.

        Videos with some views missing are scored on the views they have; videos with none are left out and counted
        in `missing_views`. Every rank must call it when torch.distributed is initialised.

        Raises:
            ValueError: when no video has any view.
        """
        logits, count, labels = self._synced()
        present = count > 0  # [videos views]
        has_any = present.any(dim=1)
        if not bool(has_any.any()):
            raise ValueError("MultiViewAccumulator.compute: no logits were stored")
        probs = logits.softmax(dim=-1) * present[..., None]
        probs = probs.sum(dim=1) / present.sum(dim=1).clamp(min=1)[:, None]
        seen_probs, seen_labels = probs[has_any].cpu(), labels[has_any].cpu()
        acc = topk_accuracy(seen_probs, seen_labels, ks=(1, 5))
        per_class = per_class_accuracy(seen_probs.argmax(dim=1), seen_labels, self.num_classes)
        valid = per_class[~per_class.isnan()]
        return MultiViewResult(
            top1=acc[1],
            top5=acc[5],
            per_class=per_class,
            mean_class_accuracy=float(valid.mean()) if valid.numel() else float("nan"),
            probs=probs.cpu(),
            labels=labels.cpu(),
            num_videos=int(has_any.sum()),
            missing_views=int((~present).sum()),
        )


@torch.no_grad()
def evaluate_multiview(
    model: torch.nn.Module,
    loader: Iterable[tuple[Tensor, Tensor, Tensor]],
    *,
    num_videos: int,
    views: int,
    num_classes: int,
    chunk: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    calls: int | None = None,
) -> MultiViewResult:
    """Score every video of a multi-view test: the softmax of each view's logits, averaged over its views (summed over
    ranks when torch.distributed is initialised).

    Args:
        model: maps clips `[b c t h w]` to logits `[b classes]`; put in eval mode for the pass.
        loader: yields `(clips [b views c t h w], labels [b], video index [b])` (a
            [MultiViewDataset][tubemask.data.datasets.MultiViewDataset] loader), each video on one rank only.
        num_videos: videos of the whole test set.
        views: views per video.
        num_classes: logits per clip.
        chunk: clips per forward call.
        device: where the model is.
        autocast: the forward's precision context.
        calls: under FSDP2, the number of loader batches of the rank that has the most: this rank repeats its last
            batch (output discarded) until it has made as many forward calls, since a sharded forward is a
            collective ([pad_calls][tubemask.train.even_calls.pad_calls]). None: each batch once.
    """
    from tubemask.train.even_calls import pad_calls

    was_training = model.training
    model.eval()
    accumulator = MultiViewAccumulator(num_videos, views, num_classes, device=device)
    batches = pad_calls(loader, calls) if calls is not None else ((batch, False) for batch in loader)
    for (clips, labels, index), padding in batches:
        b = clips.shape[0]
        logits = []
        for part in clips.flatten(0, 1).split(chunk):  # [(b views) c t h w], the views of a video together
            with autocast():
                logits.append(model(part.to(device, non_blocking=True)).float())
        if padding:
            continue
        accumulator.update(
            torch.cat(logits),
            labels.long().repeat_interleave(views),
            index.long().repeat_interleave(views),
            torch.arange(views).repeat(b),
        )
    model.train(was_training)
    return accumulator.compute()


def write_classification_report(
    out: str | os.PathLike, result: MultiViewResult, names: list[str], **about: Any
) -> dict[str, Any]:
    """Write `<out>/test_results.json` (top-1, top-5, per-class accuracy, the confusion matrix and `about`: the
    protocol, the weights, the step ...) and `<out>/confusion_matrix.png`; returns the report."""
    out = Path(out)
    seen = result.labels >= 0
    matrix = confusion_matrix(result.probs.argmax(dim=1)[seen], result.labels[seen], len(names))
    per_class = {n: None if math.isnan(a) else a for n, a in zip(names, result.per_class.tolist(), strict=True)}
    report = {
        "top1": result.top1,
        "top5": result.top5,
        "mean_class_accuracy": result.mean_class_accuracy,
        "num_videos": result.num_videos,
        "missing_views": result.missing_views,
        **about,
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": names,
    }
    with atomic_path(out / "test_results.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    title = f"test top-1 {result.top1:.3f}"
    if isinstance(about.get("protocol"), dict) and "clips" in about["protocol"]:
        title += f" ({about['protocol']['clips']} clips x {about['protocol']['crops']} crops)"
    save_confusion_matrix_png(matrix, out / "confusion_matrix.png", names, title=title)
    return report
