"""Classification heads that read the encoder's tokens.

[ClassificationHead][tubemask.heads.ClassificationHead] is VideoMAE's fine-tuning head: mean over all tokens, then a
LayerNorm (`fc_norm`), dropout and one linear layer (`head`). With it the fine-tuned encoder has no final norm of its
own: `fc_norm` takes that place, after pooling.

[RoIActionHead][tubemask.heads.RoIActionHead] is VideoMAE's AVA head: it classifies person boxes from the (final-normed)
token map, averaged over time, with RoIAlign and max pooling.
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tubemask.shapes import typechecked

__all__ = ["ClassificationHead", "RoIActionHead", "mean_pool"]


def _scaled_linear(embed_dim: int, num_classes: int, init_scale: float) -> nn.Linear:
    """The heads' classification layer as VideoMAE V1 fine-tuning initialises it: truncated normal (std 0.02) weight,
    zero bias, both multiplied by `init_scale`, so the first logits are close to zero."""
    layer = nn.Linear(embed_dim, num_classes)
    with torch.no_grad():
        nn.init.trunc_normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
        layer.weight.mul_(init_scale)
    return layer


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
        self.head = _scaled_linear(embed_dim, num_classes, init_scale)

    @typechecked
    def pool(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b d"]:
        """The normalised clip feature `fc_norm(mean(tokens))`, before dropout and the linear layer."""
        return self.fc_norm(mean_pool(tokens))

    @typechecked
    def forward(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b classes"]:
        """Logits from the encoder's output tokens."""
        return self.head(self.dropout(self.pool(tokens)))


class RoIActionHead(nn.Module):
    """Action logits per person box: tokens -> `[b d T H W]` -> mean over `T` -> RoIAlign -> max -> dropout -> Linear.

    VideoMAE's AVA head (Tong et al., arXiv 2203.12602): the encoder's final-normed tokens are laid out as a feature
    map (raster order, `t` slowest), averaged over time, each box is pooled with RoIAlign to `output_size x
    output_size` bins, max-pooled over the bins, and classified by one linear layer (`head`, 80 AVA classes; train with
    a sigmoid / BCE loss, not a softmax). `torchvision` is imported on the first call only.

    Boxes are rows `(batch index, x1, y1, x2, y2)` in pixels of the input clip; `spatial_scale` maps them to the token
    map (`1 / patch_size`). With `aligned=True` pixel `(x, y)` of the clip sits at `(x * scale - 0.5, y * scale - 0.5)`
    of the map, so the token of cell `(i, j)` covers pixels `[j * p, (j + 1) * p) x [i * p, (i + 1) * p)`. Boxes may
    reach outside the clip (RoIAlign reads zeros beyond the map's border).

    Args:
        embed_dim: token width `d`.
        num_classes: number of logits per box (AVA: 80).
        output_size: RoIAlign bins per side (7).
        spatial_scale: token-map cells per input pixel (`1 / patch_size`; 1/16 for ViT-B/16).
        sampling_ratio: RoIAlign samples per bin side; 0 picks `ceil(bin size)` adaptively.
        aligned: shift boxes by half a cell so box corners fall on cell edges (Detectron2's `ROIAlignV2`). VideoMAE's
            AVA code calls torchvision's `roi_align` with its default `aligned=False`: pass False to score its
            checkpoints as they were trained.
        dropout: dropout on the pooled box feature before the linear layer (VideoMAE's AVA head has none: 0).
        init_scale: factor on the initial linear weight and bias, after a truncated normal with std 0.02 and zero bias
            (VideoMAE's AVA code: 0.001, as for classification, so the first logits are close to zero).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int = 80,
        *,
        output_size: int = 7,
        spatial_scale: float = 1 / 16,
        sampling_ratio: int = 0,
        aligned: bool = True,
        dropout: float = 0.0,
        init_scale: float = 0.001,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError(f"RoIActionHead: num_classes must be positive, got {num_classes}")
        if output_size <= 0:
            raise ValueError(f"RoIActionHead: output_size must be positive, got {output_size}")
        if spatial_scale <= 0:
            raise ValueError(f"RoIActionHead: spatial_scale must be positive, got {spatial_scale}")
        if sampling_ratio < 0:
            raise ValueError(f"RoIActionHead: sampling_ratio must be >= 0 (0 = adaptive), got {sampling_ratio}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RoIActionHead: dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.dropout = nn.Dropout(dropout)
        self.head = _scaled_linear(embed_dim, num_classes, init_scale)

    @typechecked
    def feature_map(self, tokens: Float[Tensor, "b n d"], grid: tuple[int, int, int]) -> Float[Tensor, "b d H W"]:
        """The tokens as a `[b d T H W]` map (raster order, `t` slowest), averaged over `T`.

        Raises:
            ValueError: when `grid` does not hold `n` tokens.
        """
        t, h, w = grid
        if min(grid) <= 0 or t * h * w != tokens.shape[1]:
            raise ValueError(
                f"RoIActionHead: token grid {tuple(grid)} holds {t * h * w} tokens, the input has {tokens.shape[1]}"
            )
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], t, h, w)  # [b d T H W]
        return x.mean(dim=2)

    @typechecked
    def pool(
        self, tokens: Float[Tensor, "b n d"], grid: tuple[int, int, int], rois: Float[Tensor, "r 5"]
    ) -> Float[Tensor, "r d"]:
        """One feature per box: RoIAlign over the time-averaged map, then the max over the bins.

        Raises:
            ValueError: for a grid that does not match the tokens, batch indices that are not integers in
                `[0, b)`, non-finite boxes or boxes with `x2 < x1` or `y2 < y1`.
        """
        from torchvision.ops import roi_align

        _check_rois(rois, tokens.shape[0])
        features = self.feature_map(tokens, grid)
        pooled = roi_align(
            features.float(),  # float32 boxes: bfloat16 pixel coordinates would be off by whole pixels
            rois.float(),
            output_size=self.output_size,
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )  # [r d output_size output_size]
        return pooled.amax(dim=(2, 3)).to(features.dtype)

    @typechecked
    def forward(
        self, tokens: Float[Tensor, "b n d"], grid: tuple[int, int, int], rois: Float[Tensor, "r 5"]
    ) -> Float[Tensor, "r classes"]:
        """Logits `[r, num_classes]`, one row per box (sigmoid them for AVA's multi-label scores)."""
        return self.head(self.dropout(self.pool(tokens, grid, rois)))


def _check_rois(rois: Tensor, batch: int) -> None:
    """Refuse boxes RoIAlign would read wrongly or silently: bad batch indices, NaN or inverted corners."""
    if rois.shape[0] == 0:
        return
    index = rois[:, 0]
    bad = (index != index.round()) | (index < 0) | (index >= batch)
    finite = rois[:, 1:].isfinite().all(dim=1)
    inverted = (rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])
    if not bool((bad | ~finite | inverted).any()):  # one device sync per step on the good path
        return
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"RoIActionHead: roi {i} has batch index {float(index[i])}; rows are (batch index, x1, y1, x2, y2) and "
            f"the index must be an integer in [0, {batch})"
        )
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0, 0])
        raise ValueError(f"RoIActionHead: roi {i} = {rois[i].tolist()} has non-finite coordinates")
    i = int(inverted.nonzero()[0, 0])
    raise ValueError(
        f"RoIActionHead: roi {i} = {rois[i].tolist()} has x2 < x1 or y2 < y1; rows are (batch index, x1, y1, x2, y2)"
    )
