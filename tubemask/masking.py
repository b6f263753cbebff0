"""Mask samplers: tube, frame, random and running-cell masking.

Every masker is built as `X(mask_ratio=r)` and called as
`masker(batch_size, (t, h, w), *, generator=None, device=None) -> Bool[Tensor, "b n"]` with `n = t*h*w` in raster
`(t, h, w)` order and **True = masked** (hidden from the encoder). Every row masks the same number of tokens, so the
visible tokens of a batch stack into one `[b v d]` tensor. Sampling is vectorised on the target device (no Python
loop over the batch) and reproducible from the `generator`.

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
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Masker",
    "TubeMasker",
    "FrameMasker",
    "RandomMasker",
    "RunningCellMasker",
    "check_mask_ratio",
    "check_grid",
    "choose_k",
    "running_cell_patterns",
]


@runtime_checkable
class Masker(Protocol):
    """Anything that samples a `Bool[b n]` mask (True = masked) for a token grid."""

    mask_ratio: float

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


def _masked_units(mask_ratio: float, cells: int, what: str) -> int:
    count = int(mask_ratio * cells)
    if count >= cells:
        raise ValueError(
            f"mask_ratio={mask_ratio!r} masks {count} of {cells} {what}, leaving no visible token; use a smaller ratio"
        )
    return count


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """Uniform noise drawn from `generator` (on the generator's device), returned on `device`."""
    if generator is not None:
        noise = torch.rand(shape, generator=generator, device=generator.device)
        return noise.to(device) if device is not None else noise
    return torch.rand(shape, device=device)


def choose_k(
    batch_size: int,
    cells: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean `[batch_size, cells]` with exactly `k` True per row, uniformly at random without replacement.

    The `k` cells with the smallest uniform noise are chosen (the MAE trick), with one `topk` over the smaller side
    (the chosen or the unchosen cells) instead of a full sort, and no Python loop over rows.
    """
    noise = _noise((batch_size, cells), generator, device)
    if 2 * k <= cells:
        chosen = torch.topk(noise, k, dim=1, largest=False, sorted=False).indices
        return torch.zeros_like(noise, dtype=torch.bool).scatter_(1, chosen, True)
    unchosen = torch.topk(noise, cells - k, dim=1, largest=True, sorted=False).indices
    return torch.ones_like(noise, dtype=torch.bool).scatter_(1, unchosen, False)


@dataclass(frozen=True)
class _RatioMasker:
    mask_ratio: float = 0.9

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
        return _masked_units(self.mask_ratio, h * w, "spatial cells") * t

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
        k = _masked_units(self.mask_ratio, h * w, "spatial cells")
        cells = choose_k(batch_size, h * w, k, generator=generator, device=device)
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
        return _masked_units(self.mask_ratio, t, "time slots") * h * w

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
        k = _masked_units(self.mask_ratio, t, "time slots")
        slots = choose_k(batch_size, t, k, generator=generator, device=device)
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
        return _masked_units(self.mask_ratio, t * h * w, "tokens")

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
        k = _masked_units(self.mask_ratio, t * h * w, "tokens")
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
