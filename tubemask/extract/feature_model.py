"""The model that turns a window into one feature vector, built from a tubemask, official VideoMAE or HF checkpoint.

A window's feature is the mean of the encoder's output tokens over the whole clip, followed by `fc_norm` when the
checkpoint has one:

| checkpoint | feature `[d]` |
|---|---|
| fine-tuned: official V1 / V2 (`fc_norm.*`), tubemask classifier (`head.fc_norm.*`), HF `VideoMAEForVideoClassification` | `fc_norm(mean(tokens))`: the classifier's feature before its linear layer |
| pretrained: official V1 / V2, tubemask `final.pt` / `encoder.pt`, HF `VideoMAEModel` / `VideoMAEForPreTraining` | `mean(tokens)`, the tokens after the encoder's final norm when it has one |

The first row is what VideoMAE V2's `extract_tad_feature.py` saves (`forward_features` of a fine-tuned model with mean
pooling). The second has no `fc_norm` to borrow: the mean of the encoder's own output is the plain choice, and it is
what a linear probe of a pretrained encoder reads. A checkpoint's classification layer is never used.

The encoder's shape is read from the tensors (width, depth, cube size, channels, MLP width, q/v biases, final norm,
`fc_norm`); the head count, which no tensor shows, comes from the official width table
([`ENCODER_HEADS`][tubemask.interop.official.ENCODER_HEADS]) unless given. A learned position table is loaded (and
interpolated to the window's token grid); VideoMAE's fixed sinusoid is computed for any grid.
"""

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tubemask.classification import WholeClipModel
from tubemask.encoders import ViTEncoder
from tubemask.heads import mean_pool
from tubemask.interop.finetune_weights import canonical_state_dict, load_pretrained_encoder, read_state_dict
from tubemask.interop.hf import from_hf, import_transformers
from tubemask.interop.hf_classification import classifier_from_hf
from tubemask.interop.official import ENCODER_HEADS
from tubemask.interop.widths import mlp_ratio_for
from tubemask.pos_embed import LearnedPositionEmbedding, SinusoidPositionEmbedding, sinusoid_table
from tubemask.shapes import typechecked
from tubemask.tokenizers import CubeEmbedding

__all__ = ["CheckpointInfo", "ClipFeatureModel", "PooledFeature", "load_feature_model"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class PooledFeature(nn.Module):
    """Mean over a clip's tokens, then `fc_norm` (an identity when the checkpoint has none).

    The attribute is named `fc_norm` so a fine-tuned checkpoint's `fc_norm.*` (`head.fc_norm.*` of a tubemask
    classifier) loads into it by name, as into [ClassificationHead][tubemask.heads.ClassificationHead].

    Args:
        fc_norm: the LayerNorm applied after pooling; None for none.
    """

    def __init__(self, fc_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.fc_norm = fc_norm if fc_norm is not None else nn.Identity()

    @typechecked
    def forward(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b d"]:
        """`fc_norm(mean(tokens))`."""
        return self.fc_norm(mean_pool(tokens))


class ClipFeatureModel(WholeClipModel):
    """One feature vector per clip: `PooledFeature(encoder(tokenizer(video) + pos_embed))` over every token.

    The trunk and its state-dict names are [WholeClipModel][tubemask.classification.WholeClipModel]'s; the head is a
    [PooledFeature][tubemask.extract.feature_model.PooledFeature].

    Args:
        encoder: any module mapping `[b n d] -> [b n d]`.
        tokenizer: the cube embedding.
        head: the pooling.
        pos_embed: position embedding called as `pos_embed(ids, grid, like)`; default VideoMAE's fixed sinusoid.
    """

    @typechecked
    def forward(self, video: Float[Tensor, "b c t h w"]) -> Float[Tensor, "b d"]:
        """Features of normalised clips."""
        return self.head(self.forward_features(video))


@dataclass
class CheckpointInfo:
    """Where a feature model came from and how it pools, for the extraction summary.

    Attributes:
        path: the checkpoint file or Hugging Face directory.
        layout: `"tubemask"`, `"official-pretrain"`, `"official-finetune"` or `"hf:<transformers class>"`.
        pooling: `"fc_norm(mean(tokens))"` or `"mean(tokens)"`.
        final_norm: whether the encoder applies its final LayerNorm before pooling.
        embed_dim: the feature width `d`.
        tubelet_size: frames per cube (a window's frame count must be a multiple of it).
        patch_size: pixels per cube side (the input size must be a multiple of it).
        notes: one line per loading decision worth knowing (dropped classification layer, interpolated table, ...).
    """

    path: str
    layout: str
    pooling: str
    final_norm: bool
    embed_dim: int
    tubelet_size: int
    patch_size: int
    notes: list[str] = field(default_factory=list)


def _info(model: ClipFeatureModel, path: str, layout: str, notes: list[str]) -> CheckpointInfo:
    fc_norm = not isinstance(model.head.fc_norm, nn.Identity)
    return CheckpointInfo(
        path=path,
        layout=layout,
        pooling="fc_norm(mean(tokens))" if fc_norm else "mean(tokens)",
        final_norm=not isinstance(getattr(model.encoder, "norm", nn.Identity()), nn.Identity),
        embed_dim=model.tokenizer.embed_dim,
        tubelet_size=model.tokenizer.tubelet_size,
        patch_size=model.tokenizer.patch_size,
        notes=notes,
    )


def load_feature_model(
    checkpoint: str | os.PathLike,
    *,
    window_frames: int,
    input_size: int,
    num_heads: int | None = None,
) -> tuple[ClipFeatureModel, CheckpointInfo]:
    """Build the feature model of a checkpoint for windows of `window_frames x input_size x input_size`, in eval mode
    on the CPU in float32.

    Args:
        checkpoint: a `.pt` / `.pth` file (tubemask pretraining or fine-tuning, official VideoMAE V1 / V2 pretraining
            or fine-tuned; read with `weights_only=True`), or a directory written by a `transformers` VideoMAE model's
            `save_pretrained` (`config.json` beside the weights).
        window_frames: frames per window, a multiple of the checkpoint's tubelet size.
        input_size: pixels per window side, a multiple of the checkpoint's patch size.
        num_heads: attention heads of a state-dict checkpoint; None reads them from the official width table.

    Returns:
        `(model, info)`.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: the checkpoint holds no VideoMAE encoder, its width has no known head count (pass `num_heads`),
            some of its tensors have no place in the model (named in the message), or the window does not divide
            into its cubes.
        ImportError: a Hugging Face directory without `transformers` installed.
    """
    path = Path(checkpoint)
    if path.is_dir():
        model, layout, notes = _from_hf_directory(path)
    elif path.is_file():
        model, layout, notes = _from_state_dict(path, window=(window_frames, input_size), num_heads=num_heads)
    else:
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: pass a .pt / .pth file or a directory saved with a transformers "
            "model's save_pretrained (download hub models first, e.g. with `hf download`)"
        )
    _window_grid(model.tokenizer, (window_frames, input_size), str(path))
    model.eval().requires_grad_(False)
    return model, _info(model, str(path.resolve()), layout, notes)


def _window_grid(tokenizer: CubeEmbedding, window: tuple[int, int], where: str) -> tuple[int, int, int]:
    """The token grid `(t, h, w)` of a `frames x size x size` window, or a ValueError naming what does not divide."""
    frames, size = window
    if frames % tokenizer.tubelet_size or size % tokenizer.patch_size:
        raise ValueError(
            f"window_frames={frames} must be a multiple of the tubelet size {tokenizer.tubelet_size} and "
            f"input_size={size} of the patch size {tokenizer.patch_size} of checkpoint {where}"
        )
    return (frames // tokenizer.tubelet_size, size // tokenizer.patch_size, size // tokenizer.patch_size)


def _from_hf_directory(path: Path) -> tuple[ClipFeatureModel, str, list[str]]:
    """A `save_pretrained` directory: the classifier's `fc_norm` for `VideoMAEForVideoClassification`, else the
    encoder of `VideoMAEModel` (a `VideoMAEForPreTraining` directory loads its encoder, the decoder is left out)."""
    if not (path / "config.json").is_file():
        raise ValueError(
            f"checkpoint {path} is a directory without config.json; a Hugging Face checkpoint is a directory written "
            "by save_pretrained, other checkpoints are single .pt / .pth files"
        )
    transformers = import_transformers(__name__)
    config = transformers.VideoMAEConfig.from_pretrained(path)
    architectures = list(getattr(config, "architectures", None) or [])
    if "VideoMAEForVideoClassification" in architectures:
        hf_class = transformers.VideoMAEForVideoClassification
    else:
        hf_class = transformers.VideoMAEModel
    hf_model, loading = hf_class.from_pretrained(path, output_loading_info=True)
    if loading.get("missing_keys"):
        raise ValueError(
            f"checkpoint {path}: {hf_class.__name__} lacks weights {sorted(loading['missing_keys'])[:8]} (they would "
            f"be random); config.architectures={architectures}"
        )
    hf_model.eval()
    notes = [f"loaded with transformers.{hf_class.__name__} from architectures {architectures}"]
    if hf_class is transformers.VideoMAEForVideoClassification:
        classifier = classifier_from_hf(hf_model)
        notes.append("classification layer not used")
        head = PooledFeature(classifier.head.fc_norm)
        tokenizer, encoder, pos_embed = classifier.tokenizer, classifier.encoder, classifier.pos_embed
    else:
        tokenizer, pos_embed, encoder = from_hf(hf_model)
        head = PooledFeature()
    model = ClipFeatureModel(encoder, tokenizer=tokenizer, head=head, pos_embed=pos_embed)
    return model.float(), f"hf:{hf_class.__name__}", notes


def _state_dict_shape(canonical: dict[str, Tensor], where: str, num_heads: int | None) -> dict[str, Any]:
    """The encoder's constructor arguments, read from the tensors of a canonical (official fine-tuned) state dict."""
    proj = canonical.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 5:
        raise ValueError(
            f"checkpoint {where} holds no VideoMAE cube embedding (patch_embed.proj.weight / tokenizer.proj.weight "
            f"/ encoder.patch_embed.proj.weight of 5 dims); first keys: {sorted(canonical)[:8]}"
        )
    dim, in_channels, tubelet, patch, patch_w = proj.shape
    if patch != patch_w:
        raise ValueError(f"checkpoint {where} has non-square patches {patch}x{patch_w}; tubemask needs square ones")
    blocks = {int(m.group(1)) for key in canonical if (m := _BLOCK.match(key))}
    if not blocks or blocks != set(range(max(blocks) + 1)):
        raise ValueError(f"checkpoint {where}: encoder blocks {sorted(blocks)} are not 0..depth-1")
    heads = num_heads if num_heads is not None else ENCODER_HEADS.get(dim)
    if heads is None:
        raise ValueError(
            f"checkpoint {where} has width {dim}, which no official preset has (known: {sorted(ENCODER_HEADS)}); "
            "pass the attention head count (--num-heads)"
        )
    hidden = canonical["blocks.0.mlp.fc1.weight"].shape[0]
    return {
        "embed_dim": int(dim),
        "depth": len(blocks),
        "num_heads": int(heads),
        "mlp_ratio": mlp_ratio_for(hidden, dim, what=f"checkpoint {where} blocks.0.mlp.fc1"),
        "qkv_bias": "blocks.0.attn.q_bias" in canonical,
        "final_norm": "norm.weight" in canonical,
        "tokenizer": {"tubelet_size": int(tubelet), "patch_size": int(patch), "in_channels": int(in_channels)},
    }


def _from_state_dict(
    path: Path, *, window: tuple[int, int], num_heads: int | None
) -> tuple[ClipFeatureModel, str, list[str]]:
    tensors, where = read_state_dict(path)
    canonical, _, layout = canonical_state_dict(tensors)
    shape = _state_dict_shape(canonical, where, num_heads)
    d = shape["embed_dim"]
    tokenizer = CubeEmbedding(d, **shape["tokenizer"])
    grid = _window_grid(tokenizer, window, where)
    encoder = ViTEncoder(
        d,
        depth=shape["depth"],
        num_heads=shape["num_heads"],
        mlp_ratio=shape["mlp_ratio"],
        qkv_bias=shape["qkv_bias"],
        norm_eps=1e-6,  # official and tubemask checkpoints use 1e-6 everywhere
        final_norm=shape["final_norm"],
    )
    pos_embed: nn.Module = SinusoidPositionEmbedding(d)
    table = canonical.get("pos_embed")
    if table is not None:
        table = table.reshape(-1, table.shape[-1]).float()
        if not torch.allclose(table, sinusoid_table(*table.shape), atol=1e-4):
            pos_embed = LearnedPositionEmbedding(d, grid)
    fc_norm = nn.LayerNorm(d, eps=1e-6) if "fc_norm.weight" in canonical else None
    model = ClipFeatureModel(encoder, tokenizer=tokenizer, head=PooledFeature(fc_norm), pos_embed=pos_embed)
    report = load_pretrained_encoder(model, tensors)
    unused = [k for k in report.unexpected if not k.startswith("head.")]
    if report.missing or unused:
        raise ValueError(
            f"checkpoint {where} does not fill the feature model: missing {report.missing[:8]}, tensors with no "
            f"place {unused[:8]}"
        )
    notes = list(report.notes)
    if any(k.startswith("head.") for k in report.unexpected + report.dropped):
        notes.append("classification layer not used")
    if isinstance(pos_embed, LearnedPositionEmbedding):
        notes.append(f"learned position table for the window's grid {grid} ({math.prod(grid)} tokens)")
    return model, layout, notes
