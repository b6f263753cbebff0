"""Reconstruction targets as pieces: what the decoder predicts for the queried cubes of a clip.

A target is any object with a `width(...)` (values per cube, the decoder's output width) and a call that maps the
clip and the ids of the queried cubes to `[b m k]` float32 values without gradient. The built-ins, after the papers:

- `PixelTarget("norm_pix")` (VideoMAE V1/V2, HF): un-normalise the clip to [0, 1] pixels; per cube **and per
  channel**, subtract the mean and divide by `sqrt(unbiased variance) + 1e-6` over the `tubelet_size * patch_size**2`
  pixels.
- `PixelTarget("norm_pix_joint")` (mae_st / MAE): per cube, mean and unbiased variance over all `k` values jointly,
  `(x - mean) / sqrt(var + 1e-6)`.
- `PixelTarget("pixels")`: the un-normalised [0, 1] pixels.

Cubes are laid out `(p0 p1 p2 c)`, channel fastest, matching the decoder head. The pure functions below compute them;
the classes are the pieces a model takes (the strings keep working through [as_target][tubemask.targets.as_target]).
"""

import functools
import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.shapes import typechecked
from tubemask.tokenizers import gather_cube_planes, gather_cubes

__all__ = [
    "TargetKind",
    "channel_values",
    "Target",
    "PixelTarget",
    "as_target",
    "unnormalize_cubes",
    "norm_pix_per_channel",
    "norm_pix_joint",
    "reconstruction_targets",
]

TargetKind = Literal["norm_pix", "norm_pix_joint", "pixels"]
"""The names of the built-in targets."""


def channel_values(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
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
    mu = channel_values(tuple(mean), cubes.dtype, cubes.device)
    sd = channel_values(tuple(std), cubes.dtype, cubes.device)
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
    """[norm_pix_per_channel][tubemask.targets.norm_pix_per_channel] of the un-normalised cubes, from normalised planes.

    With `y = x * sd + mu` per channel and `sd > 0`, `(y - mean y) / (std y + eps) = (x - mean x) / (std x + eps / sd)`,
    so the un-normalisation folds into the epsilon: three passes over the planes (mean, norm of the deviations,
    division written straight into the `(p0 p1 p2 c)` layout) instead of gathering channel-last, un-normalising and
    reducing over a strided axis. Equal to the un-normalise-first order within float32 rounding (about 1e-6).
    """
    b, m, c, q = planes.shape
    centred = planes - planes.mean(dim=-1, keepdim=True)
    # unbiased std as the norm of the deviations: one reduction pass, no squared copy
    scale = torch.linalg.vector_norm(centred, dim=-1, keepdim=True) / math.sqrt(q - 1)
    sd = channel_values(tuple(std) if std is not None else (1.0,) * c, planes.dtype, planes.device)
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


@runtime_checkable
class Target(Protocol):
    """A reconstruction target: the values a pretraining model predicts for each queried cube.

    Implementations compute without gradient, in float32, outside autocast, and are deterministic functions of the
    clip (a teacher's features or HOG histograms fit as well as pixels).
    """

    def width(self, *, tubelet_size: int, patch_size: int, channels: int) -> int:
        """Values per cube `k` (the decoder's output width) for cubes of this geometry."""
        ...

    def __call__(
        self,
        video: Float[Tensor, "b c t h w"],
        query_ids: Int[Tensor, "b m"],
        *,
        tubelet_size: int,
        patch_size: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> Float[Tensor, "b m k"]:
        """The targets of the cubes at `query_ids` of the clip, normalised with `mean` / `std`."""
        ...


@dataclass(frozen=True)
class PixelTarget:
    """The cubes' pixels as targets, raw or normalised per cube: one value per pixel and channel.

    Args:
        kind: `"norm_pix"` (VideoMAE: per cube and channel), `"norm_pix_joint"` (mae_st: per cube, over all values)
            or `"pixels"` (the [0, 1] pixels); see the module docs.
    """

    kind: TargetKind = "norm_pix"

    def __eq__(self, other: object) -> bool:
        """Equal to another PixelTarget of the same kind, and to the kind's name (`target == "norm_pix"`)."""
        if isinstance(other, str):
            return other == self.kind
        return isinstance(other, PixelTarget) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self.kind)

    def __post_init__(self) -> None:
        if self.kind not in ("norm_pix", "norm_pix_joint", "pixels"):
            raise ValueError(f"PixelTarget: kind must be 'norm_pix', 'norm_pix_joint' or 'pixels', got {self.kind!r}")

    def width(self, *, tubelet_size: int, patch_size: int, channels: int) -> int:
        """`tubelet_size * patch_size**2 * channels`: the cube's values."""
        return tubelet_size * patch_size**2 * channels

    def __call__(
        self,
        video: Float[Tensor, "b c t h w"],
        query_ids: Int[Tensor, "b m"],
        *,
        tubelet_size: int,
        patch_size: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> Float[Tensor, "b m k"]:
        """[reconstruction_targets][tubemask.targets.reconstruction_targets] of this kind."""
        return reconstruction_targets(
            video, query_ids, tubelet_size=tubelet_size, patch_size=patch_size, kind=self.kind, mean=mean, std=std
        )


def as_target(target: "TargetKind | Target") -> Target:
    """A target object: a built-in's name (`"norm_pix"`, `"norm_pix_joint"`, `"pixels"`) or any
    [Target][tubemask.targets.Target], returned as it is.

    Raises:
        ValueError: an unknown name, or an object without `width` and a call.
    """
    if isinstance(target, str):
        if target not in ("norm_pix", "norm_pix_joint", "pixels"):
            raise ValueError(f"target must be 'norm_pix', 'norm_pix_joint', 'pixels' or a Target, got {target!r}")
        return PixelTarget(target)
    if not isinstance(target, Target):
        raise ValueError(f"target {target!r} is not a Target: it needs width(...) and __call__(video, query_ids, ...)")
    return target
