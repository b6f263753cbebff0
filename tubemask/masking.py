"""Mask samplers: tube, frame, random and running-cell masking, and the call a training loop makes to draw a mask.

Every masker is built as `X(mask_ratio=r)` and called as
`masker(batch_size, (t, h, w), *, generator=None, device=None) -> Bool[Tensor, "b n"]` with `n = t*h*w` in raster
`(t, h, w)` order and **True = masked** (hidden from the encoder). Every row masks the same number of tokens,
`masker.num_masked(grid)`, so the visible tokens of a batch stack into one `[b v d]` tensor. Randomness comes only from
the `generator`: the same generator state gives the same mask.

A content-aware masker sets `needs_video = True` and takes one more keyword, `video: Float[b c t h w]` (the normalised
clip); [draw_mask][tubemask.masking.draw_mask] passes the clip only to such a masker and checks the mask it returns.

Counts follow VideoMAE: `int(mask_ratio * cells)` with `cells` the number of units the masker chooses among.

| masker | unit chosen | masked tokens | reference |
|---|---|---|---|
| [TubeMasker][tubemask.masking.TubeMasker] | spatial cell, same in every time slot | `int(r*h*w) * t` | VideoMAE V1 |
| [FrameMasker][tubemask.masking.FrameMasker] | whole time slot | `int(r*t) * h*w` | (no public code) |
| [RandomMasker][tubemask.masking.RandomMasker] | any token | `int(r*t*h*w)` | mae_st |
| [RunningCellMasker][tubemask.masking.RunningCellMasker] | `k = int(4r)` of each 2x2 cell, moving | `k*h*w/4 * t` | VideoMAE V2 |
"""

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = [
    "Masker",
    "TubeMasker",
    "FrameMasker",
    "RandomMasker",
    "RunningCellMasker",
    "draw_mask",
    "check_mask_ratio",
    "check_grid",
    "choose_k",
    "masked_units",
    "running_cell_patterns",
]


@runtime_checkable
class Masker(Protocol):
    """Anything that samples a `Bool[b n]` mask (True = masked) for a token grid, the same count in every row.

    A masker that reads the clip sets `needs_video = True` and its `__call__` takes one more keyword argument,
    `video: Float[Tensor, "b c t h w"] | None = None` (the normalised clip whose tokens are masked); it must still
    return a valid mask when `video` is None. [draw_mask][tubemask.masking.draw_mask] passes the clip only to a
    masker that asks for it, so a masker with `needs_video = False` never sees the keyword.
    """

    mask_ratio: float
    needs_video: bool

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Masked tokens per row for `grid`."""
        ...

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor: ...


def check_mask_ratio(mask_ratio: float, *, name: str = "mask_ratio") -> float:
    """Validate a mask ratio: a real number in `[0, 1)`.

    Raises:
        ValueError: for NaN, infinities, or values outside `[0, 1)`.
    """
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1), got {mask_ratio!r}")
    ratio = float(mask_ratio)
    if math.isnan(ratio) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (the share of tokens hidden), got {mask_ratio!r}")
    return ratio


def check_grid(grid: tuple[int, int, int], batch_size: int) -> tuple[int, int, int]:
    """Validate a token grid `(t, h, w)` and a batch size.

    Raises:
        ValueError: for an empty grid, a grid that is not three positive ints, or a negative batch size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    if len(grid) != 3 or any(isinstance(g, bool) or not isinstance(g, int) for g in grid):
        raise ValueError(f"grid must be a tuple of three ints (t, h, w), got {grid!r}")
    if any(g <= 0 for g in grid):
        raise ValueError(f"grid (t, h, w) must have every side >= 1 (an empty grid has no token to mask), got {grid!r}")
    return grid


def masked_units(mask_ratio: float, cells: int, what: str) -> int:
    """`int(mask_ratio * cells)`: the masked units (tokens, spatial cells or time slots, named by `what` in the error)
    of a ratio masker; a ValueError when no unit would stay visible."""
    count = int(mask_ratio * cells)
    if count >= cells:
        raise ValueError(
            f"mask_ratio={mask_ratio!r} masks {count} of {cells} {what}, leaving no visible token; use a smaller ratio"
        )
    return count


def choose_k(
    batch_size: int,
    cells: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Bool[Tensor, "b cells"]:
    """`Bool[batch_size, cells]` with exactly `k` True per row, every k-subset equally likely (mae_st's noise sort).

    Each row gets uniform noise; the `k` cells with the smallest noise are chosen. The noise is float64 (53 random
    bits), so two cells of a row tie with probability below 1e-9 even for 1568 cells; apart from ties, which cells
    sort first is a uniformly random permutation. The noise is drawn on the generator's device (on `device` without a
    generator) and the result moved to `device`, so the same generator state gives the same mask whatever `device` is.
    """
    source = generator.device if generator is not None else device
    noise = torch.rand((batch_size, cells), dtype=torch.float64, generator=generator, device=source)
    first_k = noise.argsort(dim=1)[:, :k]  # [b, k]: the cells with the k smallest noise values
    chosen = torch.zeros((batch_size, cells), dtype=torch.bool, device=noise.device).scatter_(1, first_k, True)
    return chosen.to(device) if device is not None else chosen


@typechecked
def draw_mask(
    masker: Masker,
    batch_size: int,
    grid: tuple[int, int, int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    video: Float[Tensor, "b c t h w"] | None = None,
) -> Bool[Tensor, "b n"]:
    """Draw a `Bool[batch_size, t*h*w]` mask from `masker` (True = masked) and check it: the training loop's call.

    `video` goes to the masker only when `masker.needs_video` is True; any other masker is called without it, so a
    loop may always pass its clip. The result is checked to be a bool tensor of shape `[batch_size, t*h*w]` that masks
    `masker.num_masked(grid)` tokens in every row. The count check reads one flag back to the host per call, not one
    per row: no device sync for a mask on the CPU (the built-in maskers with a CPU generator), one for a mask on a GPU.

    Args:
        masker: the masker to draw from.
        batch_size: rows of the mask; the batch size of `video` when it is given.
        grid: token grid `(t, h, w)` (`model.grid(video.shape)`).
        generator: the only source of randomness.
        device: where the mask is returned (default: where the masker draws it).
        video: the normalised clips `[b c t h w]` whose tokens are masked; read only by a content-aware masker.

    Raises:
        ValueError: when `video` holds another number of clips than `batch_size`, or the masker returns a mask of the
            wrong type, shape or per-row count.
    """
    name = type(masker).__name__
    if masker.needs_video:
        if video is not None and video.shape[0] != batch_size:
            raise ValueError(
                f"video holds {video.shape[0]} clips but batch_size is {batch_size}; pass one clip per row"
            )
        mask = masker(batch_size, grid, generator=generator, device=device, video=video)
    else:
        mask = masker(batch_size, grid, generator=generator, device=device)
    n, expected = math.prod(grid), masker.num_masked(grid)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (batch_size, n):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"{name} must return a torch.bool mask of shape ({batch_size}, {n}) for grid {grid}, got {got}"
        )
    counts = mask.sum(dim=1)
    if bool((counts != expected).any()):  # the one host read of the call
        raise ValueError(
            f"{name} must mask {name}.num_masked({grid}) = {expected} tokens in every row; "
            f"got per-row counts {counts.tolist()[:8]}"
        )
    return mask


@dataclass(frozen=True)
class _RatioMasker:
    mask_ratio: float = 0.9
    needs_video: ClassVar[bool] = False  # the built-in maskers never read the clip

    def __post_init__(self) -> None:
        check_mask_ratio(self.mask_ratio)


@dataclass(frozen=True)
class TubeMasker(_RatioMasker):
    """Tube masking (VideoMAE V1): mask `int(r * h*w)` cells of one frame-grid, the same cells in every time slot.

    Tong et al., "VideoMAE", arXiv 2203.12602, Sec. 3.3. Ratio 0.9 on an 8x14x14 grid masks 176 of 196 cells per
    slot, 1408 of 1568 tokens.

    Args:
        mask_ratio: share of spatial cells hidden, in `[0, 1)`.
    """

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Masked tokens per row for `grid`."""
        t, h, w = check_grid(grid, 0)
        return masked_units(self.mask_ratio, h * w, "spatial cells") * t

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Sample a `Bool[batch_size, t*h*w]` mask, True = masked."""
        t, h, w = check_grid(grid, batch_size)
        k = masked_units(self.mask_ratio, h * w, "spatial cells")
        cells = choose_k(batch_size, h * w, k, generator=generator, device=device)  # [b, h*w]
        return cells[:, None, :].expand(batch_size, t, h * w).reshape(batch_size, t * h * w)


@dataclass(frozen=True)
class FrameMasker(_RatioMasker):
    """Frame masking: hide `int(r * t)` whole time slots; the rest are fully visible.

    Args:
        mask_ratio: share of time slots hidden, in `[0, 1)`.
    """

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Masked tokens per row for `grid`."""
        t, h, w = check_grid(grid, 0)
        return masked_units(self.mask_ratio, t, "time slots") * h * w

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Sample a `Bool[batch_size, t*h*w]` mask, True = masked."""
        t, h, w = check_grid(grid, batch_size)
        k = masked_units(self.mask_ratio, t, "time slots")
        slots = choose_k(batch_size, t, k, generator=generator, device=device)  # [b, t]
        return slots[:, :, None].expand(batch_size, t, h * w).reshape(batch_size, t * h * w)


@dataclass(frozen=True)
class RandomMasker(_RatioMasker):
    """Random token masking (mae_st, Feichtenhofer et al. 2022): `int(r * t*h*w)` tokens anywhere.

    Args:
        mask_ratio: share of all tokens hidden, in `[0, 1)`.
    """

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Masked tokens per row for `grid`."""
        t, h, w = check_grid(grid, 0)
        return masked_units(self.mask_ratio, t * h * w, "tokens")

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Sample a `Bool[batch_size, t*h*w]` mask, True = masked."""
        t, h, w = check_grid(grid, batch_size)
        k = masked_units(self.mask_ratio, t * h * w, "tokens")
        return choose_k(batch_size, t * h * w, k, generator=generator, device=device)


def running_cell_patterns(mask_ratio: float, grid: tuple[int, int, int]) -> Tensor:
    """The four running-cell masks of VideoMAE V2 for `grid`, `Bool[4, t*h*w]`, True = masked.

    A 2x2 cell holds `k = int(4 * mask_ratio)` masked positions in a queue; positions are numbered
    `(0,0), (0,1), (1,0), (1,1)`. For start pointer `s` and time slot `i`, position `j` is masked when
    `(j + s + i + 1) mod 4 < k` (V2 advances the pointer before the first slot). The cell is tiled over `h x w`.
    """
    t, h, w = grid
    k = int(4 * mask_ratio)
    s = torch.arange(4)[:, None, None]
    i = torch.arange(t)[None, :, None]
    j = torch.arange(4)[None, None, :]
    cell = ((j + s + i + 1) % 4) < k  # [4 starts, t, 4 positions]
    cell = cell.reshape(4, t, 2, 2)
    tiled = cell.repeat(1, 1, h // 2, w // 2)  # [4, t, h, w]
    return tiled.reshape(4, t * h * w)


@dataclass(frozen=True)
class RunningCellMasker(_RatioMasker):
    """Running-cell masking (VideoMAE V2, Wang et al. 2023): `k = int(4r)` of every 2x2 cell, moving over time.

    The cell's pointer advances one position per time slot, so each spatial position is hidden in some slots and seen
    in others; one of the four start pointers is drawn per clip. V2 uses it to choose which masked tokens the decoder
    reconstructs (dual masking, ratio 0.5). Needs even `h` and `w`.

    Args:
        mask_ratio: share of each 2x2 cell hidden, in `[0, 1)`; `int(4 * mask_ratio)` positions.
    """

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Masked tokens per row for `grid`."""
        t, h, w = self._check(grid, 0)
        return int(4 * self.mask_ratio) * (h // 2) * (w // 2) * t

    def _check(self, grid: tuple[int, int, int], batch_size: int) -> tuple[int, int, int]:
        t, h, w = check_grid(grid, batch_size)
        if h % 2 or w % 2:
            raise ValueError(f"RunningCellMasker needs even h and w (2x2 cells tile the grid), got grid {grid!r}")
        return t, h, w

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Sample a `Bool[batch_size, t*h*w]` mask, True = masked."""
        grid = self._check(grid, batch_size)
        patterns = running_cell_patterns(self.mask_ratio, grid)
        if generator is not None:
            start = torch.randint(4, (batch_size,), generator=generator, device=generator.device)
        else:
            start = torch.randint(4, (batch_size,), device=device)
        target = device if device is not None else start.device
        return patterns.to(target)[start.to(target)]
