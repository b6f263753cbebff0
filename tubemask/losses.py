"""Reconstruction losses: how far the predictions of the queried cubes are from their targets.

A loss is any callable `loss(pred, target) -> scalar` on `[b m k]` tensors of the queried cubes only (the model
gathers them first, so no mask is passed); [reconstruction_mse][tubemask.losses.reconstruction_mse] is VideoMAE's,
[reconstruction_smooth_l1][tubemask.losses.reconstruction_smooth_l1] MVD's for teacher features.
"""

from typing import Protocol, runtime_checkable

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = ["Loss", "reconstruction_mse", "reconstruction_smooth_l1"]


@runtime_checkable
class Loss(Protocol):
    """A reconstruction loss over the queried cubes: `[b m k]` predictions and targets -> a float32 scalar."""

    def __call__(self, pred: Float[Tensor, "b m k"], target: Float[Tensor, "b m k"]) -> Float[Tensor, ""]: ...


@typechecked
def reconstruction_mse(pred: Float[Tensor, "b m k"], target: Float[Tensor, "b m k"]) -> Float[Tensor, ""]:
    """Mean squared error over the queried cubes (all `b * m * k` values), in float32 (VideoMAE's loss)."""
    return F.mse_loss(pred.float(), target.float())  # fused forward and backward


@typechecked
def reconstruction_smooth_l1(pred: Float[Tensor, "b m k"], target: Float[Tensor, "b m k"]) -> Float[Tensor, ""]:
    """Smooth L1 (Huber with `beta = 1`) over the queried cubes, in float32: squared below a difference of 1, absolute
    above it, so large feature errors weigh linearly (MVD's loss on teacher features)."""
    return F.smooth_l1_loss(pred.float(), target.float(), beta=1.0)
