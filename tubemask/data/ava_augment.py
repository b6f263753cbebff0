"""The box and colour augmentations of VideoMAE's AVA code, options of
[`AVADataset`][tubemask.data.ava_dataset.AVADataset], and a plain symmetric box jitter
([`jitter_boxes`][tubemask.data.ava_augment.jitter_boxes]).

VideoMAE's AVA fine-tuning (the AlphAction code base, Tang et al. 2020) trains on ground-truth boxes whose four edges
are each moved at random, mostly outwards ([`official_box_jitter`][tubemask.data.ava_augment.official_box_jitter]),
recolours each training clip by one shift in HSV space ([`hsv_jitter`][tubemask.data.ava_augment.hsv_jitter]), and at
test time pools each person box widened by 10% and heightened by 5%
([`extend_boxes`][tubemask.data.ava_augment.extend_boxes]); the reported box stays the detector's. Here boxes are
continuous normalised coordinates, so the official code's one-pixel `x2 = x + w - 1` convention has no counterpart.
"""

import torch
from jaxtyping import Float, UInt8
from torch import Tensor

from tubemask.data.transforms import draw_int
from tubemask.shapes import typechecked

__all__ = ["OFFICIAL_TEST_EXTENSION", "extend_boxes", "hsv_jitter", "jitter_boxes", "official_box_jitter"]

OFFICIAL_TEST_EXTENSION = (0.1, 0.05)
"""Test-box extension of VideoMAE's AVA model: the width grows by 10%, the height by 5%, about the centre."""

_OUT_IN = ((0.2, 0.1), (0.1, 0.05))  # (outward, inward) reach of an x edge and of a y edge, as a fraction of the size


@typechecked
def jitter_boxes(boxes: Float[Tensor, "r 4"], amount: float, generator: torch.Generator) -> Float[Tensor, "r 4"]:
    """Shift each box by up to `amount` x its width / height and scale its sides by a factor in `1 +- amount`.

    For training on jittered ground-truth boxes (VideoMAE's AVA protocol). Works on normalised boxes; the result is
    clipped to [0, 1] and stays ordered (`x1 <= x2`, `y1 <= y2`). Draws `4 r` uniforms from `generator`.
    """
    if amount < 0:
        raise ValueError(f"box jitter {amount} must be >= 0")
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    u = torch.rand(boxes.shape[0], 4, generator=generator, dtype=torch.float32) * 2 - 1  # [r 4] in [-1, 1)
    centre = centre + u[:, :2] * amount * wh
    half = wh * (1 + u[:, 2:] * amount).clamp(min=0) / 2
    out = torch.cat([centre - half, centre + half], dim=1).clamp(0, 1)
    return torch.cat([out[:, :2], torch.maximum(out[:, :2], out[:, 2:])], dim=1)


@typechecked
def official_box_jitter(boxes: Float[Tensor, "r 4"], generator: torch.Generator) -> Float[Tensor, "r 4"]:
    """Move each edge of each normalised box independently: x edges by up to 20% of the width outwards and 10%
    inwards, y edges by up to 10% of the height outwards and 5% inwards (uniform); clip to [0, 1], keep `x1 <= x2`.

    VideoMAE's AVA training jitter (AlphAction's `random_aug(0.2, 0.1, 0.1, 0.05)`); draws `4 r` uniforms from
    `generator`.
    """
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # [r 4]: w h w h
    (x_out, x_in), (y_out, y_in) = _OUT_IN
    low = torch.tensor([-x_out, -y_out, -x_in, -y_in])  # x1 y1 move left / up by up to `out`, x2 y2 by up to `in`
    high = torch.tensor([x_in, y_in, x_out, y_out])
    u = torch.rand(boxes.shape[0], 4, generator=generator, dtype=torch.float32)
    out = (boxes + size * (low + u * (high - low))).clamp(0, 1)
    return torch.cat([out[:, :2], torch.maximum(out[:, :2], out[:, 2:])], dim=1)


@typechecked
def extend_boxes(boxes: Float[Tensor, "r 4"], extension: tuple[float, float]) -> Float[Tensor, "r 4"]:
    """Widen each box by `extension[0]` of its width and heighten it by `extension[1]` of its height, about its
    centre, clipped to [0, 1] (normalised boxes; `(0.1, 0.05)` is VideoMAE's test-time extension).

    Raises:
        ValueError: for a negative extension.
    """
    if min(extension) < 0:
        raise ValueError(f"box extension {extension} must be >= 0 (fractions of the width and height)")
    pad = (boxes[:, 2:] - boxes[:, :2]) * torch.tensor(extension, dtype=boxes.dtype) / 2  # [r 2]
    return torch.cat([boxes[:, :2] - pad, boxes[:, 2:] + pad], dim=1).clamp(0, 1)


def _rgb_to_hsv(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in [0, 1) (a turn), saturation and value in [0, 1], of `[t 3 h w]` RGB in [0, 1]."""
    r, g, b = rgb.unbind(1)
    value, _ = rgb.max(dim=1)
    chroma = value - rgb.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), value * 0)
    return hue, saturation, value


def _hsv_to_rgb(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """`[t 3 h w]` RGB in [0, 1] of hue (a turn), saturation and value."""
    n = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = (n + hue[:, None] * 6) % 6
    return value[:, None] - value[:, None] * saturation[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


@typechecked
def hsv_jitter(
    frames: UInt8[Tensor, "t 3 h w"],
    generator: torch.Generator,
    *,
    hue_degrees: float = 20.0,
    saturation: float = 0.1,
    value: float = 0.1,
) -> UInt8[Tensor, "t 3 h w"]:
    """Recolour a clip by one draw in HSV space: hue turned by a whole number of 2-degree steps within
    `+- hue_degrees / 2` (wrapping around), saturation and value shifted by a whole number of 1/255 steps within
    `+- saturation` and `+- value` (clipped to [0, 1]); the same shift for every frame and pixel.

    VideoMAE's AVA training colour jitter (AlphAction's `ColorJitter(20, 0.1, 0.1)` over OpenCV's 8-bit HSV, whose
    hue unit is 2 degrees). Draws three integers from `generator` (hue, saturation, value). A draw of zero for all
    three returns the frames unchanged.

    Raises:
        ValueError: for a negative bound.
    """
    if min(hue_degrees, saturation, value) < 0:
        raise ValueError(f"hsv_jitter bounds must be >= 0, got {hue_degrees}, {saturation}, {value}")
    bounds = (round(hue_degrees / 2), round(saturation * 255), round(value * 255))
    dh, ds, dv = (draw_int(generator, 2 * b + 1) - b for b in bounds)
    if dh == ds == dv == 0:
        return frames
    hue, sat, val = _rgb_to_hsv(frames.float() / 255)
    hue = (hue + dh / 180) % 1  # 2-degree steps: 180 to the turn
    rgb = _hsv_to_rgb(hue, (sat + ds / 255).clamp(0, 1), (val + dv / 255).clamp(0, 1))
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8)
