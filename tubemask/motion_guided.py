"""Motion-guided masking (after MGMAE, Huang et al., arXiv 2308.10794): hidden cubes that follow the motion.

Tube masking hides the same spatial cells in every time slot. When content moves, what a hidden cell showed at one
time is visible in a neighbouring cell at the next, and the decoder can copy it: the task leaks. MGMAE moves the
mask with the content instead. As in its official code (MCG-NJU/MGMAE):

1. a random set of `h*w - int(mask_ratio * h*w)` visible cells is drawn for the base time slot (the middle one by
   default) and turned into a soft visibility map at pixel resolution, one Gaussian per visible cell
   ([gaussian_visibility][tubemask.motion_guided.gaussian_visibility]);
2. the map is carried slot by slot forwards and backwards from the base along an optical flow, by backward bilinear
   sampling ([warp_map][tubemask.motion_guided.warp_map]), so motion under a cell accumulates; what enters from
   outside the frame takes the base map's value at the same place
   ([carry_visibility][tubemask.motion_guided.carry_visibility]);
3. only then is each slot binarised: the cubes with the highest summed visibility stay visible, a fixed count per
   slot, equal sums ordered by the generator ([top_cells][tubemask.motion_guided.top_cells]).

The flow is a piece: any [TokenFlow][tubemask.motion_guided.TokenFlow] giving, for every cell of slot `k + 1`, the
displacement `(dy, dx)` in cells to where its content was in slot `k` (backward flow on the token grid), and with
`reverse=True` for every cell of slot `k` where its content is in slot `k + 1`.
[BlockMatchingFlow][tubemask.motion_guided.BlockMatchingFlow] estimates it from the pixels, no weights to download;
[ConstantFlow][tubemask.motion_guided.ConstantFlow] is the exact flow of a clip that translates as a whole (an
oracle for tests, fractions of a cell allowed).
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.masking import check_grid, check_mask_ratio, choose_k, masked_units
from tubemask.shapes import typechecked

__all__ = [
    "BlockMatchingFlow",
    "ConstantFlow",
    "MotionGuidedMasker",
    "TokenFlow",
    "carry_visibility",
    "gaussian_visibility",
    "top_cells",
    "warp_map",
]


class TokenFlow(Protocol):
    """Flow on the token grid, `[b t-1 h w 2]` displacements `(dy, dx)` in cells (fractions allowed).

    `reverse=False`: for each cell of slot `k + 1`, the displacement to its source in slot `k` (backward flow).
    `reverse=True`: for each cell of slot `k`, the displacement to where its content is in slot `k + 1`.
    """

    def __call__(
        self, video: Float[Tensor, "b c t h w"], grid: tuple[int, int, int], *, reverse: bool = False
    ) -> Tensor:
        """`[b t-1 h w 2]` float displacements."""
        ...


@dataclass(frozen=True)
class ConstantFlow:
    """The same displacement everywhere: content moves by `(dy, dx)` cells per time slot (so each cell's source is
    `(-dy, -dx)` away, and its content is `(dy, dx)` away one slot later). The exact flow of a clip that translates
    as a whole; fractions of a cell give sub-cell motion."""

    dy: float = 0.0
    dx: float = 0.0

    def __call__(self, video: Tensor, grid: tuple[int, int, int], *, reverse: bool = False) -> Tensor:
        t, h, w = grid
        sign = 1.0 if reverse else -1.0
        flow = torch.tensor([sign * self.dy, sign * self.dx], dtype=torch.float32, device=video.device)
        return flow.expand(video.shape[0], max(t - 1, 0), h, w, 2)


@dataclass(frozen=True)
class BlockMatchingFlow:
    """Block matching on the first frame of each tubelet: for each cell of one slot, the shift within `search`
    pixels (each direction) whose block of the other slot differs least (sum of absolute grey-level differences;
    among equal costs the smallest shift wins), in cell units: one vector per cell, whole pixels.

    Args:
        search: largest shift in pixels; None: one patch.
    """

    search: int | None = None

    def __call__(self, video: Tensor, grid: tuple[int, int, int], *, reverse: bool = False) -> Tensor:
        b, _, frames, height, width = video.shape
        t, h, w = grid
        grey = video.float().mean(dim=1)[:, :: frames // t]  # [b t H W]: the first frame of each tubelet
        if t < 2:
            return grey.new_zeros(b, 0, h, w, 2)
        earlier, later = grey[:, :-1], grey[:, 1:]
        if reverse:  # cells of slot k, matched in slot k + 1
            earlier, later = later, earlier
        ph, pw = height // h, width // w
        radius = self.search if self.search is not None else max(ph, pw)
        padded = F.pad(earlier.reshape(-1, 1, height, width), (radius,) * 4, mode="replicate")
        padded = padded.view(b, t - 1, height + 2 * radius, width + 2 * radius)
        best_cost = torch.full((b, t - 1, h, w), float("inf"), device=video.device)
        best = torch.zeros(b, t - 1, h, w, 2, device=video.device)
        shifts = sorted(
            ((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)),
            key=lambda s: (abs(s[0]) + abs(s[1]), s),
        )  # nearest first: a later shift must cost strictly less to win
        for dy, dx in shifts:
            source = padded[:, :, radius + dy : radius + dy + height, radius + dx : radius + dx + width]
            diff = (later - source).abs().view(b * (t - 1), 1, height, width)
            cost = F.avg_pool2d(diff, (ph, pw)).view(b, t - 1, h, w)
            better = cost < best_cost
            best_cost = torch.where(better, cost, best_cost)
            shift = torch.tensor([dy / ph, dx / pw], device=video.device)
            best = torch.where(better[..., None], shift, best)
        return best


@typechecked
def gaussian_visibility(visible: Bool[Tensor, "b gh gw"], patch: tuple[int, int]) -> Float[Tensor, "b h w"]:
    """MGMAE's soft base map: the maximum over the visible cells of `exp(-(dy/ph)**2 - (dx/pw)**2)`, the distance
    in pixels from the cell's centre, scaled to a maximum of 1.

    Args:
        visible: True = a visible cell of the base slot (at least one per clip).
        patch: `(ph, pw)`, pixels per cell side.

    Returns:
        The map, `h = gh * ph` by `w = gw * pw` pixels, high where the encoder sees the clip.
    """
    (ph, pw), (_, gh, gw) = patch, visible.shape
    ys = torch.arange(gh * ph, device=visible.device, dtype=torch.float32)
    xs = torch.arange(gw * pw, device=visible.device, dtype=torch.float32)
    centre_y = torch.arange(gh, device=visible.device) * ph + (ph - 1) / 2
    centre_x = torch.arange(gw, device=visible.device) * pw + (pw - 1) / 2
    gy = torch.exp(-(((ys[None, :] - centre_y[:, None]) / ph) ** 2))  # [gh h]
    gx = torch.exp(-(((xs[None, :] - centre_x[:, None]) / pw) ** 2))  # [gw w]
    # The Gaussian is separable: max over cells (i, j) of gy[i] * gx[j] = max over j of gx[j] * (max over visible i)
    column = torch.where(visible[..., None], gy[None, :, None, :], 0.0).amax(dim=1)  # [b gw h]
    values = (column[..., :, None] * gx[None, :, None, :]).amax(dim=1)  # [b h w]
    return values / values.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]


@typechecked
def warp_map(
    values: Float[Tensor, "b h w"], flow: Float[Tensor, "b h w 2"], *, fill: Float[Tensor, "b h w"] | None = None
) -> Float[Tensor, "b h w"]:
    """`out[p] = values[p + flow[p]]`, bilinear: a map carried one time slot along a backward flow in pixels.

    Args:
        values: the map at one slot.
        flow: for each pixel of the next slot, the displacement `(dy, dx)` in pixels to its source.
        fill: what a pixel sampled from outside the frame takes, blended by the share of its sample that falls
            outside; None: zero.
    """
    b, h, w = values.shape
    ys = torch.arange(h, device=values.device).view(1, h, 1) + flow[..., 0]
    xs = torch.arange(w, device=values.device).view(1, 1, w) + flow[..., 1]
    grid = torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], dim=-1)  # pixel centres, align_corners=False
    stacked = torch.stack([values, torch.ones_like(values)], dim=1)  # the second channel measures coverage
    out, inside = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False).unbind(1)
    return out if fill is None else out + (1 - inside) * fill


@typechecked
def carry_visibility(
    base: Float[Tensor, "b h w"],
    backward: Float[Tensor, "b s h w 2"],
    forward: Float[Tensor, "b s h w 2"] | None,
    *,
    base_slot: int,
) -> Float[Tensor, "b t h w"]:
    """The base map carried to every slot: `maps[k + 1] = warp(maps[k], backward[k])` after the base slot,
    `maps[k] = warp(maps[k + 1], forward[k])` before it; what enters from outside the frame takes the base's value.

    Args:
        base: the visibility map of slot `base_slot`.
        backward: per pixel of slot `k + 1`, the displacement in pixels to its source in slot `k`.
        forward: per pixel of slot `k`, the displacement in pixels to its content in slot `k + 1`; only read for
            the slots before the base (None allowed when `base_slot` is 0).
        base_slot: where `base` sits, in `[0, s]`.
    """
    slots = backward.shape[1] + 1
    if not 0 <= base_slot < slots or (base_slot > 0 and forward is None):
        raise ValueError(
            f"carry_visibility: base_slot={base_slot} must be in [0, {slots - 1}], with a forward flow if > 0"
        )
    maps = [base]
    for k in range(base_slot, slots - 1):
        maps.append(warp_map(maps[-1], backward[:, k], fill=base))
    for k in reversed(range(base_slot)):
        maps.insert(0, warp_map(maps[0], forward[:, k], fill=base))
    return torch.stack(maps, dim=1)


def top_cells(scores: Tensor, count: int, noise: Tensor) -> Tensor:
    """`Bool`, the `count` highest `scores` of each row; equal scores are ordered by the random `noise`.

    Args:
        scores: `[r n]` values to rank.
        count: cells chosen per row.
        noise: `[r n]` uniform draws from the generator; only their order among equal scores matters.
    """
    shuffle = noise.argsort(dim=1)  # a random order of the cells, then a stable sort by score keeps it among ties
    ranked = scores.gather(1, shuffle).argsort(dim=1, descending=True, stable=True)[:, :count]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, shuffle.gather(1, ranked), True)


def _cells_to_pixels(flow: Tensor, patch: tuple[int, int]) -> Tensor:
    """A token-grid flow `[b s gh gw 2]` in cells as a per-pixel flow `[b s gh*ph gw*pw 2]` in pixels (each cell's
    vector over all its pixels)."""
    ph, pw = patch
    scale = torch.tensor([ph, pw], dtype=torch.float32, device=flow.device)
    return (flow.float() * scale).repeat_interleave(ph, dim=2).repeat_interleave(pw, dim=3)


@dataclass(frozen=True)
class MotionGuidedMasker:
    """Hide `int(mask_ratio * h*w)` cells per time slot: the visibility of random cells of a base slot, carried
    along the motion (MGMAE, Huang et al., ICCV 2023, arXiv 2308.10794). True = hidden.

    Args:
        mask_ratio: share of each slot's cells hidden, in `[0, 1)`.
        flow: a [TokenFlow][tubemask.motion_guided.TokenFlow] (default: block matching).
        base_slot: where the random draw sits: `"middle"` (slot `t // 2`, MGMAE's default) or `"first"`.
    """

    mask_ratio: float = 0.9
    flow: Any = field(default_factory=BlockMatchingFlow)
    base_slot: Literal["middle", "first"] = "middle"
    needs_video: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_mask_ratio(self.mask_ratio)
        if self.base_slot not in ("middle", "first"):
            raise ValueError(f"MotionGuidedMasker: base_slot={self.base_slot!r} must be 'middle' or 'first'")

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Masked tokens per row for `grid` (the same per slot as tube masking)."""
        t, h, w = check_grid(grid, 0)
        return masked_units(self.mask_ratio, h * w, "spatial cells") * t

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        video: Float[Tensor, "b c t h w"] | None = None,
    ) -> Bool[Tensor, "b n"]:
        """The mask, True = hidden; the base slot hides the generator's draw. Without `video`, tube masking of that
        draw (no motion to follow)."""
        t, h, w = check_grid(grid, batch_size)
        shown = h * w - masked_units(self.mask_ratio, h * w, "spatial cells")
        visible = choose_k(batch_size, h * w, shown, generator=generator, device=device)  # [b h*w], the base slot
        if video is None or t == 1:
            return ~visible[:, None, :].expand(batch_size, t, h * w).reshape(batch_size, t * h * w)
        if video.shape[0] != batch_size:
            raise ValueError(f"video holds {video.shape[0]} clips but batch_size is {batch_size}")
        source = generator.device if generator is not None else visible.device
        noise = torch.rand(batch_size * t, h * w, dtype=torch.float64, generator=generator, device=source)
        patch = (video.shape[3] // h, video.shape[4] // w)
        base_slot = t // 2 if self.base_slot == "middle" else 0
        backward = _cells_to_pixels(self.flow(video, grid), patch)
        forward = _cells_to_pixels(self.flow(video, grid, reverse=True), patch) if base_slot > 0 else None
        base = gaussian_visibility(visible.view(batch_size, h, w).to(video.device), patch)
        maps = carry_visibility(base, backward, forward, base_slot=base_slot)  # [b t H W]
        scores = F.avg_pool2d(maps, patch).view(batch_size * t, h * w)  # visibility summed per cube (scaled)
        kept = top_cells(scores, shown, noise.to(scores.device)).view(batch_size, t * h * w)
        return ~kept.to(visible.device)
