"""Video RandAugment: timm's RandAugment with one set of op parameters for all frames of a clip.

The spec string follows timm: `rand-m7-n4-mstd0.5-inc1` = magnitude 7 (of 10), 4 ops per clip, magnitude noise std
0.5, the "increasing" op set (larger magnitude = stronger for every op). VideoMAE V1 fine-tuning uses exactly that.
Each chosen op is applied with probability 0.5 (timm's default), its magnitude drawn once from
`N(m, mstd)` clipped to [0, 10], and its sign (for signed ops) drawn once, so the clip stays temporally consistent.
Ops run on uint8 `[t c h w]` frames with `torchvision.transforms.v2.functional`, some by exact shortcuts
(one CPU core, 16 frames of 320 x 240, channels-last as decoded): the integer translations are a shifted copy
instead of an affine resampling (0.6 ms instead of 19 to 36 ms), rotations and shears gather the pixels that
torchvision's nearest sampling picks (2x faster), solarize, solarize-add and brightness look their result up in a
256-entry table computed by the torchvision op itself (3.5 ms instead of 10 to 11 ms), and autocontrast and equalize
make one table per frame and channel with torchvision's arithmetic (2.4 to 5x faster). A whole
`rand-m7-n4-mstd0.5-inc1` clip went from 45 to 22 ms with the first shortcuts, and costs about 15 ms against 33 to 35
ms for the same ops written plainly with torchvision (`TORCHVISION_OPS`, `benchmarks/randaugment.py`) with the
tables. Contrast is left to torchvision: a table for its blend (`v * f + mean * (1 - f)`) is not exact, because
torch's vectorised and scalar loops may round `a + alpha * b` differently (fused or not), so torchvision's own result
for one value can differ by position; a table disagreed with it by 1 on torch 2.11.
`tests/data/test_randaugment_mixup.py` checks each of these ops, and whole clips, against torchvision's ops, value
for value.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from jaxtyping import UInt8
from torch import Tensor

from tubemask.data.transforms import channels_innermost
from tubemask.shapes import typechecked

__all__ = ["RandAugment", "RANDAUGMENT_OPS", "TORCHVISION_OPS", "parse_randaugment"]

_MAX = 10.0


def _signed(value: float, sign: float) -> float:
    return value * sign


def _enhance(level: float, sign: float) -> float:
    return 1.0 + _signed(level / _MAX * 0.9, sign)


def _plain_affine(x: Tensor, *, angle: float = 0.0, translate=(0, 0), shear=(0.0, 0.0), fill: float = 128) -> Tensor:
    """timm's affine ops as torchvision computes them: `F.affine` with scale 1 and nearest sampling."""
    return F.affine(x, angle=angle, translate=list(translate), scale=1.0, shear=list(shear), fill=fill)


def _affine(x: Tensor, *, angle: float = 0.0, translate=(0, 0), shear=(0.0, 0.0), fill: int = 128) -> Tensor:
    """`F.affine(x, ..., fill=fill)` with nearest sampling: on CPU a gather of the source pixels.

    torchvision resamples every frame and channel through a float grid; nearest sampling only picks one source pixel
    per output pixel (or the fill), the same for all frames and channels. So the pick is made once, by running
    `F.affine` itself on a one-channel image of pixel numbers (exact in float32 below 2**24 pixels), and the clip is
    gathered with it: the same values, 2x faster on 16 frames of 320 x 240, and the frames' memory layout kept.
    """
    t, c, h, w = x.shape
    if x.device.type != "cpu" or h * w >= 2**24:
        return _plain_affine(x, angle=angle, translate=translate, shear=shear, fill=fill)
    numbers = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w)
    picked = _plain_affine(numbers, angle=angle, translate=translate, shear=shear, fill=0.0)
    index = picked.view(h * w).to(torch.int64) - 1
    index[index < 0] = h * w  # outside the frame: the fill pixel appended below
    if channels_innermost(x):  # channels-last [t h w c] memory: gather whole pixels
        pixels = x.permute(0, 2, 3, 1).reshape(t, h * w, c)
        padded = torch.cat([pixels, pixels.new_full((t, 1, c), fill)], dim=1)
        return padded.index_select(1, index).view(t, h, w, c).permute(0, 3, 1, 2)
    planes = x.reshape(t, c, h * w)
    padded = torch.cat([planes, planes.new_full((t, c, 1), fill)], dim=2)
    return padded.index_select(2, index).view(t, c, h, w)


def _solarize(x: Tensor, threshold: int) -> Tensor:
    """Invert the values `>= threshold`; 256 (magnitude 0) inverts nothing, as PIL's solarize in timm (torchvision
    refuses a threshold above 255)."""
    return x if threshold > 255 else F.solarize(x, threshold)


def _solarize_add(x: Tensor, add: int) -> Tensor:
    added = (x.to(torch.int16) + add).clamp(0, 255).to(torch.uint8)
    return torch.where(x < 128, added, x)


def _translate_shift(x: Tensor, level: float, sign: float, axis: int) -> int:
    """timm's `TranslateXRel`/`TranslateYRel` shift in pixels: up to 45% of the width (axis 0) or height (1)."""
    size = x.shape[-1] if axis == 0 else x.shape[-2]
    return int(round(_signed(level / _MAX * 0.45, sign) * size))


def _shear_degrees(level: float, sign: float) -> float:
    """timm's shear factor (up to 0.3) as the angle torchvision takes."""
    return math.degrees(math.atan(_signed(level / _MAX * 0.3, sign)))


def _translate(x: Tensor, level: float, sign: float, axis: int) -> Tensor:
    return _shifted(x, _translate_shift(x, level, sign, axis), axis)


def _shifted(x: Tensor, shift: int, axis: int, fill: int = 128) -> Tensor:
    """`F.affine(x, translate=...)` for an integer shift along width (axis 0) or height (1), filled with `fill`: the
    same pixels (nearest sampling of an integer translation moves whole pixels), copied instead of resampled."""
    dim = -1 if axis == 0 else -2
    size = x.shape[dim]
    out = torch.full_like(x, fill)  # keeps the frames' memory format
    if abs(shift) < size:
        src = x.narrow(dim, max(0, -shift), size - abs(shift))
        out.narrow(dim, max(0, shift), size - abs(shift)).copy_(src)
    return out


_VALUES = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256)


def _valuewise(op: Callable[[Tensor, float, float], Tensor]) -> Callable[[Tensor, float, float], Tensor]:
    """`op` for an op that maps each uint8 value on its own (same value in, same value out, in every channel and
    frame): run `op` once on the 256 values and look every pixel up in that table
    (`_lookup`). Exact by construction."""

    def apply(x: Tensor, m: float, s: float) -> Tensor:
        if x.device.type != "cpu" or x.numel() == 0:
            return op(x, m, s)
        return _lookup_clip(x, op(_VALUES, m, s).reshape(1, 256))

    return apply


def _lookup(rows: Tensor, tables: Tensor) -> Tensor:
    """`tables[i][rows[i]]` for each row: uint8 `[k, n]` values through uint8 `[k, 256]` tables, on CPU.

    Runs `bytearray.translate`, CPython's byte-to-byte table loop: about 0.7 ns per value on one core, where NumPy's
    `take` (which widens the indices to int64 first) takes 2.5 ns and torch's float ops of the ops themselves 3 to 8.
    """
    rows = rows.contiguous()
    k, n = rows.shape
    src = rows.numpy()
    if k == 1:
        out = bytearray(src.data).translate(tables.numpy().tobytes())
    else:
        out = bytearray(k * n)
        for i, table in enumerate(tables.numpy()):
            out[i * n : (i + 1) * n] = src[i].tobytes().translate(table.tobytes())
    return torch.frombuffer(out, dtype=torch.uint8).view(k, n)


def _lookup_clip(x: Tensor, table: Tensor) -> Tensor:
    """`x` (`[t c h w]`) through one uint8 `[1, 256]` table; the result keeps the memory layout of `x`."""
    storage = _storage_order(x)  # the same elements in memory order
    return _restore_order(_lookup(storage.reshape(1, -1), table).view(storage.shape), x)


def _storage_order(x: Tensor) -> Tensor:
    """`x` (`[t c h w]`) as a contiguous tensor whose shape follows the memory order of `x`: `[t h w c]` for
    channels-last frames (a view when they are dense), `[t c h w]` otherwise."""
    return (x.permute(0, 2, 3, 1) if channels_innermost(x) else x).contiguous()


def _restore_order(out: Tensor, like: Tensor) -> Tensor:
    return out.permute(0, 3, 1, 2) if channels_innermost(like) else out


def _per_plane(x: Tensor, tables_of: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply one table per `(frame, channel)` plane: `tables_of(planes)` maps the contiguous uint8 `[t*c, h*w]`
    planes to their uint8 `[t*c, 256]` tables. The result keeps the memory layout of `x`: channels-last frames are
    gathered into planes and the looked-up planes scattered back into `[t h w c]` memory with NumPy's strided copies
    (2.5 ms each way for 16 x 240 x 320 frames; torch's layout conversions take 4 and 6 ms)."""
    t, c, h, w = x.shape
    if not channels_innermost(x):
        planes = x.contiguous().view(t * c, h * w)
        return _lookup(planes, tables_of(planes)).view(t, c, h, w)
    pixels = x.permute(0, 2, 3, 1).numpy()  # [t h w c], strided when x is a crop
    planes = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).view(t * c, h * w)
    tables = tables_of(planes).numpy()
    src = planes.numpy()
    out = np.empty((t, h, w, c), dtype=np.uint8)
    for k in range(t * c):
        looked_up = src[k].tobytes().translate(tables[k].tobytes())
        out[k // c, :, :, k % c] = np.frombuffer(looked_up, dtype=np.uint8).reshape(h, w)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _autocontrast(x: Tensor) -> Tensor:
    """`F.autocontrast`: one table per plane, made by torchvision's own arithmetic (float32 `(v - min) / ((max -
    min) / 255)`, clamped and truncated; the identity for a flat plane) and applied by `_lookup`."""
    if x.device.type != "cpu" or x.numel() == 0 or x.shape[1] not in (1, 3):
        return F.autocontrast(x)

    def tables(planes: Tensor) -> Tensor:
        minimum = planes.amin(dim=1, keepdim=True).to(torch.float32)
        maximum = planes.amax(dim=1, keepdim=True).to(torch.float32)
        flat = maximum == minimum
        inv_scale = maximum.sub_(minimum).mul_(1.0 / 255)
        minimum[flat] = 0.0
        inv_scale[flat] = 1.0
        values = _VALUES.view(1, 256).to(torch.float32)
        return values.sub(minimum).div_(inv_scale).clamp_(0, 255).to(torch.uint8)

    return _per_plane(x, tables)


def _equalize(x: Tensor) -> Tensor:
    """`F.equalize`: each plane's histogram (`torch.bincount`), PIL's table from it exactly as torchvision computes it
    (integer arithmetic; the identity where a plane has one value or nearly), applied by `_lookup`."""
    if x.device.type != "cpu" or x.numel() == 0:
        return F.equalize(x)

    def tables(planes: Tensor) -> Tensor:
        hist = torch.stack([torch.bincount(p, minlength=256) for p in planes]).to(torch.int32)
        cum_hist = hist.cumsum(dim=-1)
        last = cum_hist.argmax(dim=-1, keepdim=True)  # the largest value present: the first maximum of cum_hist
        step = (planes.shape[1] - hist.gather(-1, last)).div_(255, rounding_mode="floor")
        lut = cum_hist[:, :-1].add(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
        lut = torch.cat([lut.new_zeros(len(planes), 1), lut], dim=-1).to(torch.uint8)
        return torch.where(step != 0, lut, _VALUES.view(1, 256))

    return _per_plane(x, tables)


def _shear(x: Tensor, level: float, sign: float, axis: int, affine: Callable[..., Tensor] = _affine) -> Tensor:
    """timm's ShearX (axis 0) / ShearY (1): PIL shears about the top-left corner, torchvision about the centre, so
    the centre's displacement (`factor` x half the other side) is translated back."""
    degrees = _shear_degrees(level, sign)
    factor = math.tan(math.radians(degrees))
    h, w = x.shape[-2:]
    if axis == 0:
        return affine(x, shear=(degrees, 0.0), translate=(-factor * h / 2, 0.0))
    return affine(x, shear=(0.0, degrees), translate=(0.0, -factor * w / 2))


RANDAUGMENT_OPS: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "AutoContrast": lambda x, m, s: _autocontrast(x),
    "Equalize": lambda x, m, s: _equalize(x),
    "Invert": lambda x, m, s: F.invert(x),
    "Rotate": lambda x, m, s: _affine(x, angle=_signed(m / _MAX * 30.0, s)),
    "PosterizeIncreasing": lambda x, m, s: F.posterize(x, max(0, 4 - int(m / _MAX * 4))),
    "SolarizeIncreasing": _valuewise(lambda x, m, s: _solarize(x, 256 - int(m / _MAX * 256))),
    "SolarizeAdd": _valuewise(lambda x, m, s: _solarize_add(x, int(m / _MAX * 110))),
    "ColorIncreasing": lambda x, m, s: F.adjust_saturation(x, _enhance(m, s)),
    "ContrastIncreasing": lambda x, m, s: F.adjust_contrast(x, _enhance(m, s)),
    "BrightnessIncreasing": _valuewise(lambda x, m, s: F.adjust_brightness(x, _enhance(m, s))),
    "SharpnessIncreasing": lambda x, m, s: F.adjust_sharpness(x, _enhance(m, s)),
    "ShearX": lambda x, m, s: _shear(x, m, s, 0),
    "ShearY": lambda x, m, s: _shear(x, m, s, 1),
    "TranslateXRel": lambda x, m, s: _translate(x, m, s, 0),
    "TranslateYRel": lambda x, m, s: _translate(x, m, s, 1),
}
"""timm's `_RAND_INCREASING_TRANSFORMS`, as functions `(frames, magnitude, sign) -> frames`."""


def _plain_translate(x: Tensor, m: float, s: float, axis: int) -> Tensor:
    shift = _translate_shift(x, m, s, axis)
    return _plain_affine(x, translate=(shift, 0) if axis == 0 else (0, shift))


TORCHVISION_OPS: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "AutoContrast": lambda x, m, s: F.autocontrast(x),
    "Equalize": lambda x, m, s: F.equalize(x),
    "Invert": lambda x, m, s: F.invert(x),
    "Rotate": lambda x, m, s: _plain_affine(x, angle=_signed(m / _MAX * 30.0, s)),
    "PosterizeIncreasing": lambda x, m, s: F.posterize(x, max(0, 4 - int(m / _MAX * 4))),
    "SolarizeIncreasing": lambda x, m, s: _solarize(x, 256 - int(m / _MAX * 256)),
    "SolarizeAdd": lambda x, m, s: _solarize_add(x, int(m / _MAX * 110)),
    "ColorIncreasing": lambda x, m, s: F.adjust_saturation(x, _enhance(m, s)),
    "ContrastIncreasing": lambda x, m, s: F.adjust_contrast(x, _enhance(m, s)),
    "BrightnessIncreasing": lambda x, m, s: F.adjust_brightness(x, _enhance(m, s)),
    "SharpnessIncreasing": lambda x, m, s: F.adjust_sharpness(x, _enhance(m, s)),
    "ShearX": lambda x, m, s: _shear(x, m, s, 0, affine=_plain_affine),
    "ShearY": lambda x, m, s: _shear(x, m, s, 1, affine=_plain_affine),
    "TranslateXRel": lambda x, m, s: _plain_translate(x, m, s, 0),
    "TranslateYRel": lambda x, m, s: _plain_translate(x, m, s, 1),
}
"""The same ops applied plainly with torchvision's functions, one call each on the whole clip (no shortcut; the same
magnitude arithmetic as `RANDAUGMENT_OPS`, so the two differ only in how each op is carried out): the reference
`RANDAUGMENT_OPS` is tested against value for value, and the peer of `benchmarks/randaugment.py`."""


@dataclass(frozen=True)
class RandAugment:
    """RandAugment for clips; build with [`parse_randaugment`][tubemask.data.randaugment.parse_randaugment].

    Attributes:
        magnitude: Mean magnitude in [0, 10].
        num_ops: Ops drawn (with replacement) per clip.
        magnitude_std: Std of the Gaussian noise added to the magnitude per op (0 = fixed).
        prob: Probability that a drawn op is applied.
        ops: Names of the ops to draw from (keys of `RANDAUGMENT_OPS`).
    """

    magnitude: float = 9.0
    num_ops: int = 2
    magnitude_std: float = 0.5
    prob: float = 0.5
    ops: tuple[str, ...] = tuple(RANDAUGMENT_OPS)

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in RANDAUGMENT_OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment ops {unknown}; allowed: {sorted(RANDAUGMENT_OPS)}")

    @typechecked
    def __call__(
        self, frames: UInt8[Tensor, "t c h w"], *, generator: torch.Generator | None = None
    ) -> UInt8[Tensor, "t c h w"]:
        """Apply `num_ops` random ops to all frames with one set of parameters.

        Args:
            frames: uint8 `[t c h w]` frames.
            generator: Randomness for op choice, application, magnitude and sign.

        Returns:
            Augmented uint8 `[t c h w]` frames.
        """
        choices = torch.randint(len(self.ops), (self.num_ops,), generator=generator).tolist()
        for choice in choices:
            apply, sign = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            if apply >= self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                gauss = float(torch.randn((), generator=generator, dtype=torch.float64))
                magnitude = magnitude + self.magnitude_std * gauss
            magnitude = min(max(magnitude, 0.0), _MAX)
            frames = RANDAUGMENT_OPS[self.ops[choice]](frames, magnitude, 1.0 if sign < 0.5 else -1.0)
        return frames


def parse_randaugment(spec: str) -> RandAugment:
    """Parse a timm RandAugment spec such as `"rand-m7-n4-mstd0.5-inc1"`.

    Sections after `rand`: `m<float>` magnitude, `n<int>` ops per clip, `mstd<float>` magnitude std,
    `p<float>` op probability, `inc<0|1>` increasing op set (only `inc1` is implemented: the increasing set is the one
    VideoMAE uses). Unknown sections raise.

    Args:
        spec: The spec string.

    Returns:
        The configured [`RandAugment`][tubemask.data.randaugment.RandAugment].

    Raises:
        ValueError: The spec does not start with `rand`, or a section is unknown or malformed.
    """
    parts = spec.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment spec {spec!r} must start with 'rand-' (e.g. 'rand-m7-n4-mstd0.5-inc1')")
    options: dict[str, float] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|inc|m|n|p)(\d+(?:\.\d*)?)", part)
        if match is None:
            raise ValueError(f"RandAugment spec {spec!r}: unknown section {part!r}; allowed: m, n, mstd, p, inc")
        options[match.group(1)] = float(match.group(2))
    if options.get("inc", 1.0) != 1.0:
        raise ValueError(f"RandAugment spec {spec!r}: only the increasing op set (inc1) is implemented")
    return RandAugment(
        magnitude=options.get("m", 9.0),
        num_ops=int(options.get("n", 2)),
        magnitude_std=options.get("mstd", 0.5),
        prob=options.get("p", 0.5),
    )
