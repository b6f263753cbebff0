"""Representation diagnostics for pretraining runs: token statistics and a linear probe.

A collapsing masked autoencoder shows it in its tokens before its loss says anything: the token norm grows, the
participation ratio of the token covariance falls towards 1 (all tokens on one direction) and the share of the
variance explained by the token position moves. A linear probe on frozen, mean-pooled features tracks whether the
representation still separates classes. Both are cheap enough to run every few hundred steps.
"""

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.atomic import atomic_path
from tubemask.shapes import typechecked

__all__ = [
    "participation_ratio",
    "token_diagnostics",
    "linear_probe_accuracy",
    "pooled_features",
    "ProbeSet",
    "probe_set_from_records",
    "probe_encoder",
    "plot_diagnostics",
]


@typechecked
def participation_ratio(features: Float[Tensor, "s d"]) -> float:
    """`(sum λ)^2 / sum λ^2` over the eigenvalues `λ` of the feature covariance, between 1 (one direction) and `d`
    (isotropic). Computed in float64 as `trace(C)^2 / ||C||_F^2`, which equals the eigenvalue form for a symmetric `C`.

    Returns:
        The ratio; NaN when the features have no variance or fewer than 2 samples.
    """
    if features.shape[0] < 2:
        return float("nan")
    x = features.detach().double()
    x = x - x.mean(dim=0, keepdim=True)
    cov = x.T @ x / (x.shape[0] - 1)
    frob = float((cov * cov).sum())
    if frob == 0.0:
        return float("nan")
    return float(torch.trace(cov)) ** 2 / frob


@typechecked
def token_diagnostics(tokens: Float[Tensor, "b n d"]) -> dict[str, float]:
    """Statistics of encoder output tokens.

    Returns:
        A dict with
        `mean_norm` (mean L2 norm of a token),
        `participation_ratio` (of the covariance of all `b*n` tokens, see
        [participation_ratio][tubemask.eval.diagnostics.participation_ratio]) and
        `position_variance_fraction` (share of the total token variance explained by the per-position mean over the
        batch: near 1 when tokens encode mostly where they are, NaN for a batch of one clip).
    """
    x = tokens.detach().double()
    b, n, d = x.shape
    flat = x.reshape(b * n, d)
    centred = flat - flat.mean(dim=0, keepdim=True)
    total = float((centred * centred).sum())
    if b > 1 and total > 0.0:
        per_pos = x.mean(dim=0) - flat.mean(dim=0, keepdim=True)  # [n d]
        position_fraction = float(b * (per_pos * per_pos).sum()) / total
    else:
        position_fraction = float("nan")
    return {
        "mean_norm": float(flat.norm(dim=1).mean()),
        "participation_ratio": participation_ratio(flat),
        "position_variance_fraction": position_fraction,
    }


@typechecked
def linear_probe_accuracy(
    train_feats: Float[Tensor, "s d"],
    train_labels: Int[Tensor, " s"],
    test_feats: Float[Tensor, "q d"],
    test_labels: Int[Tensor, " q"],
    *,
    epochs: int = 100,
    lr: float = 0.5,
    weight_decay: float = 1e-3,
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy of a multinomial logistic regression fitted on frozen features.

    Features are standardised with the training mean and std; the classifier starts at zero and takes `epochs`
    full-batch L-BFGS steps on cross-entropy plus `weight_decay * ||W||^2 / 2`, in float64 on the CPU, so the result
    is deterministic and depends on no global random state.

    Args:
        train_feats: training features (e.g. mean-pooled encoder tokens).
        train_labels: their classes.
        test_feats: test features.
        test_labels: their classes.
        epochs: L-BFGS iterations (each a full pass over the training set).
        lr: L-BFGS step size.
        weight_decay: L2 penalty on the weights (not the bias).
        num_classes: number of classes; default `1 + max label`.

    Returns:
        Test accuracy in `[0, 1]`.

    Raises:
        ValueError: for empty sets. Feature widths that differ fail the shape check.
    """
    if train_feats.shape[0] == 0 or test_feats.shape[0] == 0:
        raise ValueError("linear_probe_accuracy: the training and test sets must not be empty")
    c = num_classes if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    xtr = train_feats.detach().double().cpu()
    xte = test_feats.detach().double().cpu()
    ytr = train_labels.detach().long().cpu()
    mean, std = xtr.mean(dim=0), xtr.std(dim=0, unbiased=False).clamp(min=1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    with torch.enable_grad():
        weight = torch.zeros(xtr.shape[1], c, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(c, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(xtr @ weight + bias, ytr) + 0.5 * weight_decay * (weight * weight).sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        pred = (xte @ weight + bias).argmax(dim=1)
    return float((pred == test_labels.cpu()).double().mean())


@typechecked
def pooled_features(
    tokens: Float[Tensor, "b n d"], time_slots: int
) -> tuple[Float[Tensor, "b d"], Float[Tensor, "b e"]]:
    """Two frozen-feature views of encoder tokens in raster `(t, h, w)` order: the mean over all tokens, and the
    per-time-slot spatial means concatenated in time order (`e = time_slots * d`), which keeps the order of events
    that a mean over all tokens discards (e.g. motion direction).

    Raises:
        ValueError: when `n` is not a multiple of `time_slots`.
    """
    b, n, d = tokens.shape
    if time_slots < 1 or n % time_slots:
        raise ValueError(f"pooled_features: {n} tokens do not split into time_slots={time_slots}")
    per_time = tokens.reshape(b, time_slots, n // time_slots, d).mean(dim=2).flatten(1)
    return tokens.mean(dim=1), per_time


@dataclass
class ProbeSet:
    """Labelled clips for probing a frozen encoder during pretraining: a training half to fit the probe, a test half
    to score it. Clips are whatever the `encode` function of [probe_encoder][tubemask.eval.diagnostics.probe_encoder]
    takes (e.g. uint8 clips it normalises itself)."""

    train_clips: Tensor
    train_labels: Tensor
    test_clips: Tensor
    test_labels: Tensor

    def __post_init__(self) -> None:
        for clips, labels, name in (
            (self.train_clips, self.train_labels, "train"),
            (self.test_clips, self.test_labels, "test"),
        ):
            if clips.shape[0] != labels.shape[0] or clips.shape[0] == 0:
                raise ValueError(
                    f"ProbeSet: {name} has {clips.shape[0]} clips and {labels.shape[0]} labels; need the same, > 0"
                )


@torch.no_grad()
def probe_encoder(
    encode: Callable[[Tensor], Tensor],
    probe: ProbeSet,
    *,
    time_slots: int,
    batch_size: int = 64,
    weight_decay: float = 1e-3,
) -> dict[str, float]:
    """Linear probes and token statistics of a frozen encoder, for logging every few hundred pretraining steps.

    Args:
        encode: maps a batch of `probe` clips to encoder tokens `[b n d]` (all tokens, no mask), e.g.
            `lambda clips: model.forward_features(normalise(clips))` in eval mode.
        probe: the labelled clips.
        time_slots: token grid time size (`frames // tubelet_size`) for the per-time-slot features.
        batch_size: clips per `encode` call.
        weight_decay: the probes' L2 penalty.

    Returns:
        `probe_mean_pool` and `probe_per_time` (test accuracies of
        [linear_probe_accuracy][tubemask.eval.diagnostics.linear_probe_accuracy] on the two views of
        [pooled_features][tubemask.eval.diagnostics.pooled_features]), plus the
        [token_diagnostics][tubemask.eval.diagnostics.token_diagnostics] of the first test batch (`token_norm`,
        `participation_ratio`, `position_variance_fraction`).
    """

    def features(clips: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pooled, per_time, first = [], [], None
        for start in range(0, clips.shape[0], batch_size):
            tokens = encode(clips[start : start + batch_size]).float()
            first = tokens if first is None else first
            mean, slots = pooled_features(tokens, time_slots)
            pooled.append(mean)
            per_time.append(slots)
        return torch.cat(pooled), torch.cat(per_time), first

    tr_mean, tr_time, _ = features(probe.train_clips)
    te_mean, te_time, tokens = features(probe.test_clips)
    ytr, yte = probe.train_labels, probe.test_labels
    stats = token_diagnostics(tokens)
    return {
        "probe_mean_pool": linear_probe_accuracy(tr_mean, ytr, te_mean, yte, weight_decay=weight_decay),
        "probe_per_time": linear_probe_accuracy(tr_time, ytr, te_time, yte, weight_decay=weight_decay),
        "token_norm": stats["mean_norm"],
        "participation_ratio": stats["participation_ratio"],
        "position_variance_fraction": stats["position_variance_fraction"],
    }


def plot_diagnostics(
    rows: Sequence[Mapping[str, object]], png_path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Plot a pretraining run's diagnostics against `step` into one PNG with three panels: the loss next to its
    trivial floors (`loss`, `zero_floor`, `mean_floor`), the probe accuracies (`probe_*`), and the participation ratio with the
    token norm (`participation_ratio`, `token_norm`). Keys a row lacks, or non-finite values, are left out; the PNG is
    written atomically (matplotlib Agg, no display).

    Raises:
        ValueError: when no row has a `step` and any of the plotted keys.
        ImportError: when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_diagnostics needs matplotlib: pip install matplotlib") from error

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [
            (float(r["step"]), float(r[key]))
            for r in rows
            if "step" in r and isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))
        ]
        return [p[0] for p in points], [p[1] for p in points]

    probe_keys = sorted({k for r in rows for k in r if k.startswith("probe_")})
    panels = [("loss", "zero_floor", "mean_floor"), tuple(probe_keys), ("participation_ratio", "token_norm")]
    if not any(series(k)[0] for keys in panels for k in keys):
        raise ValueError("plot_diagnostics: no row has a step and a loss, probe or token statistic")
    figure = Figure(figsize=(13, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    titles = ("loss vs trivial floor", "linear probe (test accuracy)", "tokens")
    for i, keys in enumerate(panels):
        axes = figure.add_subplot(1, 3, i + 1)
        twin = axes.twinx() if keys == ("participation_ratio", "token_norm") else None
        for j, key in enumerate(keys):
            steps, values = series(key)
            if steps:
                target = twin if (twin is not None and key == "token_norm") else axes
                target.plot(steps, values, marker="." if len(steps) < 50 else None, color=f"C{j}", label=key)
                target.set_ylabel(key if target is twin else ", ".join(keys) if twin is None else key)
        axes.set_xlabel("step")
        axes.set_title(titles[i])
        handles = axes.get_legend_handles_labels()
        extra = twin.get_legend_handles_labels() if twin is not None else ([], [])
        if handles[0] or extra[0]:
            axes.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
    return png_path


def probe_set_from_records(
    records: Sequence[Any], *, videos_per_class: int, input_size: int, sampler: Any
) -> ProbeSet | None:
    """A [ProbeSet][tubemask.eval.diagnostics.ProbeSet] of centre clips (uint8, one view) of `videos_per_class`
    labelled videos per class (in path order): the first half of each class fits the probe, the second half scores
    it. None when the records carry fewer than two labelled classes.

    Args:
        records: `VideoRecord`s (unlabelled ones are skipped).
        videos_per_class: at least 2 (one to fit, one to score).
        input_size: the centre crop's side.
        sampler: the frame sampler of the training clips.

    Raises:
        ValueError: when `videos_per_class < 2`.
    """
    # decoding lives in the data package, which imports torchvision: only when probe clips are loaded
    from tubemask.data import EvalPipeline, MultiViewDataset

    half = videos_per_class // 2
    if half < 1:
        raise ValueError(f"probe videos per class: {videos_per_class}; need at least 2 (one to fit, one to score)")
    by_class: dict[int, list[Any]] = {}
    for record in sorted(records, key=lambda r: str(r.path)):
        if record.label is not None:
            by_class.setdefault(record.label, []).append(record)
    fit = [r for rs in by_class.values() for r in rs[:half]]
    score = [r for rs in by_class.values() for r in rs[half : 2 * half]]
    if len(by_class) < 2 or not score:
        return None

    def load(chosen: list[Any]) -> tuple[Tensor, Tensor]:
        pipeline = EvalPipeline(crop_size=input_size, num_crops=1, normalize=False)
        views = MultiViewDataset(chosen, pipeline=pipeline, sampler=sampler, num_clips=1)
        items = [views[i] for i in range(len(views))]
        return torch.stack([v[0] for v, _, _ in items]), torch.tensor([label for _, label, _ in items])

    return ProbeSet(*load(fit), *load(score))
