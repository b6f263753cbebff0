"""Reconstruction targets and losses.

Targets are computed from the cubes that are reconstructed only, without gradient, in float32 outside autocast:

- `"norm_pix"` (VideoMAE V1/V2, HF): un-normalise the clip to [0, 1] pixels; per cube **and per channel**, subtract the
  mean and divide by `sqrt(unbiased variance) + 1e-6` over the `tubelet_size * patch_size**2` pixels.
- `"norm_pix_joint"` (mae_st / MAE): per cube, mean and unbiased variance over all `k` values jointly,
  `(x - mean) / sqrt(var + 1e-6)`.
- `"pixels"`: the un-normalised [0, 1] pixels.

Cubes are laid out `(p0 p1 p2 c)`, channel fastest, matching the decoder head.
"""

from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.shapes import typechecked
from tubemask.tokenizers import gather_cubes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TargetKind",
    "unnormalize_cubes",
    "norm_pix_per_channel",
    "norm_pix_joint",
    "reconstruction_targets",
    "masked_mse",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TargetKind = Literal["norm_pix", "norm_pix_joint", "pixels"]


@typechecked
def unnormalize_cubes(
    cubes: Float[Tensor, "b m k"], *, channels: int, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> Float[Tensor, "b m k"]:
    """Undo `(x - mean) / std` on cubes laid out `(p0 p1 p2 c)`; identity when `mean` and `std` are None."""
    if mean is None and std is None:
        return cubes
    if mean is None or std is None or len(mean) != channels or len(std) != channels:
        raise ValueError(f"pixel mean and std need one value per channel ({channels}); got mean={mean}, std={std}")
    b, m, k = cubes.shape
    mu = torch.tensor(mean, dtype=cubes.dtype, device=cubes.device)
    sd = torch.tensor(std, dtype=cubes.dtype, device=cubes.device)
    return (cubes.view(b, m, k // channels, channels) * sd + mu).view(b, m, k)


@typechecked
def norm_pix_per_channel(cubes: Float[Tensor, "b m k"], *, channels: int, eps: float = 1e-6) -> Float[Tensor, "b m k"]:
    """VideoMAE's target: per cube and channel, `(x - mean) / (sqrt(unbiased var) + eps)` over the cube's pixels."""
    b, m, k = cubes.shape
    x = cubes.view(b, m, k // channels, channels)
    centred = x - x.mean(dim=-2, keepdim=True)
    # unbiased variance as the sum of squared deviations: Tensor.var's value, at a fraction of its CPU time
    var = centred.square().sum(dim=-2, keepdim=True) / (x.shape[-2] - 1)
    return (centred / (var.sqrt() + eps)).view(b, m, k)


@typechecked
def norm_pix_joint(cubes: Float[Tensor, "b m k"], *, eps: float = 1e-6) -> Float[Tensor, "b m k"]:
    """mae_st's target: per cube, `(x - mean) / sqrt(unbiased var + eps)` over all `k` values jointly."""
    mean = cubes.mean(dim=-1, keepdim=True)
    var = cubes.var(dim=-1, unbiased=True, keepdim=True)
    return (cubes - mean) / (var + eps).sqrt()


@typechecked
def reconstruction_targets(
    video: Float[Tensor, "b c t h w"],
    ids: Int[Tensor, "b m"],
    *,
    tubelet_size: int,
    patch_size: int,
    kind: TargetKind = "norm_pix",
    mean: tuple[float, ...] | None = IMAGENET_MEAN,
    std: tuple[float, ...] | None = IMAGENET_STD,
) -> Float[Tensor, "b m k"]:
    """Targets for the cubes at `ids` of the (normalised) clip, float32, no gradient, outside autocast.

    Args:
        video: the model input, normalised with `mean` / `std` (or raw when both are None).
        ids: flat raster indices of the cubes to reconstruct.
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.
        kind: `"norm_pix"`, `"norm_pix_joint"` or `"pixels"` (see the module docs).
        mean: per-channel mean the clip was normalised with.
        std: per-channel std the clip was normalised with.
    """
    channels = video.shape[1]
    with torch.no_grad(), torch.autocast(device_type=video.device.type, enabled=False):
        cubes = gather_cubes(video.float(), ids, tubelet_size=tubelet_size, patch_size=patch_size)
        cubes = unnormalize_cubes(cubes, channels=channels, mean=mean, std=std)
        if kind == "norm_pix":
            return norm_pix_per_channel(cubes, channels=channels)
        if kind == "norm_pix_joint":
            return norm_pix_joint(cubes)
        if kind == "pixels":
            return cubes
    raise ValueError(f"target kind must be 'norm_pix', 'norm_pix_joint' or 'pixels', got {kind!r}")


@typechecked
def masked_mse(pred: Float[Tensor, "b m k"], target: Float[Tensor, "b m k"]) -> Float[Tensor, ""]:
    """Mean squared error over the reconstructed cubes (all `b * m * k` values), in float32."""
    return F.mse_loss(pred.float(), target.float())  # fused forward and backward
