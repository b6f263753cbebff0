"""Reconstruction losses: how far the predictions of the queried cubes are from their targets.

A loss is any callable `loss(pred, target) -> scalar` on `[b m k]` tensors of the queried cubes only (the model
gathers them first, so no mask is passed); [reconstruction_mse][tubemask.losses.reconstruction_mse] is VideoMAE's.
"""

from typing import Protocol, runtime_checkable

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = ["Loss", "reconstruction_mse"]


@runtime_checkable
class Loss(Protocol):
    """A reconstruction loss over the queried cubes: `[b m k]` predictions and targets -> a float32 scalar."""

    def __call__(self, pred: Float[Tensor, "b m k"], target: Float[Tensor, "b m k"]) -> Float[Tensor, ""]: ...


@typechecked
def reconstruction_mse(pred: Float[Tensor, "b m k"], target: Float[Tensor, "b m k"]) -> Float[Tensor, ""]:
    """Mean squared error over the queried cubes (all `b * m * k` values), in float32 (VideoMAE's loss)."""
    return F.mse_loss(pred.float(), target.float())  # fused forward and backward
