"""Spatial transforms of a clip, identical for every frame.

Convention: transforms take and return frames `[t c h w]` (uint8 or float), the layout torchcodec decodes to and
torchvision's `transforms.v2.functional` treats as a batch of images; one set of parameters is drawn per call and
applied to all frames. A pipeline ends in [tubemask.data.model_input][]: it makes the model input, float `[c t h w]`
with ImageNet mean/std, or leaves that to the training device. Randomness comes only from an explicit
`torch.Generator`.

Speed: augment in uint8 and convert to float once, at the output size. Decoded frames are uint8 in channels-last
memory (`[t c h w]` shape over `[t h w c]` storage); crops are views of them (no copy) and the bilinear resize then
takes torch's vectorized uint8 path (about 2 ms for 16 frames to 224 x 224 on one core, 4x faster than on float or
on contiguous `[t c h w]` uint8). Resizing antialiases when it shrinks, like PIL's bilinear resize that VideoMAE V1
uses (same speed on uint8).

Crop and resize run in torch, not inside the decoder: torchcodec 0.17's decoder-native `Crop`/`Resize` transforms
(FFmpeg's scaler at output size) were measured slower than decoding full frames and resizing them here (crop +
resize add 0.19 to 0.30 ms per frame to the decode, torch's uint8 resize costs 0.15 ms), and they fix one crop per
opened file, which repeated sampling cannot use.
"""

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = [
    "center_crop",
    "channels_innermost",
    "draw_int",
    "draw_uniform",
    "horizontal_flip",
    "horizontal_flip_unchecked",
    "multi_scale_crop",
    "multi_scale_crop_unchecked",
    "random_erasing",
    "random_resized_crop",
    "resize",
    "resize_short_side",
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

    Applied after [`normalize`][tubemask.data.model_input.normalize] (noise ~ N(0, 1) matches normalized pixels).
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
