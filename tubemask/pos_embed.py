"""Position embeddings: VideoMAE's flat sinusoid table (also resized from a reference grid), a 3-D separable sin-cos
table, and learned ones.

Each is a module called with flat raster token indices `ids: Int[b v]` (and the grid) that returns `Float[b v d]`
to add to the tokens at those places. The fixed tables are buffers computed on demand, never in the state_dict.
"""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from tubemask.shapes import typechecked

__all__ = [
    "sinusoid_table",
    "sincos_3d_table",
    "SinusoidPositionEmbedding",
    "ResizedSinusoidPositionEmbedding",
    "SinCos3DPositionEmbedding",
    "LearnedPositionEmbedding",
]


def sinusoid_table(num_positions: int, dim: int) -> Float[Tensor, "n d"]:
    """VideoMAE's fixed table over the flat token index, computed in float64 then cast to float32.

    `PE[pos, j] = sin(pos / 10000**(2*(j//2)/dim))` for even `j`, `cos(...)` for odd `j`.
    """
    if num_positions <= 0 or dim <= 0:
        raise ValueError(f"sinusoid_table needs positive sizes, got num_positions={num_positions}, dim={dim}")
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(
        torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / dim
    )
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)


def _sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """MAE-style 1-D sin-cos: first half sin, second half cos, over `dim // 2` frequencies."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_3d_table(grid: tuple[int, int, int], dim: int) -> Float[Tensor, "n d"]:
    """Separable sin-cos table over `(t, h, w)`: the width splits into a temporal part and two equal spatial parts.

    `dim` must be divisible by 4 after reserving the temporal share; the split is `dim_t = dim // 4` rounded to even and
    `dim_s = (dim - dim_t) // 2` each for h and w (as mae_st's separable embedding, fixed instead of learned).
    """
    t, h, w = grid
    dim_t = (dim // 4) // 2 * 2
    dim_s = (dim - dim_t) // 2
    if dim_s % 2 or dim_t <= 0 or 2 * dim_s + dim_t != dim:
        raise ValueError(f"sincos_3d_table: dim={dim} cannot split into even temporal and two equal even spatial parts")
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.cat(
        [_sincos_1d(tt.flatten(), dim_t), _sincos_1d(hh.flatten(), dim_s), _sincos_1d(ww.flatten(), dim_s)], dim=1
    )
    return table.to(torch.float32)


class _FixedTable(nn.Module):
    """A fixed table cached per (grid, device, dtype); nothing in the state_dict."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self._cache: dict[tuple, Tensor] = {}

    def table(self, grid: tuple[int, int, int]) -> Tensor:
        raise NotImplementedError

    def _cached(self, grid: tuple[int, int, int], like: Tensor) -> Tensor:
        key = (tuple(grid), like.device, like.dtype)
        tab = self._cache.get(key)
        if tab is None:
            tab = self.table(grid).to(device=like.device, dtype=like.dtype)
            self._cache = {key: tab}  # keep one: shapes rarely change within a run
        return tab

    @typechecked
    def forward(
        self, ids: Int[Tensor, "b v"], grid: tuple[int, int, int], like: Tensor | None = None
    ) -> Float[Tensor, "b v d"]:
        """Embeddings of the tokens at flat indices `ids` of `grid`, in the dtype/device of `like` (default float32)."""
        ref = like if like is not None else torch.empty(0, device=ids.device)
        return self._cached(grid, ref)[ids]

    def full(self, grid: tuple[int, int, int], like: Tensor | None = None) -> Float[Tensor, "n d"]:
        """The whole table for `grid`, `[t*h*w, d]`."""
        ref = like if like is not None else torch.empty(0)
        return self._cached(grid, ref)


class SinusoidPositionEmbedding(_FixedTable):
    """VideoMAE's fixed 1-D sinusoid over the flat raster index (see [sinusoid_table][tubemask.pos_embed.sinusoid_table]).

    Args:
        dim: token width.
    """

    def table(self, grid: tuple[int, int, int]) -> Tensor:
        return sinusoid_table(math.prod(grid), self.dim)


class SinCos3DPositionEmbedding(_FixedTable):
    """Fixed separable 3-D sin-cos embedding (see [sincos_3d_table][tubemask.pos_embed.sincos_3d_table]).

    Args:
        dim: token width.
    """

    def table(self, grid: tuple[int, int, int]) -> Tensor:
        return sincos_3d_table(grid, self.dim)


class ResizedSinusoidPositionEmbedding(_FixedTable):
    """VideoMAE's fixed sinusoid for a reference grid, resized to the grid of each clip.

    On `base_grid` (the grid the encoder was pretrained or trained on) it is exactly
    [SinusoidPositionEmbedding][tubemask.pos_embed.SinusoidPositionEmbedding]. On another `(h, w)` the table of
    `base_grid` is laid out as `[t, d, h, w]` and each time step's plane is resized bicubically (as VideoMAE's AVA code
    does for its full-frame test clips), so a token keeps roughly the position it had at the base size. The flat
    sinusoid evaluated on the new grid instead would give each token the code of a different place (the flat index of
    `(t, h, w)` depends on the grid's width).

    Args:
        dim: token width.
        base_grid: the reference grid `(t, h, w)`; clips must have its `t`.
    """

    def __init__(self, dim: int, base_grid: tuple[int, int, int]) -> None:
        super().__init__(dim)
        if len(base_grid) != 3 or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in base_grid):
            raise ValueError(f"ResizedSinusoidPositionEmbedding: base_grid must be 3 positive ints, got {base_grid!r}")
        self.base_grid = tuple(base_grid)

    def table(self, grid: tuple[int, int, int]) -> Tensor:
        t, h, w = self.base_grid
        if tuple(grid) == self.base_grid:
            return sinusoid_table(t * h * w, self.dim)
        if grid[0] != t:
            raise ValueError(
                f"ResizedSinusoidPositionEmbedding: clips with {grid[0]} time steps, the table is for {t} "
                f"(base grid {self.base_grid}); only the spatial size may differ"
            )
        planes = sinusoid_table(t * h * w, self.dim).reshape(t, h, w, self.dim).permute(0, 3, 1, 2)  # [t d h w]
        resized = F.interpolate(planes.double(), size=tuple(grid[1:]), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(-1, self.dim).to(torch.float32)


class LearnedPositionEmbedding(nn.Module):
    """A learned table for a fixed grid, initialised from VideoMAE's sinusoid (or truncated normal, std 0.02).

    Args:
        dim: token width.
        grid: the token grid `(t, h, w)` the table covers.
        init: `"sinusoid"` or `"trunc_normal"`.
    """

    def __init__(self, dim: int, grid: tuple[int, int, int], *, init: str = "sinusoid") -> None:
        super().__init__()
        self.dim = dim
        self.grid = tuple(grid)
        n = math.prod(grid)
        if init == "sinusoid":
            weight = sinusoid_table(n, dim)
        elif init == "trunc_normal":
            weight = nn.init.trunc_normal_(torch.empty(n, dim), std=0.02)
        else:
            raise ValueError(f"LearnedPositionEmbedding init must be 'sinusoid' or 'trunc_normal', got {init!r}")
        self.weight = nn.Parameter(weight)

    @typechecked
    def forward(
        self, ids: Int[Tensor, "b v"], grid: tuple[int, int, int], like: Tensor | None = None
    ) -> Float[Tensor, "b v d"]:
        """Embeddings of the tokens at flat indices `ids`; `grid` must equal the grid the table was built for."""
        if tuple(grid) != self.grid:
            raise ValueError(f"LearnedPositionEmbedding covers grid {self.grid}, got clips with grid {tuple(grid)}")
        table = self.weight if like is None else self.weight.to(like.dtype)
        return table[ids]
