"""Transformer layers of the VideoMAE ViT: attention, MLP, drop path and the pre-norm block.

Attention holds one fused `qkv` weight without bias plus learnable `q_bias` and `v_bias` (the key bias is zero), as
VideoMAE does, and runs `torch.nn.functional.scaled_dot_product_attention` (flash kernels on CPU and GPU,
memory-efficient ones on GPU) in [qkv_attention][tubemask.layers.qkv_attention].
Parameter names follow the official VideoMAE checkpoints (`attn.qkv`, `attn.q_bias`, `attn.proj`, `mlp.fc1`, ...).
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["drop_path", "DropPath", "qkv_attention", "Attention", "Mlp", "Block"]


def drop_path(x: Tensor, drop_prob: float, *, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob`, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    noise = torch.rand(shape, dtype=x.dtype, device=x.device, generator=generator)
    return x * (noise < keep).to(x.dtype) / keep


class DropPath(nn.Module):
    """Module form of [drop_path][tubemask.layers.drop_path].

    Args:
        drop_prob: probability of dropping a sample's branch.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, training=self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _split_heads(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """`[b n 3d] -> q, k, v` as `[b heads n head_dim]` views (no copy)."""
    b, n, three_d = qkv.shape
    return qkv.view(b, n, 3, num_heads, three_d // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def qkv_attention(qkv: Float[Tensor, "b n e"], num_heads: int, *, dropout_p: float = 0.0) -> Float[Tensor, "b n d"]:
    """Softmax attention of a fused `qkv` projection `[b n 3d]` (q, k, v blocks, heads inside each), `[b n d]` out.

    Scaled dot-product attention per head with scale `head_dim ** -0.5`, through
    `F.scaled_dot_product_attention` on q, k and v views of `qkv`: its kernel choice (flash on CPU and GPU,
    memory-efficient, math) is SDPA's, and the numbers do not depend on grad mode.
    """
    b, n, three_d = qkv.shape
    q, k, v = _split_heads(qkv, num_heads)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(b, n, three_d // 3)


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's biases: `qkv` without bias, learnable `q_bias` and `v_bias`.

    Args:
        dim: token width.
        num_heads: attention heads; must divide `dim`.
        qkv_bias: learn `q_bias` and `v_bias` (the key bias is always zero).
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self, dim: int, *, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def qkv_bias(self) -> Tensor | None:
        """The fused `(q_bias, 0, v_bias)` bias, or None."""
        if self.q_bias is None:
            return None
        return torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        out = qkv_attention(qkv, self.num_heads, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Two linear layers with GELU (exact, erf) between.

    Args:
        dim: token width.
        hidden_dim: inner width (VideoMAE: 4 * dim).
        drop: dropout after each linear layer.
    """

    def __init__(self, dim: int, *, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, each branch with drop path.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP inner width over `dim`.
        qkv_bias: learn `q_bias` / `v_bias`.
        drop: dropout in the MLP and after attention.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of this block.
        norm_eps: LayerNorm epsilon (VideoMAE: 1e-6).
    """

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, hidden_dim=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
