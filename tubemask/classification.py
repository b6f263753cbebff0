"""Video classification: cube embedding + positions + an encoder over all tokens + a head.

The fine-tuned VideoMAE (Tong et al., arXiv 2203.12602) is [videomae_classifier][tubemask.classification.videomae_classifier]:
the pretraining encoder without its final norm, mean pooling, `fc_norm`, dropout 0.5 and a linear layer, with drop path
0.2. Load pretrained weights into it with
[load_pretrained_encoder][tubemask.interop.finetune_weights.load_pretrained_encoder].

A classifier may drop cubes before its encoder, at training and test alike: pass a `mask` to its forward, or build it
with a `selector` (a masker) that draws one from each clip. With
[MotionAwareMasker][tubemask.motion_aware.MotionAwareMasker] that is EVEREST's fine-tuning (Hwang et al., arXiv
2211.10636): the encoder sees only the cubes that move most.
"""

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from tubemask.encoders import ViTEncoder
from tubemask.heads import ClassificationHead
from tubemask.mae import encoder_intermediates, set_encoder_grad_checkpointing
from tubemask.masking import Masker, draw_mask
from tubemask.models import ViTSize, size_preset
from tubemask.pos_embed import SinusoidPositionEmbedding
from tubemask.shapes import typechecked
from tubemask.tokenizers import CubeEmbedding
from tubemask.tokens import split_ids

__all__ = ["WholeClipModel", "VideoClassifier", "videomae_classifier", "init_finetune_weights", "finetune_encoder"]


class WholeClipModel(nn.Module):
    """The trunk shared by the fine-tuning models: `encoder(tokenizer(video) + pos_embed)` over every token of the clip.

    [VideoClassifier][tubemask.classification.VideoClassifier] and
    [ActionDetector][tubemask.detection.ActionDetector] add their own `forward` (a head on the tokens). State-dict
    names follow tubemask's pretraining model (`tokenizer.proj.*`, `encoder.blocks.{i}.*`, `encoder.norm.*`), so
    pretrained encoders load by name, plus `pos_embed.weight` for a learned table and the head's own names.

    Args:
        encoder: any module mapping `[b n d] -> [b n d]` (a [ViTEncoder][tubemask.encoders.ViTEncoder] gives
            intermediates and activation checkpointing).
        tokenizer: the cube embedding.
        head: the model's head (see the subclass).
        pos_embed: position embedding called as `pos_embed(ids, grid, like)`; default VideoMAE's fixed sinusoid.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        tokenizer: CubeEmbedding,
        head: nn.Module,
        pos_embed: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.pos_embed = pos_embed if pos_embed is not None else SinusoidPositionEmbedding(tokenizer.embed_dim)
        self.encoder = encoder
        self.head = head

    def grid(self, video_shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid `(T, H, W)` for clips of shape `b c t h w`."""
        return self.tokenizer.grid(video_shape)

    @typechecked
    def embed(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b n d"]:
        """All cube embeddings plus their positions, in raster order (the encoder's input)."""
        grid = self.grid(video.shape)
        x = self.tokenizer(video)
        ids = torch.arange(x.shape[1], device=video.device)[None]  # [1 n]: one table row per token, broadcast over b
        return x + self.pos_embed(ids, grid, x)

    @typechecked
    def forward_features(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b n d"]:
        """The encoder's output tokens (after its final norm, if it has one), before the head."""
        return self.encoder(self.embed(video))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute encoder block activations in the backward pass instead of storing them (training only).

        Drop path draws the same samples in the recomputation (the RNG state is replayed), so gradients are unchanged.

        Raises:
            TypeError: when the encoder does not support it.
        """
        set_encoder_grad_checkpointing(self.encoder, enable, owner=type(self).__name__)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay besides norms and biases: a learned position table."""
        return {name for name, _ in self.named_parameters() if name.startswith("pos_embed.")}


class VideoClassifier(WholeClipModel):
    """A clip classifier: `head(encoder(tokenizer(video) + pos_embed))` over every token of the clip, or over the cubes
    a mask keeps.

    State-dict names are those of [WholeClipModel][tubemask.classification.WholeClipModel] plus the head's
    (`head.fc_norm.*`, `head.head.*` for a [ClassificationHead][tubemask.heads.ClassificationHead]).

    Example:
        ```python
        model = videomae_classifier("base", num_classes=101)
        report = load_pretrained_encoder(model, "runs/pretrain/final.pt")
        logits = model(video)  # video: [b, 3, 16, 224, 224] -> logits: [b, 101]
        ```

    Token selection: `model(video, mask)` drops the cubes where `mask` is True before the encoder (only the kept
    cubes are embedded, as in pretraining's encoder; the head pools them). With `selector` set, a forward
    without a mask draws one from the clip with [draw_mask][tubemask.masking.draw_mask], in training and evaluation
    alike: EVEREST's fine-tuning is `selector=MotionAwareMasker(mask_ratio=0.4)`. Ties in the ranking (static
    cubes) are broken by the global RNG in training and by a generator seeded 0 in evaluation, so evaluation is
    deterministic.

    Args:
        encoder: any module mapping `[b n d] -> [b n d]` (a [ViTEncoder][tubemask.encoders.ViTEncoder] gives
            intermediates and activation checkpointing).
        tokenizer: the cube embedding.
        head: a module mapping tokens `[b n d]` to logits `[b classes]`.
        pos_embed: position embedding called as `pos_embed(ids, grid, like)`; default VideoMAE's fixed sinusoid.
        selector: a masker (True = dropped) that every forward without a `mask` applies; None: every cube.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        tokenizer: CubeEmbedding,
        head: nn.Module,
        pos_embed: nn.Module | None = None,
        selector: Masker | None = None,
    ) -> None:
        super().__init__(encoder, tokenizer=tokenizer, head=head, pos_embed=pos_embed)
        self.selector = selector

    @typechecked
    def select(self, video: Float[Tensor, "b c t h w"]) -> tuple[Bool[Tensor, "b n"] | None, int | None]:
        """`(mask, num_masked)` that the selector draws for `video` (True = dropped); `(None, None)` without one."""
        if self.selector is None:
            return None, None
        grid = self.grid(video.shape)
        generator = None if self.training else torch.Generator(video.device).manual_seed(0)
        mask = draw_mask(self.selector, video.shape[0], grid, generator=generator, device=video.device, video=video)
        return mask, self.selector.num_masked(grid)

    @typechecked
    def forward_features(
        self,
        video: Float[Tensor, "b c t h w"],
        mask: Bool[Tensor, "b n"] | None = None,
        *,
        num_masked: int | None = None,
    ) -> Float[Tensor, "b v d"]:
        """The encoder's output tokens (after its final norm, if it has one), before the head.

        Args:
            video: normalised clips.
            mask: True = dropped before the encoder, the same count in every row; None: every cube (the selector is
                not applied here, only in `forward`). The kept tokens stay in raster order.
            num_masked: the dropped count per row when known (no read back from the device); None: counted here.
        """
        if mask is None:
            return self.encoder(self.embed(video))
        grid = self.grid(video.shape)
        n = grid[0] * grid[1] * grid[2]
        if mask.shape[1] != n:
            raise ValueError(f"mask has {mask.shape[1]} tokens per row, clips of shape {tuple(video.shape)} have {n}")
        kept = split_ids(mask, num_masked)[0]  # [b v], ascending
        x = self.tokenizer(video, kept)  # only the kept cubes are embedded
        return self.encoder(x + self.pos_embed(kept, grid, x))

    @typechecked
    def forward_intermediates(
        self, video: Float[Tensor, "b c t h w"], indices: int | Sequence[int] | None = None
    ) -> list[Float[Tensor, "b n d"]]:
        """The output of every encoder block over every cube, `[b n d]` each, before any final norm; `indices` picks
        blocks as [block_indices][tubemask.encoders.block_indices] reads it (the encoder must take `indices=`).

        Raises:
            TypeError: when the encoder has no `forward_intermediates` method.
        """
        return encoder_intermediates(self.encoder, self.embed(video), owner=type(self).__name__, indices=indices)

    @typechecked
    def forward(
        self,
        video: Float[Tensor, "b c t h w"],
        mask: Bool[Tensor, "b n"] | None = None,
        *,
        num_masked: int | None = None,
    ) -> Float[Tensor, "b classes"]:
        """Logits for normalised clips, over the cubes `mask` keeps (None: the selector's draw, or every cube)."""
        if mask is None:
            mask, num_masked = self.select(video)
        return self.head(self.forward_features(video, mask, num_masked=num_masked))


def init_finetune_weights(module: nn.Module) -> nn.Module:
    """VideoMAE V1 fine-tuning initialisation of a module built from scratch: truncated-normal (std 0.02) linear
    weights, zero biases, unit LayerNorms. The cube embedding's Conv3d keeps PyTorch's default. Returns the module."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                nn.init.trunc_normal_(sub.weight, std=0.02)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.LayerNorm):
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)
    return module


def finetune_encoder(
    size: str | ViTSize,
    *,
    mlp_ratio: float,
    qkv_bias: bool,
    drop_path_rate: float,
    norm_eps: float,
    final_norm: bool,
    owner: str,
) -> ViTEncoder:
    """The ViT encoder of a size preset, initialised as VideoMAE V1 fine-tuning does (the classifier's and the
    detector's builders share it).

    Args:
        size: a preset name of `tubemask.models.SIZES` or a [ViTSize][tubemask.models.ViTSize].
        mlp_ratio: MLP inner width over the token width.
        qkv_bias: learn `q_bias` / `v_bias`.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        norm_eps: LayerNorm epsilon.
        final_norm: keep the encoder's final LayerNorm.
        owner: the builder's name, for the error message.

    Raises:
        ValueError: for an unknown preset name, naming `owner`.
    """
    size = size_preset(size, owner=owner)
    encoder = ViTEncoder(
        size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        drop_path_rate=drop_path_rate,
        norm_eps=norm_eps,
        final_norm=final_norm,
    )
    return init_finetune_weights(encoder)


def videomae_classifier(
    size: str | ViTSize = "base",
    *,
    num_classes: int,
    tubelet_size: int = 2,
    patch_size: int = 16,
    in_channels: int = 3,
    mlp_ratio: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.2,
    head_dropout: float = 0.5,
    fc_norm: bool = True,
    final_norm: bool = False,
    norm_eps: float = 1e-6,
    init_scale: float = 0.001,
    pos_embed: nn.Module | None = None,
    selector: Masker | None = None,
) -> VideoClassifier:
    """The fine-tuning VideoMAE classifier for a size preset, initialised as VideoMAE V1 fine-tuning does.

    Fine-tuned VideoMAE pools the last block's tokens and normalises the pooled feature with `fc_norm`; the pretraining
    encoder's final norm is not used (`final_norm=False`). Pretrained weights replace the encoder's initialisation when
    loaded with [load_pretrained_encoder][tubemask.interop.finetune_weights.load_pretrained_encoder].

    Args:
        size: a preset name of `tubemask.models.SIZES` (`"tiny"`, `"small"`, `"base"`, `"large"`, `"huge"`)
            or a [ViTSize][tubemask.models.ViTSize].
        num_classes: number of logits.
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.
        in_channels: colour channels.
        mlp_ratio: MLP inner width over the token width.
        qkv_bias: learn `q_bias` / `v_bias`.
        drop_path_rate: stochastic depth, rising linearly over the blocks (paper fine-tuning: 0.1-0.2; 0.2 for ViT-B).
        head_dropout: dropout before the linear head (paper: 0.5).
        fc_norm: LayerNorm after pooling.
        final_norm: keep the encoder's final LayerNorm as well (not VideoMAE's fine-tuning layout).
        norm_eps: LayerNorm epsilon everywhere (official: 1e-6).
        init_scale: factor on the initial head weights (V1: 0.001).
        pos_embed: position embedding module; default VideoMAE's fixed sinusoid. Pass a
            [LearnedPositionEmbedding][tubemask.pos_embed.LearnedPositionEmbedding] for a learned table.
        selector: a masker whose draw drops cubes before the encoder in every forward without a mask (EVEREST's
            fine-tuning: `MotionAwareMasker(mask_ratio=0.4)`); None: every cube.

    Raises:
        ValueError: for an unknown preset name.
    """
    encoder = finetune_encoder(
        size,
        mlp_ratio=mlp_ratio,
        qkv_bias=qkv_bias,
        drop_path_rate=drop_path_rate,
        norm_eps=norm_eps,
        final_norm=final_norm,
        owner="videomae_classifier",
    )
    d = encoder.embed_dim
    return VideoClassifier(
        encoder,
        tokenizer=CubeEmbedding(d, tubelet_size=tubelet_size, patch_size=patch_size, in_channels=in_channels),
        head=ClassificationHead(
            d, num_classes, dropout=head_dropout, fc_norm=fc_norm, norm_eps=norm_eps, init_scale=init_scale
        ),
        pos_embed=pos_embed,
        selector=selector,
    )
