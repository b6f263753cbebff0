"""Spatio-temporal action detection (AVA): the fine-tuning encoder over every token of the clip, its final norm, and
an [RoIActionHead][tubemask.heads.RoIActionHead] that classifies given person boxes.

VideoMAE on AVA v2.2 (Tong et al., arXiv 2203.12602): the ViT's final-normed tokens are laid out as a `[b d T H W]`
map, averaged over time, each person box is pooled with RoIAlign (7 x 7, scale 1/16) and a max, and one linear layer
gives 80 logits. Training uses jittered ground-truth boxes and a binary cross-entropy per class; testing uses the
boxes of a person detector (score >= 0.8) and scores `sigmoid(logit) * box score`, evaluated with
[frame_average_precision][tubemask.eval.ava.frame_average_precision].
"""

from jaxtyping import Float
from torch import Tensor, nn

from tubemask.classification import WholeClipModel, finetune_encoder
from tubemask.heads import RoIActionHead
from tubemask.models import ViTSize
from tubemask.shapes import typechecked
from tubemask.tokenizers import CubeEmbedding

__all__ = ["ActionDetector", "videomae_action_detector"]


class ActionDetector(WholeClipModel):
    """Box classifier: `head(encoder(tokenizer(video) + pos_embed), grid, rois)` (VideoMAE, arXiv 2203.12602).

    The trunk and its names are [WholeClipModel][tubemask.classification.WholeClipModel]'s (`tokenizer.proj.*`,
    `encoder.blocks.{i}.*`, `encoder.norm.*`, `pos_embed.*`), shared with the classifier, plus `head.*`, so
    [load_pretrained_encoder][tubemask.interop.finetune_weights.load_pretrained_encoder] fills it from a pretraining
    checkpoint, final norm included, and [build_adamw][tubemask.train.optim.build_adamw]'s layer decay puts the head
    and the final norm in the top group. `forward_features` gives the final-normed tokens the head pools from.

    Example:
        ```python
        model = videomae_action_detector("base")
        report = load_pretrained_encoder(model, "runs/pretrain/final.pt")
        # video: [b, 3, 16, 224, 224]; rois: [r, 5] rows (batch index, x1, y1, x2, y2) in pixels
        logits = model(video, rois)  # [r, 80]
        ```

    Args:
        encoder: any module mapping `[b n d] -> [b n d]`, with its final norm (a
            [ViTEncoder][tubemask.encoders.ViTEncoder] gives intermediates and activation checkpointing).
        tokenizer: the cube embedding.
        head: a module called as `head(tokens, grid, rois)` returning `[r classes]`, e.g. an
            [RoIActionHead][tubemask.heads.RoIActionHead] with `spatial_scale = 1 / patch_size`.
        pos_embed: position embedding called as `pos_embed(ids, grid, like)`; default VideoMAE's fixed sinusoid.
    """

    @typechecked
    def forward(self, video: Float[Tensor, "b c t h w"], rois: Float[Tensor, "r 5"]) -> Float[Tensor, "r classes"]:
        """Logits per box for normalised clips.

        Args:
            video: the clips.
            rois: one row per box, `(batch index, x1, y1, x2, y2)` in pixels of `video`.
        """
        return self.head(self.forward_features(video), self.grid(video.shape), rois)


def videomae_action_detector(
    size: str | ViTSize = "base",
    *,
    num_classes: int = 80,
    tubelet_size: int = 2,
    patch_size: int = 16,
    in_channels: int = 3,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.2,
    head_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    output_size: int = 7,
    sampling_ratio: int = 0,
    aligned: bool = True,
    init_scale: float = 0.001,
    pos_embed: nn.Module | None = None,
) -> ActionDetector:
    """VideoMAE's AVA detector for a size preset: the encoder with its final norm, RoIAlign at `1 / patch_size`.

    The encoder and head are initialised as VideoMAE V1 fine-tuning does (truncated normal, std 0.02); pretrained
    weights replace the encoder's, final norm included, when loaded with
    [load_pretrained_encoder][tubemask.interop.finetune_weights.load_pretrained_encoder].

    Args:
        size: a preset name of `tubemask.models.SIZES` (`"tiny"`, `"small"`, `"base"`, `"large"`, `"huge"`)
            or a [ViTSize][tubemask.models.ViTSize].
        num_classes: logits per box (AVA: 80; the evaluation uses 60 of them).
        tubelet_size: frames per cube.
        patch_size: pixels per cube side; the head's `spatial_scale` is `1 / patch_size`.
        in_channels: colour channels.
        mlp_ratio: MLP inner width over the token width.
        qkv_bias: learn `q_bias` / `v_bias`.
        drop_path_rate: stochastic depth, rising linearly over the blocks (0.2 for ViT-B).
        head_dropout: dropout before the linear layer (VideoMAE's AVA head has none: 0).
        norm_eps: LayerNorm epsilon everywhere (official: 1e-6).
        output_size: RoIAlign bins per side (7).
        sampling_ratio: RoIAlign samples per bin side (0: adaptive).
        aligned: half-cell box shift of RoIAlign (VideoMAE's AVA code: False, torchvision's default).
        init_scale: factor on the initial linear weight and bias of the head (VideoMAE's AVA code: 0.001).
        pos_embed: position embedding module; default VideoMAE's fixed sinusoid.

    Raises:
        ValueError: for an unknown preset name.
    """
    encoder = finetune_encoder(
        size,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        drop_path_rate=drop_path_rate,
        norm_eps=norm_eps,
        final_norm=True,
        owner="videomae_action_detector",
    )
    d = encoder.embed_dim
    return ActionDetector(
        encoder,
        tokenizer=CubeEmbedding(d, tubelet_size=tubelet_size, patch_size=patch_size, in_channels=in_channels),
        head=RoIActionHead(
            d,
            num_classes,
            output_size=output_size,
            spatial_scale=1.0 / patch_size,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            dropout=head_dropout,
            init_scale=init_scale,
        ),
        pos_embed=pos_embed,
    )
