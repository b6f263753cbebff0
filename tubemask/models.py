"""Size presets and the pretraining builder. Every builder takes the size's name first, then explicit keyword
arguments: [videomae_pretrain][tubemask.models.videomae_pretrain] here,
[videomae_classifier][tubemask.classification.videomae_classifier] and
[videomae_action_detector][tubemask.detection.videomae_action_detector] for fine-tuning.

| size | encoder dim / depth / heads | decoder dim / depth / heads |
|---|---|---|
| `"tiny"` (CPU smoke runs) | 192 / 4 / 3 | 96 / 2 / 3 |
| `"small"` (ViT-S) | 384 / 12 / 6 | 192 / 4 / 3 |
| `"base"` (ViT-B) | 768 / 12 / 12 | 384 / 4 / 6 |
| `"large"` (ViT-L) | 1024 / 24 / 16 | 512 / 4 / 8 |
| `"huge"` (ViT-H) | 1280 / 32 / 16 | 640 / 4 / 8 |

Decoder depth 4 is V1's default; the K400 L/H scripts use 12 (pass `decoder_depth=12`).
"""

from dataclasses import dataclass

import torch
from torch import nn

from tubemask.decoders import MAEDecoder
from tubemask.encoders import ViTEncoder
from tubemask.losses import Loss, reconstruction_mse
from tubemask.mae import MAEWrapper
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.targets import Target, TargetKind, as_target
from tubemask.tokenizers import CubeEmbedding

__all__ = ["ViTSize", "SIZES", "size_preset", "init_videomae_weights", "videomae_pretrain"]


@dataclass(frozen=True)
class ViTSize:
    """Widths and depths of one preset."""

    embed_dim: int
    depth: int
    num_heads: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int


SIZES: dict[str, ViTSize] = {
    "tiny": ViTSize(192, 4, 3, 96, 2, 3),
    "small": ViTSize(384, 12, 6, 192, 4, 3),
    "base": ViTSize(768, 12, 12, 384, 4, 6),
    "large": ViTSize(1024, 24, 16, 512, 4, 8),
    "huge": ViTSize(1280, 32, 16, 640, 4, 8),
}


def size_preset(size: "str | ViTSize", *, owner: str) -> ViTSize:
    """The [ViTSize][tubemask.models.ViTSize] of a preset's name (a ViTSize passes through); a ValueError naming
    `owner` (the builder) and the known names otherwise."""
    if isinstance(size, ViTSize):
        return size
    if size not in SIZES:
        raise ValueError(f"{owner}: unknown size {size!r}; choose one of {sorted(SIZES)} or a ViTSize")
    return SIZES[size]


def init_videomae_weights(model: nn.Module) -> nn.Module:
    """VideoMAE's pretraining initialisation: xavier-uniform linear weights, zero biases, unit LayerNorms,
    truncated-normal (std 0.02) mask token. Returns the model."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith("mask_token"):
            nn.init.trunc_normal_(param, std=0.02)
    return model


def videomae_pretrain(
    size: "str | ViTSize" = "base",
    *,
    tubelet_size: int = 2,
    patch_size: int = 16,
    in_channels: int = 3,
    decoder_depth: int | None = None,
    mlp_ratio: float = 4.0,
    drop_path_rate: float = 0.0,
    norm_eps: float = 1e-6,
    final_norm: bool = True,
    target: TargetKind | Target = "norm_pix",
    loss: Loss = reconstruction_mse,
    pixel_mean: tuple[float, ...] | None = IMAGENET_MEAN,
    pixel_std: tuple[float, ...] | None = IMAGENET_STD,
) -> MAEWrapper:
    """A VideoMAE pretraining model (ViT encoder + MAE decoder) for `size`, initialised as VideoMAE does.

    Args:
        size: a preset's name (`"tiny"`, `"small"`, `"base"`, `"large"`, `"huge"`) or a [ViTSize][tubemask.models.ViTSize].
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.
        in_channels: colour channels.
        decoder_depth: override the preset's decoder depth.
        mlp_ratio: MLP inner width over the token width.
        drop_path_rate: encoder stochastic depth.
        norm_eps: LayerNorm epsilon everywhere.
        final_norm: keep the encoder's final LayerNorm (official checkpoints have it).
        target: reconstruction target, a [Target][tubemask.targets.Target] or a built-in's name; the decoder's output
            width follows it.
        loss: `loss(pred, target) -> scalar` over the queried cubes ([tubemask.losses][]; default: mean squared
            error).
        pixel_mean: mean the clips are normalised with.
        pixel_std: std the clips are normalised with.
    """
    size = size_preset(size, owner="videomae_pretrain")
    k = as_target(target).width(tubelet_size=tubelet_size, patch_size=patch_size, channels=in_channels)
    model = MAEWrapper(
        ViTEncoder(
            size.embed_dim,
            depth=size.depth,
            num_heads=size.num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            norm_eps=norm_eps,
            final_norm=final_norm,
        ),
        tokenizer=CubeEmbedding(
            size.embed_dim, tubelet_size=tubelet_size, patch_size=patch_size, in_channels=in_channels
        ),
        decoder=MAEDecoder(
            size.decoder_dim,
            depth=size.decoder_depth if decoder_depth is None else decoder_depth,
            num_heads=size.decoder_heads,
            out_dim=k,
            mlp_ratio=mlp_ratio,
            norm_eps=norm_eps,
            final_norm_eps=norm_eps,
        ),
        target=target,
        loss=loss,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
    )
    with torch.no_grad():
        return init_videomae_weights(model)
