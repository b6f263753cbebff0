"""Classification heads that read the encoder's tokens.

[ClassificationHead][tubemask.heads.ClassificationHead] is VideoMAE's fine-tuning head: mean over all tokens, then a
LayerNorm (`fc_norm`), dropout and one linear layer (`head`). With it the fine-tuned encoder has no final norm of its
own: `fc_norm` takes that place, after pooling.
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tubemask.shapes import typechecked

__all__ = ["ClassificationHead", "mean_pool"]


@typechecked
def mean_pool(tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b d"]:
    """Average the tokens of each clip."""
    return tokens.mean(dim=1)


class ClassificationHead(nn.Module):
    """Mean pooling -> `fc_norm` LayerNorm -> dropout -> `head` Linear (VideoMAE, Tong et al., arXiv 2203.12602).

    Parameter names match the official fine-tuned checkpoints (`fc_norm.*`, `head.*`). The linear layer is initialised
    as VideoMAE V1 fine-tuning does: truncated normal with std 0.02, then weight and bias multiplied by `init_scale`, so
    the first logits are close to zero.

    Args:
        embed_dim: token width `d`.
        num_classes: number of output logits.
        dropout: dropout on the pooled feature before the linear layer (VideoMAE fine-tuning: 0.5).
        fc_norm: LayerNorm after pooling (VideoMAE's mean-pooling layout); `False` gives an identity.
        norm_eps: epsilon of `fc_norm` (official checkpoints 1e-6, Hugging Face 1e-5).
        init_scale: factor on the initial linear weight and bias (VideoMAE V1: 0.001).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        *,
        dropout: float = 0.5,
        fc_norm: bool = True,
        norm_eps: float = 1e-6,
        init_scale: float = 0.001,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"ClassificationHead: num_classes must be positive, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ClassificationHead: dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if fc_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        with torch.no_grad():
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
            self.head.weight.mul_(init_scale)
            self.head.bias.mul_(init_scale)

    @typechecked
    def pool(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b d"]:
        """The normalised clip feature `fc_norm(mean(tokens))`, before dropout and the linear layer."""
        return self.fc_norm(mean_pool(tokens))

    @typechecked
    def forward(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b classes"]:
        """Logits from the encoder's output tokens."""
        return self.head(self.dropout(self.pool(tokens)))
