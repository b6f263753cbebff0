"""The VideoMAE ViT encoder: the body that [MAEWrapper][tubemask.mae.MAEWrapper] pretrains and the classifiers
fine-tune."""

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tubemask.layers import Block

__all__ = ["ViTEncoder", "block_indices"]


def block_indices(indices: int | Sequence[int] | None, depth: int) -> list[int]:
    """The blocks that `forward_intermediates(x, indices=)` returns, ascending, by timm's convention: None for every
    block, an int `k` for the last `k`, a sequence for those blocks (a negative index counts from the end).

    Raises:
        ValueError: for `k` outside `1..depth` or an index outside `-depth..depth - 1`.
    """
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 1 <= indices <= depth:
            raise ValueError(f"indices={indices}: the last k blocks need 1 <= k <= depth ({depth})")
        return list(range(depth - indices, depth))
    bad = [i for i in indices if not -depth <= i < depth]
    if bad or not indices:
        raise ValueError(f"indices={list(indices)}: give block indices in -{depth}..{depth - 1}, at least one")
    return sorted({i % depth for i in indices})


class ViTEncoder(nn.Module):
    """The VideoMAE ViT body: pre-norm blocks then a final LayerNorm, mapping `[b v d] -> [b v d]`.

    Tokenization and positions live in [MAEWrapper][tubemask.mae.MAEWrapper] (or a classifier), so the same
    body encodes visible tokens during pretraining and all tokens during fine-tuning.

    Args:
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP inner width over `embed_dim`.
        qkv_bias: learn `q_bias` / `v_bias`.
        drop_rate: dropout inside blocks.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        norm_eps: LayerNorm epsilon (VideoMAE: 1e-6).
        final_norm: apply the final LayerNorm (`encoder.norm` in official checkpoints). HF's
            `use_mean_pooling=True` default drops it from the pretraining encoder.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.depth = depth
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth else []
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=r,
                norm_eps=norm_eps,
            )
            for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    def forward_blocks(self, x: Float[Tensor, "b v d"]) -> Float[Tensor, "b v d"]:
        """Run the blocks without the final norm."""
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def forward_intermediates(
        self, x: Float[Tensor, "b v d"], indices: int | Sequence[int] | None = None
    ) -> list[Tensor]:
        """Outputs of the blocks `indices` picks ([block_indices][tubemask.encoders.block_indices]; None: every
        block), before the final norm, in block order, for heads that read intermediate layers. Only the outputs
        asked for are kept, and no block after the last of them runs (a teacher's last block alone holds one
        `[b v d]`, not `depth` of them)."""
        take = block_indices(indices, len(self.blocks))
        outs = []
        for i, block in enumerate(self.blocks[: take[-1] + 1]):
            x = block(x)
            if i in take:
                outs.append(x)
        return outs

    def forward(self, x: Float[Tensor, "b v d"]) -> Float[Tensor, "b v d"]:
        return self.norm(self.forward_blocks(x))
