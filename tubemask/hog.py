"""Histograms of oriented gradients as reconstruction targets (after MaskFeat, Wei et al., arXiv 2112.09133).

MaskFeat predicts, for each hidden cube, the HOG descriptor of its pixels instead of the pixels: a target that keeps
local shape and edges but drops the exact intensities (and so the colour and lighting detail a pixel target spends
its capacity on). For video it takes one frame per cube, the first of the tubelet, as MaskFeat's video model does.

The descriptor follows MaskFeat's official code (SlowFast's `HOGLayerC` as its video model builds it: 9 bins, cells
of 8 pixels, no Gaussian). Per RGB channel: Sobel gradients `gx` (left minus right) and `gy` (top minus bottom),
edges replicated by reflection; the unsigned orientation measured from the y axis, `atan2(gx, gy)`, put into
`nbins` equal bins over 180 degrees by `floor(angle / pi * nbins) mod nbins` (hard assignment); each pixel votes its
gradient magnitude `sqrt(gx**2 + gy**2)`, summed over square cells of `cell_size` pixels, and each cell's histogram
is L2-normalised. A cube's target is its `(patch_size / cell_size)**2` cells' histograms for every channel, laid out
`(cell_y cell_x c bin)` (the official code lays them out `(c bin cell_y cell_x)`: a fixed reordering, the same loss).
An optional Gaussian weighting of the votes, tiled per patch, is not in MaskFeat's video code; mmpretrain's image
MaskFeat uses one.

[hog_cells][tubemask.hog.hog_cells] is the pure function on images, [HOGTarget][tubemask.hog.HOGTarget] the piece a
[MAEWrapper][tubemask.mae.MAEWrapper] takes (`videomae_pretrain(..., target=HOGTarget())`); both are checked against
plain NumPy references in the tests, one written from this definition and one re-stating `HOGLayerC`.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.shapes import typechecked
from tubemask.targets import channel_values

__all__ = ["HOGTarget", "hog_cells"]


def _gaussian_window(size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`[size size]` Gaussian with standard deviation `size / 2`, centred on the patch, summing to 1."""
    n = torch.arange(size, dtype=dtype, device=device)
    g = torch.exp(-0.5 * ((n - n.mean()) / (size / 2)) ** 2)
    window = torch.outer(g, g)
    return window / window.sum()


@typechecked
def hog_cells(
    images: Float[Tensor, "b c h w"], *, nbins: int = 9, cell_size: int = 8, window: int | None = None
) -> Float[Tensor, "b c bins hc wc"]:
    """HOG histograms of every cell of `images`, one per channel, L2-normalised per cell (MaskFeat's `HOGLayerC`).

    Args:
        images: `[b c h w]`; `h` and `w` multiples of `cell_size` (and of `window`).
        nbins: orientation bins over 180 degrees (MaskFeat: 9); bin `floor(atan2(gx, gy) / pi * nbins) mod nbins`.
        cell_size: cell side in pixels (MaskFeat: 8).
        window: side of a tiled Gaussian weighting of the votes (standard deviation `window / 2`); None, as in
            MaskFeat's video code: no weighting.

    Returns:
        `[b c nbins h/cell w/cell]`, float32.

    Raises:
        ValueError: for sides that are not multiples of `cell_size` or `window`, `nbins < 1` or `cell_size < 1`.
    """
    b, c, h, w = images.shape
    if nbins < 1 or cell_size < 1:
        raise ValueError(f"hog_cells: nbins={nbins} and cell_size={cell_size}; both must be >= 1")
    for side in (cell_size, window or cell_size):
        if h % side or w % side:
            raise ValueError(f"hog_cells: the image is {h}x{w}; both sides must be multiples of {side}")
    x = images.float()
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")

    def at(dy: int, dx: int) -> Tensor:  # the neighbour at (y + dy, x + dx) of every pixel
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # Sobel with the official kernels' signs, left minus right and top minus bottom (the signs do not change an
    # unsigned bin); written as two sums, so exactly 0 across a mirrored border
    gx = (at(-1, -1) + 2 * at(0, -1) + at(1, -1)) - (at(-1, 1) + 2 * at(0, 1) + at(1, 1))
    gy = (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1)) - (at(1, -1) + 2 * at(1, 0) + at(1, 1))
    magnitude = torch.sqrt(gx * gx + gy * gy)
    if window:
        magnitude = magnitude * _gaussian_window(window, x.dtype, x.device).repeat(h // window, w // window)
    # the angle from the y axis, in (-pi, pi]; floor-mod folds opposite directions into one bin
    bins = torch.floor(torch.atan2(gx, gy) / math.pi * nbins).long() % nbins
    votes = torch.zeros(b, c, nbins, h, w, dtype=x.dtype, device=x.device)
    votes.scatter_(2, bins.unsqueeze(2), magnitude.unsqueeze(2))
    hc, wc = h // cell_size, w // cell_size
    cells = votes.view(b, c, nbins, hc, cell_size, wc, cell_size).sum(dim=(4, 6))  # sums over each cell
    return F.normalize(cells, p=2, dim=2)


@dataclass(frozen=True)
class HOGTarget:
    """MaskFeat's target as a piece: per cube, the HOG histograms of the first frame of its tubelet.

    The defaults are those of MaskFeat's official video model (SlowFast `masked.py`, `HOGLayerC(nbins=9, pool=8)`):
    cells of a fixed 8 pixels whatever the patch, so a cube holds `(patch_size / cell_size)**2` cells and its target
    is `(patch_size / cell_size)**2 * channels * nbins` values wide (RGB, 9 bins: 27 at 8-pixel patches, 108 at 16).

    Args:
        nbins: orientation bins over 180 degrees (MaskFeat: 9).
        cell_size: cell side in pixels (MaskFeat: 8); the patch size must be a multiple of it.
        gaussian: weight the votes with a Gaussian window the size of the patch (standard deviation half the patch).
            Not in MaskFeat's video code (which never passes `HOGLayerC` a `gaussian_window`); mmpretrain's image
            MaskFeat uses one.
    """

    nbins: int = 9
    cell_size: int = 8
    gaussian: bool = False

    def __post_init__(self) -> None:
        if self.nbins < 1 or self.cell_size < 1:
            raise ValueError(f"HOGTarget: nbins={self.nbins} and cell_size={self.cell_size} must be >= 1")

    def width(self, *, tubelet_size: int, patch_size: int, channels: int) -> int:
        """`(patch_size / cell_size)**2 * channels * nbins` values per cube."""
        if patch_size % self.cell_size:
            raise ValueError(
                f"HOGTarget: patch_size={patch_size} is not a multiple of cell_size={self.cell_size}; "
                f"pass a cell_size that divides the patch (MaskFeat: 8)"
            )
        return (patch_size // self.cell_size) ** 2 * channels * self.nbins

    def __call__(
        self,
        video: Float[Tensor, "b c t h w"],
        query_ids: Int[Tensor, "b m"],
        *,
        tubelet_size: int,
        patch_size: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> Float[Tensor, "b m k"]:
        """The HOG targets of the cubes at `query_ids` (raster `(t h w)` order) of the normalised clip."""
        b, c, t, h, w = video.shape
        k = self.width(tubelet_size=tubelet_size, patch_size=patch_size, channels=c)
        with torch.no_grad(), torch.autocast(device_type=video.device.type, enabled=False):
            frames = video[:, :, ::tubelet_size].float()  # the first frame of each tubelet
            if mean is not None and std is not None:
                sd = channel_values(tuple(std), frames.dtype, frames.device).view(1, c, 1, 1, 1)
                mu = channel_values(tuple(mean), frames.dtype, frames.device).view(1, c, 1, 1, 1)
                frames = frames * sd + mu
            slots = frames.shape[2]
            images = frames.transpose(1, 2).reshape(b * slots, c, h, w)
            cells = hog_cells(
                images, nbins=self.nbins, cell_size=self.cell_size, window=patch_size if self.gaussian else None
            )  # [(b t) c bins H W], H = (h / p) * n
            n, s = patch_size // self.cell_size, patch_size
            cubes = cells.view(b, slots, c, self.nbins, h // s, n, w // s, n)
            cubes = cubes.permute(0, 1, 4, 6, 5, 7, 2, 3).reshape(b, slots * (h // s) * (w // s), k)
            return torch.gather(cubes, 1, query_ids.unsqueeze(-1).expand(-1, -1, k))
