"""Conversion between tubemask and Hugging Face `transformers` VideoMAE models, weights copied exactly.

[from_hf][tubemask.interop.hf.from_hf] turns a `VideoMAEForPreTraining` into an `MAEWrapper` (a `VideoMAEModel` into
[HFEncoderParts][tubemask.interop.hf.HFEncoderParts]) and [to_hf][tubemask.interop.hf.to_hf] goes back; the names
of every weight on both sides, and what differs between `transformers` versions, are in
[tubemask.interop.hf_keys][]. What else differs between the two models, and how the converters handle it:

- HF `pixel_values` are `(b, t, c, h, w)`; tubemask clips are `(b, c, t, h, w)`: pass
  `pixel_values.permute(0, 2, 1, 3, 4)`. Masks (`bool_masked_pos`, True = masked) are the same tensor.
- HF's `use_mean_pooling=True` (its default) has no final encoder norm; tubemask then uses `final_norm=False`.
- HF's decoder norm is `nn.LayerNorm` with the default eps 1e-5 and its blocks use `layer_norm_eps` (default 1e-12);
  official checkpoints use 1e-6 everywhere. Each eps is copied as it is.
- HF un-normalises targets with the ImageNet mean / std only for 3 channels; other channel counts get
  `pixel_mean=None, pixel_std=None`. `norm_pix_loss` True / False is target `"norm_pix"` / `"pixels"`.
- HF's position tables are built for a fixed `num_frames x image_size`; tubemask's are computed per clip size, so
  [to_hf][tubemask.interop.hf.to_hf] takes the size as arguments.

`transformers` is optional: it is imported only inside the functions that need it.
"""

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor, nn

from tubemask.decoders import MAEDecoder
from tubemask.encoders import ViTEncoder
from tubemask.grid import token_grid
from tubemask.interop.hf_keys import (
    fit_hf_layout,
    hf_qv_bias,
    hf_qv_bias_field,
    hf_to_tubemask_state_dict,
    tubemask_to_hf_state_dict,
)
from tubemask.interop.widths import mlp_ratio_for
from tubemask.mae import MAEWrapper
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.pos_embed import SinusoidPositionEmbedding
from tubemask.tokenizers import CubeEmbedding

__all__ = ["HFEncoderParts", "encoder_parts_from_config", "from_hf", "import_transformers", "to_hf"]


class HFEncoderParts(NamedTuple):
    """The encoder side of a converted `VideoMAEModel`.

    Run it as `x = tokenizer(video, ids); x = x + pos_embed(ids, grid, x); encoder(x)`, the same steps as
    [MAEWrapper.forward_encoder][tubemask.mae.MAEWrapper.forward_encoder].

    Attributes:
        tokenizer: the cube embedding (HF `patch_embeddings.projection`).
        pos_embed: VideoMAE's fixed sinusoid for the encoder width.
        encoder: the ViT body, with a final norm only when HF has one (`use_mean_pooling=False`).
    """

    tokenizer: CubeEmbedding
    pos_embed: SinusoidPositionEmbedding
    encoder: ViTEncoder


def import_transformers(module: str = __name__) -> Any:
    """`transformers`, imported on first use; without it, an ImportError naming `module` and how to install it."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - exercised only without transformers
        raise ImportError(
            f"{module} needs the optional dependency `transformers` (pip install 'transformers>=4.40', "
            "or `pip install tubemask[dev]`)"
        ) from err
    return transformers


def _square(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"from_hf: tubemask needs square cubes, got config.{name}={value!r}")
        value = value[0]
    return int(value)


def _check_config(config: Any) -> None:
    if config.hidden_act != "gelu":
        raise ValueError(
            f"from_hf: config.hidden_act={config.hidden_act!r}; tubemask's MLP uses exact GELU, so only 'gelu' "
            "converts without changing the numbers"
        )
    if config.hidden_dropout_prob or config.attention_probs_dropout_prob:
        warnings.warn(
            "from_hf: HF dropout is copied into the encoder, but tubemask's MLP also drops after the activation and "
            "its decoder has no dropout, so outputs match in eval mode only",
            stacklevel=3,
        )


def encoder_parts_from_config(config: Any, *, final_norm: bool) -> tuple[CubeEmbedding, ViTEncoder]:
    """A tubemask cube embedding and ViT encoder shaped as a `transformers.VideoMAEConfig` says (weights not copied).

    Args:
        config: the HF config (`hidden_size`, `num_hidden_layers`, `intermediate_size`, `layer_norm_eps`, ...).
        final_norm: give the encoder a final LayerNorm (HF has one only with `use_mean_pooling=False`).

    Raises:
        ValueError: for non-square cubes or an MLP width no `mlp_ratio` reproduces.
    """
    d = config.hidden_size
    tokenizer = CubeEmbedding(
        d,
        tubelet_size=int(config.tubelet_size),
        patch_size=_square(config.patch_size, "patch_size"),
        in_channels=config.num_channels,
    )
    encoder = ViTEncoder(
        d,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=mlp_ratio_for(config.intermediate_size, d, what="config.intermediate_size"),
        qkv_bias=hf_qv_bias(config),
        drop_rate=float(config.hidden_dropout_prob),
        attn_drop_rate=float(config.attention_probs_dropout_prob),
        norm_eps=float(config.layer_norm_eps),
        final_norm=final_norm,
    )
    return tokenizer, encoder


def _load_into(module: nn.Module, state_dict: Mapping[str, Tensor], *, where: str) -> None:
    """`load_state_dict(strict=True)` with an error that names both sides."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    module.load_state_dict(state_dict, strict=True)


def _like(module: nn.Module, source: nn.Module) -> nn.Module:
    """Move `module` to the device and floating dtype of `source`, and give it the same train / eval mode."""
    param = next(source.parameters(), None)
    if param is not None:
        module.to(device=param.device, dtype=param.dtype)
    return module.train(source.training)


def from_hf(hf_model: nn.Module) -> MAEWrapper | HFEncoderParts:
    """Convert a Hugging Face VideoMAE model to tubemask, copying every weight.

    Args:
        hf_model: a `transformers.VideoMAEForPreTraining` (any config it accepts: tubelet and patch sizes, channels,
            with or without the final encoder norm, any `layer_norm_eps`, `qv_bias` on or off, `norm_pix_loss` on or
            off, decoder sizes) or a `transformers.VideoMAEModel`.

    Returns:
        For `VideoMAEForPreTraining`, an [MAEWrapper][tubemask.mae.MAEWrapper] that gives the same loss and
        predictions for the same clip (permuted to `(b, c, t, h, w)`) and mask. For `VideoMAEModel`, the
        [HFEncoderParts][tubemask.interop.hf.HFEncoderParts] `(tokenizer, pos_embed, encoder)`. The result is on the
        source's device and dtype, in its train / eval mode.

    Raises:
        TypeError: for other model classes (the video classifier is not converted yet).
        ValueError: for configs tubemask cannot reproduce exactly: `hidden_act` other than `"gelu"`, non-square
            patches, or an MLP width no `mlp_ratio` gives.
    """
    transformers = import_transformers()
    config = getattr(hf_model, "config", None)
    if isinstance(hf_model, transformers.VideoMAEModel):
        _check_config(config)
        tokenizer, encoder = encoder_parts_from_config(config, final_norm=hf_model.layernorm is not None)
        sd = hf_to_tubemask_state_dict(hf_model.state_dict())
        _load_into(tokenizer, _sub(sd, "tokenizer."), where="from_hf(VideoMAEModel) tokenizer")
        _load_into(encoder, _sub(sd, "encoder."), where="from_hf(VideoMAEModel) encoder")
        return HFEncoderParts(
            _like(tokenizer, hf_model), SinusoidPositionEmbedding(config.hidden_size), _like(encoder, hf_model)
        )
    if not isinstance(hf_model, transformers.VideoMAEForPreTraining):
        raise TypeError(
            f"from_hf converts transformers.VideoMAEForPreTraining or VideoMAEModel, got {type(hf_model).__name__}"
        )
    _check_config(config)
    tokenizer, encoder = encoder_parts_from_config(config, final_norm=hf_model.videomae.layernorm is not None)
    k = tokenizer.tubelet_size * tokenizer.patch_size**2 * tokenizer.in_channels
    dd = config.decoder_hidden_size
    decoder = MAEDecoder(
        dd,
        depth=config.decoder_num_hidden_layers,
        num_heads=config.decoder_num_attention_heads,
        out_dim=k,
        mlp_ratio=mlp_ratio_for(config.decoder_intermediate_size, dd, what="config.decoder_intermediate_size"),
        qkv_bias=hf_qv_bias(config),
        norm_eps=float(config.layer_norm_eps),
        final_norm_eps=float(hf_model.decoder.norm.eps),
    )
    rgb = config.num_channels == 3
    model = MAEWrapper(
        encoder,
        tokenizer=tokenizer,
        decoder=decoder,
        target="norm_pix" if config.norm_pix_loss else "pixels",
        pixel_mean=IMAGENET_MEAN if rgb else None,
        pixel_std=IMAGENET_STD if rgb else None,
    )
    _load_into(model, hf_to_tubemask_state_dict(hf_model.state_dict()), where="from_hf(VideoMAEForPreTraining)")
    return _like(model, hf_model)


def _sub(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _only_eps(norms: list[nn.Module], what: str) -> float:
    eps = {float(n.eps) for n in norms if isinstance(n, nn.LayerNorm)}
    if len(eps) > 1:
        raise ValueError(f"to_hf: HF VideoMAE has one LayerNorm eps for {what}, the model mixes {sorted(eps)}")
    return eps.pop() if eps else 1e-6


def to_hf(model: MAEWrapper, *, num_frames: int = 16, image_size: int = 224) -> nn.Module:
    """Convert a tubemask VideoMAE to a `transformers.VideoMAEForPreTraining`, copying every weight.

    tubemask works on any clip size; HF builds its position tables for one, so pass the clip size the HF model will
    see.

    Args:
        model: an [MAEWrapper][tubemask.mae.MAEWrapper] with a [ViTEncoder][tubemask.encoders.ViTEncoder], the
            default sinusoid position embeddings and an `"norm_pix"` or `"pixels"` target.
        num_frames: frames per clip (a multiple of the tubelet size).
        image_size: clip height and width in pixels (a multiple of the patch size).

    Returns:
        A `VideoMAEForPreTraining` on the model's device and dtype, in its train / eval mode.

    Raises:
        ImportError: without `transformers`.
        ValueError: for models HF cannot express: another encoder class, learned or 3-D position embeddings, the
            `"norm_pix_joint"` target, pixel statistics other than HF's (ImageNet for 3 channels, none otherwise),
            `q_bias` in one of encoder / decoder only, blocks of different widths or head counts, or a LayerNorm eps
            that differs between blocks (HF shares one eps between encoder and decoder blocks). A decoder final norm
            eps other than HF's fixed 1e-5 (official checkpoints: 1e-6) only warns: the numbers then differ by
            rounding-level amounts.
    """
    transformers = import_transformers()
    encoder, decoder, tokenizer = model.encoder, model.decoder, model.tokenizer
    if not isinstance(encoder, ViTEncoder):
        raise ValueError(f"to_hf: the encoder must be a tubemask ViTEncoder, got {type(encoder).__name__}")
    for name, pe in (("pos_embed", model.pos_embed), ("decoder.pos_embed", decoder.pos_embed)):
        if type(pe) is not SinusoidPositionEmbedding:
            raise ValueError(f"to_hf: HF VideoMAE uses the fixed 1-D sinusoid; model.{name} is {type(pe).__name__}")
    if model.target == "norm_pix_joint":
        raise ValueError("to_hf: HF has no 'norm_pix_joint' target; use target 'norm_pix' or 'pixels'")
    channels = tokenizer.in_channels
    hf_stats = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (None, None)
    stats = (
        tuple(model.pixel_mean) if model.pixel_mean is not None else None,
        tuple(model.pixel_std) if model.pixel_std is not None else None,
    )
    if stats != hf_stats:
        raise ValueError(
            f"to_hf: HF un-normalises {channels}-channel clips with mean/std {hf_stats}, the model uses {stats}"
        )
    if channels != 3 and model.target == "pixels":
        raise ValueError("to_hf: HF cannot compute 'pixels' targets for clips that are not 3-channel")
    token_grid(num_frames, image_size, image_size, tubelet_size=tokenizer.tubelet_size, patch_size=tokenizer.patch_size)

    blocks = list(encoder.blocks) + list(decoder.blocks)
    has_bias = {b.attn.q_bias is not None for b in blocks}
    if len(has_bias) > 1:
        raise ValueError("to_hf: HF's qv_bias is shared by encoder and decoder; the model has q/v biases in one only")
    for name, part in (("encoder", encoder.blocks), ("decoder", decoder.blocks)):
        shapes = {(b.attn.num_heads, b.mlp.fc1.out_features) for b in part}
        if len(shapes) > 1:
            raise ValueError(f"to_hf: HF needs equal (heads, MLP width) in every {name} block, got {sorted(shapes)}")
    act = {type(b.mlp.act) for b in blocks}
    if act - {nn.GELU} or any(b.mlp.act.approximate != "none" for b in blocks):
        raise ValueError("to_hf: HF's 'gelu' is exact GELU; the model's MLPs use another activation")
    block_eps = _only_eps([n for b in blocks for n in (b.norm1, b.norm2)] + [encoder.norm], "encoder and decoder")
    if decoder.norm.eps != 1e-5:
        warnings.warn(
            f"to_hf: HF's decoder norm has eps 1e-5, the model's has {decoder.norm.eps}; outputs differ slightly",
            stacklevel=2,
        )
    d, dd = tokenizer.embed_dim, decoder.embed_dim
    config = transformers.VideoMAEConfig(
        image_size=image_size,
        patch_size=tokenizer.patch_size,
        num_channels=channels,
        num_frames=num_frames,
        tubelet_size=tokenizer.tubelet_size,
        hidden_size=d,
        num_hidden_layers=len(encoder.blocks),
        num_attention_heads=encoder.blocks[0].attn.num_heads if len(encoder.blocks) else 1,
        intermediate_size=encoder.blocks[0].mlp.fc1.out_features if len(encoder.blocks) else 4 * d,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=block_eps,
        **{hf_qv_bias_field(transformers.VideoMAEConfig): has_bias.pop() if has_bias else True},
        use_mean_pooling=isinstance(encoder.norm, nn.Identity),
        decoder_hidden_size=dd,
        decoder_num_hidden_layers=len(decoder.blocks),
        decoder_num_attention_heads=decoder.blocks[0].attn.num_heads if len(decoder.blocks) else 1,
        decoder_intermediate_size=decoder.blocks[0].mlp.fc1.out_features if len(decoder.blocks) else 4 * dd,
        norm_pix_loss=model.target == "norm_pix",
    )
    hf_model = transformers.VideoMAEForPreTraining(config)
    _load_into(hf_model, fit_hf_layout(tubemask_to_hf_state_dict(model.state_dict()), hf_model), where="to_hf")
    return _like(hf_model, model)
