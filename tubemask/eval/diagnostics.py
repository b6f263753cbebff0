"""Representation diagnostics for pretraining runs: token statistics and a linear probe.

A collapsing masked autoencoder shows it in its tokens before its loss says anything: the token norm grows, the
participation ratio of the token covariance falls towards 1 (all tokens on one direction) and the share of the
variance explained by the token position moves. A linear probe on frozen, mean-pooled features tracks whether the
representation still separates classes. Both are cheap enough to run every few hundred steps.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = ["participation_ratio", "token_diagnostics", "linear_probe_accuracy"]


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
