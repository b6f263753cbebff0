"""Cube tokenization: `patchify` / `unpatchify` (pure, exact inverses) and the cube embedding.

A cube's `k = tubelet_size * patch_size**2 * c` values are laid out as `(p0 p1 p2 c)`, channel fastest, the layout of
VideoMAE's reconstruction targets and of its decoder head.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn

from tubemask.grid import token_grid
from tubemask.shapes import typechecked

__all__ = ["patchify", "unpatchify", "gather_cubes", "gather_cube_planes", "CubeEmbedding"]


@typechecked
def patchify(video: Float[Tensor, "b c t h w"], *, tubelet_size: int, patch_size: int) -> Float[Tensor, "b n k"]:
    """Cut clips into cubes: `b c (T p0) (H p1) (W p2) -> b (T H W) (p0 p1 p2 c)`.

    Raises:
        ValueError: when t, h or w is not a multiple of its cube side.
    """
    token_grid(*video.shape[2:], tubelet_size=tubelet_size, patch_size=patch_size)
    return rearrange(
        video, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2 c)", p0=tubelet_size, p1=patch_size, p2=patch_size
    )


@typechecked
def unpatchify(
    tokens: Float[Tensor, "b n k"],
    grid: tuple[int, int, int],
    *,
    tubelet_size: int,
    patch_size: int,
    channels: int = 3,
) -> Float[Tensor, "b c t h w"]:
    """Reassemble clips from cubes; the exact inverse of [patchify][tubemask.tokenizers.patchify].

    Raises:
        ValueError: when the token count or cube size disagrees with `grid` and the cube sides.
    """
    t, h, w = grid
    if tokens.shape[1] != t * h * w:
        raise ValueError(f"unpatchify: {tokens.shape[1]} tokens do not fill grid {grid} ({t * h * w} tokens)")
    k = tubelet_size * patch_size * patch_size * channels
    if tokens.shape[2] != k:
        raise ValueError(f"unpatchify: cubes hold {tokens.shape[2]} values, expected {k} for the given sizes")
    return rearrange(
        tokens,
        "b (t h w) (p0 p1 p2 c) -> b c (t p0) (h p1) (w p2)",
        t=t,
        h=h,
        w=w,
        p0=tubelet_size,
        p1=patch_size,
        p2=patch_size,
        c=channels,
    )


def _index_cubes(video: Tensor, ids: Tensor, tubelet_size: int, patch_size: int, *, channels_last: bool) -> Tensor:
    """The cubes at `ids` of a `b c t h w` clip as `[b v p0 p1 p2 c]` (`channels_last`) or `[b v c p0 p1 p2]`: the clip
    is viewed per cube without copying and only the `v` cubes are indexed (copied)."""
    b, c, _, _, _ = video.shape
    t, h, w = token_grid(*video.shape[2:], tubelet_size=tubelet_size, patch_size=patch_size)
    cube_dims = (3, 5, 7, 1) if channels_last else (1, 3, 5, 7)
    view = video.reshape(b, c, t, tubelet_size, h, patch_size, w, patch_size).permute(0, 2, 4, 6, *cube_dims)
    ti = torch.div(ids, h * w, rounding_mode="floor")
    hi = torch.div(ids, w, rounding_mode="floor") % h
    wi = ids % w
    rows = torch.arange(b, device=ids.device)[:, None]
    return view[rows, ti, hi, wi]


@typechecked
def gather_cubes(
    video: Float[Tensor, "b c t h w"], ids: Int[Tensor, "b v"], *, tubelet_size: int, patch_size: int
) -> Float[Tensor, "b v k"]:
    """The cubes at flat raster indices `ids`, as `patchify(video)[i, ids[i]]`, without copying the other cubes.

    The clip is viewed as `b T H W p0 p1 p2 c` (no copy) and indexed, so the cost is proportional to `v`.
    """
    return _index_cubes(video, ids, tubelet_size, patch_size, channels_last=True).flatten(2)


@typechecked
def gather_cube_planes(
    video: Float[Tensor, "b c t h w"], ids: Int[Tensor, "b v"], *, tubelet_size: int, patch_size: int
) -> Float[Tensor, "b v c q"]:
    """The cubes at `ids` channel-major: `[b v c q]` with `q = tubelet_size * patch_size**2` pixels `(p0 p1 p2)`.

    The same values as [gather_cubes][tubemask.tokenizers.gather_cubes], one plane per channel. It copies runs of
    `patch_size` contiguous pixels instead of interleaving the channels, so it is the cheaper gather when the consumer
    works per channel (the norm-pix target).
    """
    return _index_cubes(video, ids, tubelet_size, patch_size, channels_last=False).flatten(3)


class CubeEmbedding(nn.Module):
    """Linear embedding of `tubelet_size x patch_size x patch_size` cubes: a Conv3d with kernel = stride.

    Called with `ids`, it embeds only those cubes (the visible ones during pretraining): the same numbers as the full
    Conv3d at those positions, at `v / n` of its cost. The parameter is stored as a Conv3d (`proj`), the layout of
    VideoMAE checkpoints.

    Args:
        embed_dim: token width `d`.
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.
        in_channels: colour channels of the clip.
    """

    def __init__(self, embed_dim: int, *, tubelet_size: int = 2, patch_size: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=kernel, stride=kernel)

    def grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid `(T, H, W)` of a clip batch of shape `b c t h w`."""
        return token_grid(*video_shape[-3:], tubelet_size=self.tubelet_size, patch_size=self.patch_size)

    def flat_weight(self) -> Float[Tensor, "d k"]:
        """The Conv3d kernel as a matrix over `(p0 p1 p2 c)` cube values."""
        return rearrange(self.proj.weight, "d c p0 p1 p2 -> d (p0 p1 p2 c)")

    @typechecked
    def forward(
        self, video: Float[Tensor, "b c t h w"], ids: Int[Tensor, "b v"] | None = None
    ) -> Float[Tensor, "b v d"]:
        """Embed all cubes in raster order (`ids=None`) or only the cubes at `ids`."""
        if video.shape[1] != self.in_channels:
            raise ValueError(
                f"CubeEmbedding expects {self.in_channels} channels, got video of shape {tuple(video.shape)}"
            )
        if ids is None:
            return self.proj(video).flatten(2).transpose(1, 2)
        cubes = gather_cubes(video, ids, tubelet_size=self.tubelet_size, patch_size=self.patch_size)
        return F.linear(cubes, self.flat_weight(), self.proj.bias)
