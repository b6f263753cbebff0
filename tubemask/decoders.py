"""The MAE decoder: visible tokens plus mask tokens in, predictions for the requested cubes out."""

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tubemask.layers import Block
from tubemask.pos_embed import SinusoidPositionEmbedding
from tubemask.shapes import typechecked

__all__ = ["MAEDecoder"]


class MAEDecoder(nn.Module):
    """Lightweight transformer decoder of VideoMAE.

    The input is `[visible tokens + their positions, mask token + positions of the cubes to reconstruct]`; after the
    blocks, the last `m` outputs go through a LayerNorm and a linear head to `k` cube values. The decoder is
    permutation-equivariant, so the order of the query ids is the order of the predictions.

    Args:
        embed_dim: decoder width.
        depth: number of blocks (VideoMAE: 4).
        num_heads: attention heads.
        out_dim: values per cube `k` (the head's output).
        mlp_ratio: MLP inner width over `embed_dim`.
        qkv_bias: learn `q_bias` / `v_bias` in attention.
        norm_eps: LayerNorm epsilon inside the blocks.
        final_norm_eps: epsilon of the norm before the head (official: 1e-6; HF uses LayerNorm's default 1e-5).
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        pos_embed: position embedding module called as `pos_embed(ids, grid, like)`; default VideoMAE's sinusoid.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        depth: int,
        num_heads: int,
        out_dim: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        final_norm_eps: float = 1e-6,
        drop_path_rate: float = 0.0,
        pos_embed: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.out_dim = out_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = pos_embed if pos_embed is not None else SinusoidPositionEmbedding(embed_dim)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(
                embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=r, norm_eps=norm_eps
            )
            for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=final_norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them (training only); drop path
        replays its RNG state, so gradients are unchanged."""
        self.grad_checkpointing = enable

    @typechecked
    def forward(
        self,
        visible: Float[Tensor, "b v d"],
        visible_ids: Int[Tensor, "b v"],
        query_ids: Int[Tensor, "b m"],
        grid: tuple[int, int, int],
    ) -> Float[Tensor, "b m k"]:
        """Predict the cubes at `query_ids`.

        Args:
            visible: encoder outputs already projected to the decoder width.
            visible_ids: flat raster indices of the visible tokens.
            query_ids: flat raster indices of the cubes to reconstruct.
            grid: the token grid `(t, h, w)`.

        Returns:
            Predictions `[b m k]`, in the order of `query_ids`.
        """
        b, m = query_ids.shape
        queries = self.mask_token.to(visible.dtype).expand(b, m, -1) + self.pos_embed(query_ids, grid, visible)
        x = torch.cat([visible + self.pos_embed(visible_ids, grid, visible), queries], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.norm(x[:, x.shape[1] - m :]))
