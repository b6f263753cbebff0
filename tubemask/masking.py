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

import functools
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
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


@functools.lru_cache(maxsize=256)
def _draws_per_row(cells: int, smaller: int, bits: int) -> int:
    """Raw `bits`-bit draws per row that hold `smaller` distinct values below `cells` in all but ~1e-5 of rows.

    Collecting the `i`-th new value takes a geometric number of draws with success rate `(cells - i) / 2**bits`; the
    total has mean `sum(1/p)` and variance `sum((1-p)/p**2)`. Mean + 6 sd + 6 leaves a row short with probability
    below 1e-5 (7e-6 at worst, 2.4e-8 for 20 of 196 cells; `tests/test_masking.py` computes it exactly). A short row
    is drawn again, so the margin only sets the cost, never the distribution.
    """
    scale = float(1 << bits)
    p = [(cells - i) / scale for i in range(smaller)]
    mean = sum(1.0 / q for q in p)
    var = sum((1.0 - q) / (q * q) for q in p)
    return math.ceil(mean + 6.0 * math.sqrt(var) + 6.0)


def _random_values(
    rows: int, draws: int, bits: int, generator: torch.Generator | None, device: torch.device | None
) -> Tensor:
    """`Long[rows, draws]` of independent uniform integers in `[0, 2**bits)`, cut from 64-bit random words.

    Each value takes the low `bits` bits of one 8-, 16- or 32-bit lane of a word, so a row of `draws` values costs
    `draws / 8` words for up to 256 cells, `draws / 4` up to 65536. The words come from `generator` on its own device.
    """
    lane = torch.uint8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32
    per_word = 8 // lane.itemsize
    words = -(-rows * draws // per_word)
    source = generator.device if generator is not None else device
    raw = torch.empty(words, dtype=torch.int64, device=source).random_(-(2**63), None, generator=generator)
    values = raw.view(lane)[: rows * draws].view(rows, draws).to(device=device, dtype=torch.int64)
    if bits % 8:
        values &= (1 << bits) - 1
    return values


def _filled(rows: int, width: int, value: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`torch.full((rows, width), value, dtype)`, written as int64 words when `width` allows.

    Filling a quarter or an eighth as many elements keeps a batch-256 table under the CPU grain size, so it is filled
    on the calling thread instead of waking the OpenMP pool (which costs more than the fill when other work holds
    the cores).
    """
    lanes = 8 // dtype.itemsize
    if width % lanes:
        return torch.full((rows, width), value, dtype=dtype, device=device)
    return torch.full((rows, width // lanes), _word(value, dtype.itemsize), dtype=torch.int64, device=device).view(
        dtype
    )


@functools.lru_cache(maxsize=64)
def _word(value: int, itemsize: int) -> int:
    """The int64 whose `8 // itemsize` little-endian lanes of `itemsize` bytes all hold `value`."""
    bits = 8 * itemsize
    word = sum((value & ((1 << bits) - 1)) << (bits * i) for i in range(8 // itemsize))
    return word - (1 << 64) if word >= (1 << 63) else word


def _first_distinct(
    values: Tensor, cells: int, smaller: int, mark: int, *, table_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Mark the first `smaller` distinct values below `cells` in each row of `values` (`Long[rows, draws]`).

    Returns `Bool[rows, cells]`, `bool(mark)` on the marked cells and the opposite elsewhere, and `Bool[rows]`, False
    for rows whose draws hold fewer than `smaller` distinct values (their marks are incomplete). `table_dtype` is the
    integer type of the working tables, by default int16 on CPU (half the memory traffic) and int32 elsewhere (the
    widest-supported atomics on GPUs); the result does not depend on it (tests run the GPU choice on CPU).
    """
    rows, draws = values.shape
    device = values.device
    width = 1 << max(3, (cells - 1).bit_length())  # every value is below width; values >= cells are rejected draws
    small = table_dtype or (torch.int16 if draws < 2**15 and device.type == "cpu" else torch.int32)
    order = torch.arange(draws, dtype=small, device=device).expand(rows, draws)
    first = _filled(rows, width, draws, small, device)
    first.scatter_reduce_(1, values, order, "amin")  # first[v]: the draw that brings v first (draws if never)
    if cells < width:
        first[:, cells:] = -1  # a rejected draw never brings a new value
    new = first.gather(1, values) == order  # draw j brings an accepted value for the first time
    seen = new.cumsum(1, dtype=small)  # distinct accepted values among draws 0..j
    keep = (new & (seen <= smaller)).view(torch.int8)  # the first `smaller` new values, each cell at most once
    # marks start at 1 - mark and each kept cell adds 2 * mark - 1 once: a sum, so the order of writes cannot matter
    marks = _filled(rows, width, 1 - mark, torch.int8, device)
    marks.scatter_add_(1, values, keep if mark else -keep)
    return marks[:, :cells].view(torch.bool), seen[:, -1] >= smaller


def choose_k(
    batch_size: int,
    cells: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Boolean `[batch_size, cells]` with exactly `k` True per row, uniformly at random over the k-subsets.

    Draws only as much randomness as the smaller side needs (`s = min(k, cells - k)` cells): each row reads a
    sequence of random integers of `bits = ceil(log2(cells))` bits, skips values `>= cells` and repeats, and takes
    the first `s` distinct values. That is sequential sampling without replacement (each new value is uniform over the
    cells not yet taken), so the `s`-subset, and its complement, are exactly uniform; with VideoMAE's 196 cells and
    `s = 20` a row costs 53 random bytes instead of 196 floats, and no sort. The rare row (below 1e-5) whose draws
    run out before `s` distinct values is drawn again; whether that happens depends only on the waiting times, which
    are independent of which values were drawn, so the redraw leaves the distribution exact. Vectorised over rows, no
    Python loop over the batch; the same `generator` state gives the same mask on every device.

    The returned tensor may be a non-contiguous view (a slice of a wider buffer); callers that need `view` call
    `contiguous()` (`RandomMasker` does).
    """
    device = torch.device(device) if device is not None else (generator.device if generator is not None else None)
    smaller = min(k, cells - k)
    if smaller <= 0 or batch_size == 0:
        return torch.full((batch_size, cells), k > 0, dtype=torch.bool, device=device)
    bits = max(1, (cells - 1).bit_length())
    if bits > 31:
        raise ValueError(f"choose_k supports up to 2**31 cells, got cells={cells}")
    draws = _draws_per_row(cells, smaller, bits)
    mark = int(smaller == k)  # mark the chosen cells True, or the unchosen ones False
    marks, complete = _first_distinct(_random_values(batch_size, draws, bits, generator, device), cells, smaller, mark)
    if not bool(complete.all()):  # below 1e-5 of rows: draw those rows again
        short = (~complete).nonzero().flatten()
        while short.numel():
            values = _random_values(short.numel(), draws, bits, generator, marks.device)
            again, complete = _first_distinct(values, cells, smaller, mark)
            marks[short] = again
            short = short[~complete]
    return marks


def _spread(units: Tensor, shape: tuple[int, int, int], *, via_numpy: bool | None = None) -> Tensor:
    """Copy `units` broadcast to `shape = (b, t, h*w)` into a new `Bool[b, t*h*w]` (the tube or frame layout).

    `units` is `[b, 1, h*w]` (tube: one frame-grid) or `[b, t, 1]` (frame: one flag per slot). On CPU (`via_numpy`
    defaults to whether `units` is on the CPU) the copy runs through NumPy into a torch-owned tensor: torch's copy of
    a batch-256 mask (400 KB) wakes the OpenMP pool, which costs more than the copy itself when the other cores are
    busy (40 us vs up to 4 ms measured on 2 loaded cores). Elsewhere torch copies on the device.
    """
    out = torch.empty((shape[0], shape[1] * shape[2]), dtype=torch.bool, device=units.device)
    if via_numpy is None:
        via_numpy = units.device.type == "cpu"
    if via_numpy:
        np.copyto(out.numpy().reshape(shape), units.numpy())
    else:
        out.view(shape).copy_(units.expand(shape))
    return out


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
        return _spread(cells[:, None, :], (batch_size, t, h * w))


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
        return _spread(slots[:, :, None], (batch_size, t, h * w))


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
        return choose_k(batch_size, t * h * w, k, generator=generator, device=device).contiguous()


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
