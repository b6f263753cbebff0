"""Where a decoded frame's pixels and its boxes go when it becomes a detection clip: resize, crop, mirror.

[`ClipGeometry`][tubemask.data.clip_geometry.ClipGeometry] holds one clip's resize, crop and flip and applies them to
the frames and to normalised boxes alike, so the boxes stay on the people they mark.
[`eval_geometry`][tubemask.data.clip_geometry.eval_geometry] is the deterministic test-time transform and
[`draw_train_geometry`][tubemask.data.clip_geometry.draw_train_geometry] draws a training one (scale, crop, flip) from
a generator; [`AVADataset`][tubemask.data.ava_dataset.AVADataset] uses both.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from tubemask.data.transforms import draw_int, draw_uniform, resize

__all__ = ["ClipGeometry", "draw_train_geometry", "eval_geometry", "resized_shape"]


@dataclass(frozen=True)
class ClipGeometry:
    """How a decoded frame becomes the clip: resize to `resized`, crop `out` at `(top, left)`, maybe mirror.

    Attributes:
        resized: `(h, w)` after resizing.
        top: First row of the crop.
        left: First column of the crop.
        out: `(h, w)` of the clip.
        flip: Mirror left-right after cropping.
    """

    resized: tuple[int, int]
    top: int
    left: int
    out: tuple[int, int]
    flip: bool

    def frames(self, frames: Tensor) -> Tensor:
        """`[... h w]` frames resized, cropped and maybe mirrored to `[... out_h out_w]`."""
        frames = resize(frames, self.resized)
        frames = frames[..., self.top : self.top + self.out[0], self.left : self.left + self.out[1]]
        return frames.flip(-1) if self.flip else frames

    def boxes(self, norm_boxes: Tensor) -> Tensor:
        """Normalised `[r 4]` boxes to pixel boxes of the clip, clipped to it (ordered and inside, by construction)."""
        (h, w), (oh, ow) = self.resized, self.out
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        shift = torch.tensor([self.left, self.top, self.left, self.top], dtype=torch.float32)
        limit = torch.tensor([ow, oh, ow, oh], dtype=torch.float32)
        boxes = torch.minimum((norm_boxes * scale - shift).clamp(min=0), limit)
        if self.flip:
            boxes = torch.stack([ow - boxes[:, 2], boxes[:, 1], ow - boxes[:, 0], boxes[:, 3]], dim=1)
        return boxes


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def resized_shape(h: int, w: int, short: int, multiple: int | None) -> tuple[int, int]:
    """`(h, w)` with the short side `short` and the aspect kept; each side rounded to `multiple` when given."""
    long = max(h, w) * short / min(h, w)
    new_h, new_w = (short, long) if h <= w else (long, short)
    if multiple is None:
        return int(round(new_h)), int(round(new_w))
    return _round_to(new_h, multiple), _round_to(new_w, multiple)


def eval_geometry(h: int, w: int, short_side: int, size_multiple: int) -> ClipGeometry:
    """The test-time transform of an `h x w` frame: short side `short_side`, both sides multiples of `size_multiple`
    (the long side the multiple nearest its aspect-preserving length); no crop, no flip."""
    size = resized_shape(h, w, short_side, size_multiple)
    return ClipGeometry(size, 0, 0, size, False)


def draw_train_geometry(
    h: int,
    w: int,
    scale_jitter: tuple[int, int],
    crop_size: int | None,
    size_multiple: int,
    flip: float,
    *,
    generator: torch.Generator,
) -> ClipGeometry:
    """A training transform of an `h x w` frame, drawn from `generator` in a fixed order (short side, crop offset,
    flip): the short side a random integer in `scale_jitter` (inclusive), then a random `crop_size` square (with
    `crop_size=None` no crop, each side rounded to `size_multiple` instead), mirrored with probability `flip`. The
    flip is drawn even when `flip` is 0, so the draws after it do not depend on it."""
    low, high = scale_jitter
    short = low + draw_int(generator, high - low + 1)
    if crop_size is None:
        size = resized_shape(h, w, short, size_multiple)
        top = left = 0
        out = size
    else:
        size = resized_shape(h, w, short, None)
        top = draw_int(generator, size[0] - crop_size + 1)
        left = draw_int(generator, size[1] - crop_size + 1)
        out = (crop_size, crop_size)
    return ClipGeometry(size, top, left, out, draw_uniform(generator) < flip)
