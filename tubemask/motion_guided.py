"""Motion-guided masking (after MGMAE, Huang et al., arXiv 2308.10794): hidden cubes that follow the motion.

Tube masking hides the same spatial cells in every time slot. When content moves, what a hidden cell showed at one
time is visible in a neighbouring cell at the next, and the decoder can copy it: the task leaks. MGMAE moves the
mask with the content instead: a random set of cells is hidden in the first time slot, and each later slot hides
the cells its content came from the previous slot's hidden cells, according to an optical flow.

Here the flow is a piece: any callable `flow(video, grid) -> Float[b t-1 h w 2]` giving, for every cell of slot
`k + 1`, the displacement `(dy, dx)` in cells to where its content was in slot `k` (backward flow on the token grid).
[BlockMatchingFlow][tubemask.motion_guided.BlockMatchingFlow] estimates it from the pixels, no weights to download;
[ConstantFlow][tubemask.motion_guided.ConstantFlow] is the exact flow of a clip that translates as a whole (an
oracle for tests). The mask is carried from slot to slot by nearest-cell sampling; the `int(mask_ratio * h*w)` cells with the highest
carried value are hidden (carried hidden cells first, then cells whose content enters from outside the grid, then
the rest), ties filled in an order drawn from the generator, so every slot hides the same count.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.masking import check_grid, check_mask_ratio, choose_k, masked_units
from tubemask.shapes import typechecked

__all__ = ["BlockMatchingFlow", "ConstantFlow", "MotionGuidedMasker", "TokenFlow", "warp_cells"]


class TokenFlow(Protocol):
    """Backward flow on the token grid: for each cell of slot `k + 1`, `(dy, dx)` in cells to its source in slot `k`."""

    def __call__(self, video: Float[Tensor, "b c t h w"], grid: tuple[int, int, int]) -> Tensor:
        """`[b t-1 h w 2]` float displacements."""
        ...


@dataclass(frozen=True)
class ConstantFlow:
    """The same displacement everywhere: content moves by `(dy, dx)` cells per time slot (so each cell's source is
    `(-dy, -dx)` away). The exact flow of a clip that translates as a whole."""

    dy: float = 0.0
    dx: float = 0.0

    def __call__(self, video: Tensor, grid: tuple[int, int, int]) -> Tensor:
        t, h, w = grid
        flow = torch.tensor([-self.dy, -self.dx], dtype=torch.float32, device=video.device)
        return flow.expand(video.shape[0], max(t - 1, 0), h, w, 2)


@dataclass(frozen=True)
class BlockMatchingFlow:
    """Block matching on the first frame of each tubelet: for each cell of slot `k + 1`, the shift within
    `search` pixels (each direction) whose block of slot `k` differs least (sum of absolute grey-level differences;
    among equal costs the smallest shift wins), in cell units.

    Args:
        search: largest shift in pixels; None: one patch.
    """

    search: int | None = None

    def __call__(self, video: Tensor, grid: tuple[int, int, int]) -> Tensor:
        b, _, frames, height, width = video.shape
        t, h, w = grid
        ph, pw, pt = height // h, width // w, frames // t
        radius = self.search if self.search is not None else max(ph, pw)
        grey = video.float().mean(dim=1)[:, ::pt]  # [b t H W]: the first frame of each tubelet
        if t < 2:
            return grey.new_zeros(b, 0, h, w, 2)
        earlier, later = grey[:, :-1], grey[:, 1:]
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
def warp_cells(
    values: Float[Tensor, "b h w"], flow: Float[Tensor, "b h w 2"], *, outside: float | None = None
) -> Float[Tensor, "b h w"]:
    """`out[q] = values[round(q + flow[q])]`: a cell map carried one time slot along a backward flow (nearest cell).

    Args:
        values: the map at slot `k`.
        flow: for each cell of slot `k + 1`, the displacement in cells to its source in slot `k`.
        outside: the value of a cell whose source lies outside the grid; None: the nearest border cell's value.
    """
    b, h, w = values.shape
    ys = (torch.arange(h, device=values.device).view(1, h, 1) + flow[..., 0]).round().long()
    xs = (torch.arange(w, device=values.device).view(1, 1, w) + flow[..., 1]).round().long()
    sy, sx = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
    out = torch.gather(values.reshape(b, h * w), 1, (sy * w + sx).reshape(b, h * w)).view(b, h, w)
    if outside is not None:
        out = torch.where((ys == sy) & (xs == sx), out, torch.full_like(out, outside))
    return out


@dataclass(frozen=True)
class MotionGuidedMasker:
    """Hide `int(mask_ratio * h*w)` cells per time slot, carried along the clip's motion from a random first slot.

    Args:
        mask_ratio: share of each slot's cells hidden, in `[0, 1)`.
        flow: a [TokenFlow][tubemask.motion_guided.TokenFlow] (default: block matching).
    """

    mask_ratio: float = 0.9
    flow: Any = field(default_factory=BlockMatchingFlow)
    needs_video: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_mask_ratio(self.mask_ratio)

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
        """The mask, True = hidden; without `video`, tube masking (no motion to follow)."""
        t, h, w = check_grid(grid, batch_size)
        k = masked_units(self.mask_ratio, h * w, "spatial cells")
        first = choose_k(batch_size, h * w, k, generator=generator, device=device)  # [b h*w]
        if video is None or t == 1:
            return first[:, None, :].expand(batch_size, t, h * w).reshape(batch_size, t * h * w)
        if video.shape[0] != batch_size:
            raise ValueError(f"video holds {video.shape[0]} clips but batch_size is {batch_size}")
        flow = self.flow(video, grid).to(first.device)
        slots = [first]
        source = generator.device if generator is not None else first.device
        for step in range(t - 1):
            previous = slots[-1].view(batch_size, h, w).float()
            carried = warp_cells(previous, flow[:, step], outside=0.5).view(batch_size, h * w)
            noise = torch.rand(batch_size, h * w, dtype=torch.float64, generator=generator, device=source)
            order = (carried.double() + 0.5 * noise.to(first.device)).argsort(dim=1, descending=True)[:, :k]
            slots.append(torch.zeros_like(first).scatter_(1, order, True))
        return torch.stack(slots, dim=1).reshape(batch_size, t * h * w)
