"""From augmented frames to model input: normalisation, and batches that stay uint8 until the training device.

[`normalize`][tubemask.data.model_input.normalize] ends a pipeline: float `[c t h w]`, `(x / 255 - mean) / std` with
ImageNet statistics by default. To leave normalization to the training device, a pipeline can instead return uint8
`[c t h w]` ([`channels_first`][tubemask.data.model_input.channels_first]) and the training loop applies
[`normalize_batch`][tubemask.data.model_input.normalize_batch] after the DataLoader (4x less memory and IPC). Those
clips stay channels-last through the repeats' stack and the collate
([`stack_clips`][tubemask.data.model_input.stack_clips]): a plain copy instead of a transposition per clip, which
`normalize_batch` does on the training device in the pass it makes anyway.
"""

import functools
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from tubemask.data.transforms import Frames
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.shapes import typechecked

__all__ = ["channels_first", "normalize", "normalize_batch", "stack_clips"]


def _affine(peak: float, mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[Tensor, Tensor]:
    """`(scale, shift)` of `(x / peak - mean) / std = x * scale - shift`, as float32 `[c]` on `device`."""
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} channels, std {len(std)}")
    scale = torch.tensor([1.0 / (peak * sd) for sd in std], dtype=torch.float32)
    shift = torch.tensor([mu / sd for mu, sd in zip(mean, std, strict=True)], dtype=torch.float32)
    return scale.to(device), shift.to(device)


@functools.lru_cache(maxsize=32)
def _batch_affine(
    peak: float, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """`_affine`, made once per (peak, mean, std, device) and then reused: building it per batch is two blocking
    host-to-device copies on CUDA (two device syncs per training step). The callers only read the tensors."""
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable inside and outside inference mode
        return _affine(peak, mean, std, device)


@typechecked
def normalize(
    frames: Frames,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    out: Float[Tensor, "c t h w"] | None = None,
) -> Float[Tensor, "c t h w"]:
    """Make the model input: float `[c t h w]`, `(x / 255 - mean) / std` for uint8 (float input is taken as [0, 1]).

    Args:
        frames: `[t c h w]` frames, uint8 in [0, 255] or float in [0, 1].
        mean: Per-channel mean (ImageNet by default).
        std: Per-channel standard deviation.
        out: Optional float32 `[c t h w]` tensor to write into (e.g. one slot of a `[r c t h w]` batch of repeats).

    Returns:
        Float32 `[c t h w]` (`out` when given).
    """
    # One copy into the [c t h w] float layout, then in-place affine: (x * k - mean / std) with k = 1 / (255 std).
    shape = (frames.shape[1], frames.shape[0], *frames.shape[2:])
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=frames.device)
    elif tuple(out.shape) != shape or out.dtype != torch.float32:
        raise ValueError(f"out is {out.dtype} {tuple(out.shape)}; expected float32 {shape}")
    out.copy_(frames.permute(1, 0, 2, 3))
    scale, shift = _affine(255.0 if frames.dtype == torch.uint8 else 1.0, mean, std, out.device)
    return out.mul_(scale.view(-1, 1, 1, 1)).sub_(shift.view(-1, 1, 1, 1))


def channels_first(frames: Frames) -> Shaped[Tensor, "c t h w"]:
    """`[t c h w]` frames as a `[c t h w]` clip without normalizing: a view (no copy, so usually not contiguous).

    The unnormalized counterpart of [`normalize`][tubemask.data.model_input.normalize], for pipelines that leave
    normalization to [`normalize_batch`][tubemask.data.model_input.normalize_batch] on the training device. Decoded and
    resized frames are channels-last in memory, so the clip's storage is `[t h w c]`;
    [`stack_clips`][tubemask.data.model_input.stack_clips] and the datasets' collate keep that order and the
    transposition to `[c t h w]` memory happens on the training device, in `normalize_batch`.
    """
    return frames.permute(1, 0, 2, 3)


def _storage_view(clip: Tensor) -> Tensor | None:
    """`clip` (`[..., c, t, h, w]`) permuted to `[..., t, h, w, c]` when its channels are innermost in memory (decoded
    frames, their crops and resizes), else None."""
    k = clip.dim()
    if k < 4 or clip.shape[-4] < 2 or clip.stride(-4) != 1:
        return None
    return clip.permute(*range(k - 4), k - 3, k - 2, k - 1, k - 4)


def _from_storage(stacked: Tensor) -> Tensor:
    """Inverse of `_storage_view` after stacking: `[n, ..., t, h, w, c]` viewed as `[n, ..., c, t, h, w]`."""
    k = stacked.dim()
    return stacked.permute(*range(k - 4), k - 1, k - 4, k - 3, k - 2)


def stack_clips(clips: Sequence[Tensor], stack: Callable[[list[Tensor]], Tensor] = torch.stack) -> Tensor:
    """Stack equal-shape clips `[..., c, t, h, w]` on a new leading dim, copying in the clips' memory order.

    Clips from a `normalize=False` pipeline are `[c t h w]` views of channels-last `[t h w c]` memory; stacking them
    into a contiguous `[n c t h w]` tensor would transpose every byte (about 1.8 ms per 16 x 224 x 224 clip on one
    core, as long as the resize that made it). Here clips whose channels are innermost in memory are stacked as
    `[t h w c]` (a plain copy, 0.3 ms; crops that needed no resize are copied row by row) and the result is a
    `[n c t h w]` view of `[n t h w c]` memory: the same values, and
    [`normalize_batch`][tubemask.data.model_input.normalize_batch] writes a contiguous float batch from it on the
    training device. Clips in any other layout (e.g. normalized float clips) are stacked as usual.

    Args:
        clips: Clips of one shape, `[c t h w]` (or with more leading dims, e.g. `[r c t h w]` repeats).
        stack: The stacking function (`torch.stack`, or the DataLoader's `default_collate`, which stacks into shared
            memory in worker processes).

    Returns:
        `[n, ..., c, t, h, w]` with the values of `torch.stack(clips)`.
    """
    bases = [_storage_view(c) for c in clips]
    if len(clips) == 0 or any(b is None for b in bases):
        return stack(list(clips))
    return _from_storage(stack(bases))  # type: ignore[arg-type]


@typechecked
def normalize_batch(
    batch: Shaped[Tensor, "*b c t h w"],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "*b c t h w"]:
    """Normalize a batch of clips where it is: `(x / 255 - mean) / std` for uint8 (float input is taken as [0, 1]).

    The same values as [`normalize`][tubemask.data.model_input.normalize], for clips from a pipeline built with
    `normalize=False` (uint8 `[b c t h w]`): move the batch to the GPU first (`batch.cuda(non_blocking=True)`) and
    normalize there. The batch may have any memory layout (the datasets' collate leaves it channels-last, see
    [`stack_clips`][tubemask.data.model_input.stack_clips]); the result is always contiguous `[..., c, t, h, w]`, so
    the transposition is part of this one pass over the batch.

    Args:
        batch: `[..., c, t, h, w]` clips (e.g. `[b c t h w]` or one `[c t h w]` clip), uint8 or float in [0, 1], on
            any device.
        mean: Per-channel mean (ImageNet by default).
        std: Per-channel standard deviation.
        dtype: Output floating dtype (the arithmetic is float32, then cast).

    Returns:
        Contiguous `[..., c, t, h, w]` of `dtype`, on the batch's device.
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype} must be a floating dtype")
    peak = 255.0 if batch.dtype == torch.uint8 else 1.0
    scale, shift = _batch_affine(peak, tuple(mean), tuple(std), batch.device)
    if batch.shape[-4] != scale.numel():
        raise ValueError(f"batch has {batch.shape[-4]} channels (dim -4), mean/std {scale.numel()}")
    x = torch.empty(batch.shape, dtype=torch.float32, device=batch.device).copy_(batch)
    x = x.mul_(scale.view(-1, 1, 1, 1)).sub_(shift.view(-1, 1, 1, 1))
    return x if dtype == torch.float32 else x.to(dtype)
