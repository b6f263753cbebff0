"""Reconstruction targets and losses.

Targets are computed from the cubes that are reconstructed only, without gradient, in float32 outside autocast:

- `"norm_pix"` (VideoMAE V1/V2, HF): un-normalise the clip to [0, 1] pixels; per cube **and per channel**, subtract the
  mean and divide by `sqrt(unbiased variance) + 1e-6` over the `tubelet_size * patch_size**2` pixels.
- `"norm_pix_joint"` (mae_st / MAE): per cube, mean and unbiased variance over all `k` values jointly,
  `(x - mean) / sqrt(var + 1e-6)`.
- `"pixels"`: the un-normalised [0, 1] pixels.

Cubes are laid out `(p0 p1 p2 c)`, channel fastest, matching the decoder head.
"""

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.shapes import typechecked
from tubemask.tokenizers import gather_cube_planes, gather_cubes

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


def _channel_values(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """`torch.tensor(values, dtype=dtype, device=device)`, made once per (values, dtype, device) and then reused.

    Building it per call is a blocking host-to-device copy on CUDA (a device sync every training step). Callers only
    read the cached tensor. Under torch.compile it is a fresh constant as before (Dynamo folds it into the graph).
    """
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    return _cached_channel_values(tuple(float(v) for v in values), dtype, torch.device(device))


@functools.lru_cache(maxsize=64)
def _cached_channel_values(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable inside and outside inference mode
        return torch.tensor(values, dtype=dtype, device=device)


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
    mu = _channel_values(tuple(mean), cubes.dtype, cubes.device)
    sd = _channel_values(tuple(std), cubes.dtype, cubes.device)
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


def _norm_pix_from_planes(
    planes: Float[Tensor, "b m c q"], *, std: tuple[float, ...] | None, eps: float = 1e-6
) -> Float[Tensor, "b m k"]:
    """[norm_pix_per_channel][tubemask.losses.norm_pix_per_channel] of the un-normalised cubes, from normalised planes.

    With `y = x * sd + mu` per channel and `sd > 0`, `(y - mean y) / (std y + eps) = (x - mean x) / (std x + eps / sd)`,
    so the un-normalisation folds into the epsilon: three passes over the planes (mean, norm of the deviations,
    division written straight into the `(p0 p1 p2 c)` layout) instead of gathering channel-last, un-normalising and
    reducing over a strided axis. Equal to the un-normalise-first order within float32 rounding (about 1e-6).
    """
    b, m, c, q = planes.shape
    centred = planes - planes.mean(dim=-1, keepdim=True)
    # unbiased std as the norm of the deviations: one reduction pass, no squared copy
    scale = torch.linalg.vector_norm(centred, dim=-1, keepdim=True) / math.sqrt(q - 1)
    sd = _channel_values(tuple(std) if std is not None else (1.0,) * c, planes.dtype, planes.device)
    denom = scale + eps / sd[:, None]
    if torch.compiler.is_compiling():  # Dynamo breaks the graph on out=; inductor fuses the transpose anyway
        return (centred / denom).transpose(-1, -2).reshape(b, m, q * c)
    out = torch.empty((b, m, q, c), dtype=planes.dtype, device=planes.device)
    torch.div(centred, denom, out=out.transpose(-1, -2))
    return out.view(b, m, q * c)


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
        plain = mean is None and std is None
        valid = mean is not None and std is not None and len(mean) == len(std) == channels and min(std) > 0
        if kind == "norm_pix" and (plain or valid):  # the per-channel mean cancels; std folds into eps
            planes = gather_cube_planes(video.float(), ids, tubelet_size=tubelet_size, patch_size=patch_size)
            return _norm_pix_from_planes(planes, std=std)
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
