"""Spatial transforms of a clip, identical for every frame.

Convention: transforms take and return frames `[t c h w]` (uint8 or float), the layout torchcodec decodes to and
torchvision's `transforms.v2.functional` treats as a batch of images; one set of parameters is drawn per call and
applied to all frames. [`normalize`][tubemask.data.transforms.normalize] ends a pipeline: it makes the model input,
float `[c t h w]` with ImageNet mean/std. Randomness comes only from an explicit `torch.Generator`.

Speed: augment in uint8 and convert to float once, at the output size. Decoded frames are uint8 in channels-last
memory (`[t c h w]` shape over `[t h w c]` storage); crops are views of them (no copy) and the bilinear resize then
takes torch's vectorized uint8 path (about 2 ms for 16 frames to 224 x 224 on one core, 4x faster than on float or
on contiguous `[t c h w]` uint8). Resizing antialiases when it shrinks, like PIL's bilinear resize that VideoMAE V1
uses (same speed on uint8). To leave normalization to the training device, a pipeline can return uint8
`[c t h w]` ([`channels_first`][tubemask.data.transforms.channels_first]) and the training loop applies
[`normalize_batch`][tubemask.data.transforms.normalize_batch] after the DataLoader (4x less memory and IPC). Those
clips stay channels-last through the repeats' stack and the collate
([`stack_clips`][tubemask.data.transforms.stack_clips]): a plain copy instead of a transposition per clip, which
`normalize_batch` does on the training device in the pass it makes anyway.

Crop and resize run in torch, not inside the decoder: torchcodec 0.17's decoder-native `Crop`/`Resize` transforms
(FFmpeg's scaler at output size) were measured slower than decoding full frames and resizing them here (crop +
resize add 0.19 to 0.30 ms per frame to the decode, torch's uint8 resize costs 0.15 ms), and they fix one crop per
opened file, which repeated sampling cannot use.
"""

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.v2.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor

from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.shapes import typechecked

__all__ = [
    "center_crop",
    "channels_first",
    "channels_innermost",
    "draw_int",
    "draw_uniform",
    "horizontal_flip",
    "horizontal_flip_unchecked",
    "multi_scale_crop",
    "multi_scale_crop_unchecked",
    "normalize",
    "normalize_batch",
    "random_erasing",
    "random_resized_crop",
    "resize",
    "resize_short_side",
    "stack_clips",
    "three_crop",
]


Frames = Shaped[Tensor, "t c h w"]
Resized = Shaped[Tensor, "t c _ _"]  # same frames and channels, new height and width


def draw_uniform(generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
    """One float drawn uniformly from `[low, high)` with `generator` (float64, one `torch.rand` draw)."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def draw_int(generator: torch.Generator | None, high: int) -> int:
    """One int drawn uniformly from `[0, high)` with `generator` (one `torch.randint` draw)."""
    return int(torch.randint(high, (), generator=generator))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"size={size!r}: expected an int or (height, width)")
    return int(size[0]), int(size[1])


_ANTIALIAS = True
"""Resize with antialiasing when shrinking (PIL bilinear, as VideoMAE V1); no effect when enlarging."""


def resize(frames: Tensor, size: tuple[int, int], out: Tensor | None = None) -> Tensor:
    """`[t c h w]` frames resized to `size` (height, width) as `F.resize` does (antialiased when shrinking), written
    into `out` (`[t c *size]`, any strides) when given. Unchecked: the callers' entry points check shapes."""
    if out is None:
        return frames if tuple(frames.shape[-2:]) == size else F.resize(frames, list(size), antialias=_ANTIALIAS)
    if tuple(frames.shape[-2:]) == size:
        return out.copy_(frames)
    if (
        frames.device.type == "cpu"
        and frames.dtype in (torch.uint8, torch.float32)
        and _ANTIALIAS
        and channels_innermost(frames)
        and channels_innermost(out)
    ):
        # The kernel F.resize runs on these inputs (torchvision calls interpolate(antialias=True), i.e. this op),
        # writing straight into `out`: a repeat of a clip goes into its slot of the [r ...] batch without a separate
        # output and a copy (about 0.5 ms per 16 x 224 x 224 uint8 clip). Only for channels-last input and output,
        # the layout F.resize would give here (torch's uint8 kernel asserts on other combinations).
        return torch.ops.aten._upsample_bilinear2d_aa.out(frames, list(size), False, out=out)
    return out.copy_(F.resize(frames, list(size), antialias=_ANTIALIAS))


def channels_innermost(frames: Tensor) -> bool:
    """True for `[t c h w]` frames whose channels are adjacent in memory (decoded frames, their crops and resizes)."""
    return frames.shape[1] > 1 and frames.stride(1) == 1 and frames.stride(3) == frames.shape[1]


@typechecked
def multi_scale_crop(
    frames: Frames,
    *,
    size: int | Sequence[int],
    generator: torch.Generator | None = None,
    scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
    more_fix_crop: bool = True,
    out: Shaped[Tensor, "t c _ _"] | None = None,
) -> Resized:
    """VideoMAE V1 multi-scale crop (TSN's GroupMultiScaleCrop), then resize to `size`.

    Crop sides are `scales` times the short side (a side within 3 pixels of the target is snapped to it); height and
    width scales differ by at most `max_distort` steps; the crop sits at one of the fixed offsets (four corners and
    centre, plus eight more with `more_fix_crop`) on a 4 x 4 step grid.

    Args:
        frames: `[t c h w]` frames.
        size: Output side (int) or `(height, width)`.
        generator: Randomness for the scale pair and offset.
        scales: Fractions of the short side.
        max_distort: Largest index difference between the height and width scale.
        more_fix_crop: Use 13 offsets instead of 5.
        out: Optional `[t c size size]` tensor of the frames' dtype (any strides, e.g. one slot of a batch of
            repeats) to write the result into.

    Returns:
        `[t c size size]` frames, same dtype (`out` when given).
    """
    return multi_scale_crop_unchecked(
        frames,
        size=size,
        generator=generator,
        scales=scales,
        max_distort=max_distort,
        more_fix_crop=more_fix_crop,
        out=out,
    )


def multi_scale_crop_unchecked(
    frames: Tensor,
    *,
    size: int | Sequence[int],
    generator: torch.Generator | None,
    scales: Sequence[float],
    max_distort: int = 1,
    more_fix_crop: bool = True,
    out: Tensor | None = None,
) -> Tensor:
    """`multi_scale_crop` without the runtime shape checks, for callers that checked their input once (repeats)."""
    out_h, out_w = _pair(size)
    if out is not None and (tuple(out.shape) != (*frames.shape[:2], out_h, out_w) or out.dtype != frames.dtype):
        raise ValueError(
            f"out is {out.dtype} {tuple(out.shape)}; expected {frames.dtype} {(*frames.shape[:2], out_h, out_w)}"
        )
    image_h, image_w = frames.shape[-2:]
    base = min(image_h, image_w)
    sides = [int(base * s) for s in scales]
    crop_h = [out_h if abs(s - out_h) < 3 else s for s in sides]
    crop_w = [out_w if abs(s - out_w) < 3 else s for s in sides]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    w, h = pairs[draw_int(generator, len(pairs))]
    w, h = min(w, image_w), min(h, image_h)
    ws, hs = (image_w - w) // 4, (image_h - h) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more_fix_crop:
        offsets += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0)]
        offsets += [(ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    left, top = offsets[draw_int(generator, len(offsets))]
    return resize(frames[..., top : top + h, left : left + w], (out_h, out_w), out)


@typechecked
def random_resized_crop(
    frames: Frames,
    *,
    size: int | Sequence[int],
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Resized:
    """Inception-style random resized crop (area fraction in `scale`, log-uniform aspect in `ratio`).

    Args:
        frames: `[t c h w]` frames.
        size: Output side or `(height, width)`.
        generator: Randomness for the box.
        scale: Range of the crop's area as a fraction of the frame.
        ratio: Range of the crop's width / height.

    Returns:
        `[t c size size]` frames.
    """
    image_h, image_w = frames.shape[-2:]
    area = image_h * image_w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * draw_uniform(generator, *scale)
        aspect = math.exp(draw_uniform(generator, *log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= image_w and 0 < h <= image_h:
            top, left = draw_int(generator, image_h - h + 1), draw_int(generator, image_w - w + 1)
            return F.resized_crop(frames, top, left, h, w, list(_pair(size)), antialias=_ANTIALIAS)
    # Fallback: the largest centred crop within the ratio range.
    aspect = image_w / image_h
    if aspect < ratio[0]:
        w, h = image_w, int(round(image_w / ratio[0]))
    elif aspect > ratio[1]:
        h, w = image_h, int(round(image_h * ratio[1]))
    else:
        w, h = image_w, image_h
    top, left = (image_h - h) // 2, (image_w - w) // 2
    return F.resized_crop(frames, top, left, h, w, list(_pair(size)), antialias=_ANTIALIAS)


@typechecked
def horizontal_flip(frames: Frames, *, p: float = 0.5, generator: torch.Generator | None = None) -> Frames:
    """Mirror all frames left-right with probability `p`.

    Keep `p=0` for datasets whose labels depend on motion direction (SSv2: "pushing left to right").
    """
    return horizontal_flip_unchecked(frames, p=p, generator=generator)


def horizontal_flip_unchecked(frames: Tensor, *, p: float, generator: torch.Generator | None) -> Tensor:
    """`horizontal_flip` without the runtime shape checks, for callers that checked their input once (repeats)."""
    if p > 0 and draw_uniform(generator) < p:
        return frames.flip(-1)
    return frames


@typechecked
def resize_short_side(frames: Frames, size: int) -> Resized:
    """Resize so the shorter side is `size`, keeping the aspect ratio."""
    h, w = frames.shape[-2:]
    if h <= w:
        new = (size, max(1, int(round(w * size / h))))
    else:
        new = (max(1, int(round(h * size / w))), size)
    return resize(frames, new)


@typechecked
def center_crop(frames: Frames, size: int | Sequence[int]) -> Resized:
    """Crop the centre `size` (int or `(height, width)`); the frames must be at least that large."""
    out_h, out_w = _pair(size)
    h, w = frames.shape[-2:]
    if out_h > h or out_w > w:
        raise ValueError(f"center_crop to {out_h}x{out_w} of {h}x{w} frames: resize first")
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return frames[..., top : top + out_h, left : left + out_w]


@typechecked
def three_crop(frames: Frames, size: int) -> list[Tensor]:
    """Three `size x size` crops along the long side (start, middle, end), as VideoMAE testing.

    Resize the short side to `size` first; the crops then cover the whole frame.

    Returns:
        Three `[t c size size]` views.
    """
    h, w = frames.shape[-2:]
    if min(h, w) < size:
        raise ValueError(f"three_crop of size {size} from {h}x{w} frames: resize the short side first")
    if w >= h:
        top = (h - size) // 2
        return [frames[..., top : top + size, x : x + size] for x in (0, (w - size) // 2, w - size)]
    left = (w - size) // 2
    return [frames[..., y : y + size, left : left + size] for y in (0, (h - size) // 2, h - size)]


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

    The unnormalized counterpart of [`normalize`][tubemask.data.transforms.normalize], for pipelines that leave
    normalization to [`normalize_batch`][tubemask.data.transforms.normalize_batch] on the training device. Decoded and
    resized frames are channels-last in memory, so the clip's storage is `[t h w c]`;
    [`stack_clips`][tubemask.data.transforms.stack_clips] and the datasets' collate keep that order and the
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
    [`normalize_batch`][tubemask.data.transforms.normalize_batch] writes a contiguous float batch from it on the
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

    The same values as [`normalize`][tubemask.data.transforms.normalize], for clips from a pipeline built with
    `normalize=False` (uint8 `[b c t h w]`): move the batch to the GPU first (`batch.cuda(non_blocking=True)`) and
    normalize there. The batch may have any memory layout (the datasets' collate leaves it channels-last, see
    [`stack_clips`][tubemask.data.transforms.stack_clips]); the result is always contiguous `[..., c, t, h, w]`, so
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


@typechecked
def random_erasing(
    clip: Float[Tensor, "c t h w"],
    *,
    p: float = 0.25,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
    inplace: bool = False,
) -> Float[Tensor, "c t h w"]:
    """Replace one random box, the same in every frame, with standard normal noise (timm's `mode="pixel"`).

    Applied after [`normalize`][tubemask.data.transforms.normalize] (noise ~ N(0, 1) matches normalized pixels).
    VideoMAE V1 calls timm's per-image eraser on the frames, so its box differs per frame; here the box is a tube.

    Args:
        clip: Normalized `[c t h w]` clip.
        p: Probability of erasing.
        generator: Randomness for the decision, the box and the noise.
        scale: Range of the box area as a fraction of the frame.
        ratio: Range of the box aspect (log-uniform).
        inplace: Erase in `clip` itself (for a clip the caller owns, e.g. just normalized) instead of a copy.

    Returns:
        The clip, erased or not (a new tensor when erased, unless `inplace`).
    """
    if p <= 0 or draw_uniform(generator) >= p:
        return clip
    c, t, h, w = clip.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = h * w * draw_uniform(generator, *scale)
        aspect = math.exp(draw_uniform(generator, *log_ratio))
        eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = draw_int(generator, h - eh + 1), draw_int(generator, w - ew + 1)
            out = clip if inplace else clip.clone()
            noise = torch.randn((c, 1, eh, ew), generator=generator, dtype=clip.dtype)
            out[:, :, top : top + eh, left : left + ew] = noise.to(clip.device)
            return out
    return clip
