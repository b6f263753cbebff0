"""Conversion between a tubemask [VideoClassifier][tubemask.classification.VideoClassifier] and Hugging Face
`transformers.VideoMAEForVideoClassification`, weights copied exactly.

| Hugging Face | tubemask |
|---|---|
| `videomae.embeddings.patch_embeddings.projection` | `tokenizer.proj` |
| `videomae.encoder.layer.{i}.*` | `encoder.blocks.{i}.*` (query/key/value fused into `attn.qkv`, as in `tubemask.interop.hf`) |
| `fc_norm` (`use_mean_pooling=True`) | `head.fc_norm` |
| `classifier` | `head.head` |

Only HF's mean-pooling layout converts (`use_mean_pooling=True`, its default and the fine-tuned VideoMAE checkpoints'):
without it HF classifies the first token (`sequence_output[:, 0]`), which VideoMAE has no class token for. HF's
`fc_norm` is a plain `nn.LayerNorm` (eps 1e-5) while its blocks use `config.layer_norm_eps`; both are copied.
HF `pixel_values` are `(b, t, c, h, w)`; tubemask clips are `(b, c, t, h, w)`: pass `pixel_values.permute(0, 2, 1, 3, 4)`.
The q/v bias switch and the attention bias layout follow the installed `transformers` as in `tubemask.interop.hf`
(`qv_bias` or `qkv_bias`; transformers 5.17's key bias, which softmax cancels, is dropped in and written as zeros out).
`transformers` is imported only when a function is called.
"""

import warnings

from torch import nn

from tubemask.classification import VideoClassifier
from tubemask.encoders import ViTEncoder
from tubemask.grid import token_grid
from tubemask.heads import ClassificationHead
from tubemask.interop.hf import encoder_parts_from_config, import_transformers
from tubemask.interop.hf_keys import (
    fit_hf_layout,
    hf_qv_bias_field,
    hf_to_tubemask_state_dict,
    tubemask_to_hf_state_dict,
)
from tubemask.pos_embed import SinusoidPositionEmbedding

__all__ = ["classifier_from_hf", "classifier_to_hf"]

_HEAD_RENAMES = (("fc_norm.", "head.fc_norm."), ("classifier.", "head.head."))


def _like(module: nn.Module, source: nn.Module) -> nn.Module:
    param = next(source.parameters(), None)
    if param is not None:
        module.to(device=param.device, dtype=param.dtype)
    return module.train(source.training)


def _load_exact(module: nn.Module, state_dict: dict, *, where: str) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    module.load_state_dict(state_dict, strict=True)


def classifier_from_hf(hf_model: nn.Module) -> VideoClassifier:
    """Convert a `transformers.VideoMAEForVideoClassification` to a
    [VideoClassifier][tubemask.classification.VideoClassifier] giving the same logits.

    The head is a [ClassificationHead][tubemask.heads.ClassificationHead] with no dropout (HF has none before its
    classifier) and HF's `fc_norm` eps; the encoder has no final norm (HF's mean-pooling layout).

    Args:
        hf_model: the HF classifier, any config with `use_mean_pooling=True`, `hidden_act="gelu"`, square patches.

    Returns:
        The classifier on the source's device and dtype, in its train / eval mode.

    Raises:
        ImportError: without `transformers`.
        TypeError: for another model class.
        ValueError: for `use_mean_pooling=False` (HF then reads the first token), `num_labels=0`, another activation
            than exact GELU, non-square patches, or an MLP width no `mlp_ratio` gives.
    """
    transformers = import_transformers(__name__)
    if not isinstance(hf_model, transformers.VideoMAEForVideoClassification):
        raise TypeError(
            f"classifier_from_hf converts transformers.VideoMAEForVideoClassification, got {type(hf_model).__name__} "
            "(for VideoMAEForPreTraining / VideoMAEModel use tubemask.interop.hf.from_hf)"
        )
    config = hf_model.config
    if not config.use_mean_pooling or hf_model.fc_norm is None:
        raise ValueError(
            "classifier_from_hf: config.use_mean_pooling=False classifies HF's first token (sequence_output[:, 0]); "
            "VideoMAE has no class token and tubemask converts only the mean-pooling layout (use_mean_pooling=True)"
        )
    if config.num_labels <= 0:
        raise ValueError("classifier_from_hf: config.num_labels must be positive (HF's num_labels=0 has no classifier)")
    if config.hidden_act != "gelu":
        raise ValueError(
            f"classifier_from_hf: config.hidden_act={config.hidden_act!r}; tubemask's MLP uses exact GELU ('gelu')"
        )
    if config.hidden_dropout_prob or config.attention_probs_dropout_prob:
        warnings.warn(
            "classifier_from_hf: HF dropout is copied into the encoder, but tubemask's MLP also drops after the "
            "activation, so outputs match in eval mode only",
            stacklevel=2,
        )
    d = config.hidden_size
    tokenizer, encoder = encoder_parts_from_config(
        config, final_norm=False
    )  # fine-tuned VideoMAE: fc_norm, no final norm
    head = ClassificationHead(d, config.num_labels, dropout=0.0, fc_norm=True, norm_eps=float(hf_model.fc_norm.eps))
    model = VideoClassifier(encoder, tokenizer=tokenizer, head=head, pos_embed=SinusoidPositionEmbedding(d))

    hf_sd = hf_model.state_dict()
    head_sd = {}
    body_sd = {}
    for key, value in hf_sd.items():
        new = next((tm + key[len(hf) :] for hf, tm in _HEAD_RENAMES if key.startswith(hf)), None)
        if new is not None:
            head_sd[new] = value
        else:
            body_sd[key] = value
    sd = hf_to_tubemask_state_dict(body_sd)
    sd.update(head_sd)
    _load_exact(model, sd, where="classifier_from_hf")
    return _like(model, hf_model)


def classifier_to_hf(classifier: VideoClassifier, *, num_frames: int = 16, image_size: int = 224) -> nn.Module:
    """Convert a [VideoClassifier][tubemask.classification.VideoClassifier] to a
    `transformers.VideoMAEForVideoClassification` giving the same logits (in eval mode).

    HF builds its position table for one clip size, so pass the size the HF model will see.

    Args:
        classifier: a classifier with a [ViTEncoder][tubemask.encoders.ViTEncoder] without final norm, the fixed
            sinusoid positions and a [ClassificationHead][tubemask.heads.ClassificationHead] with `fc_norm`.
        num_frames: frames per clip (a multiple of the tubelet size).
        image_size: clip height and width in pixels (a multiple of the patch size).

    Returns:
        The HF model on the classifier's device and dtype, in its train / eval mode. Its `fc_norm.eps` is the
        classifier's; a value other than HF's fixed 1e-5 warns, because `save_pretrained` / `from_pretrained` would
        rebuild it with 1e-5.

    Raises:
        ImportError: without `transformers`.
        ValueError: for classifiers HF cannot express: another encoder, head or position class, an encoder final
            norm (HF's mean-pooling layout has none), a head without `fc_norm`, blocks of different widths, head
            counts or LayerNorm eps, or a clip size the cubes do not divide.
    """
    transformers = import_transformers(__name__)
    encoder, tokenizer, head = classifier.encoder, classifier.tokenizer, classifier.head
    if not isinstance(encoder, ViTEncoder):
        raise ValueError(f"classifier_to_hf: the encoder must be a tubemask ViTEncoder, got {type(encoder).__name__}")
    if not isinstance(encoder.norm, nn.Identity):
        raise ValueError(
            "classifier_to_hf: the encoder has a final norm; HF's mean-pooling classifier has none (build the "
            "classifier with final_norm=False)"
        )
    if type(classifier.pos_embed) is not SinusoidPositionEmbedding:
        raise ValueError(
            f"classifier_to_hf: HF VideoMAE uses the fixed 1-D sinusoid; pos_embed is {type(classifier.pos_embed).__name__}"
        )
    if not isinstance(head, ClassificationHead) or not isinstance(head.fc_norm, nn.LayerNorm):
        raise ValueError("classifier_to_hf: the head must be a ClassificationHead with fc_norm=True (HF's layout)")
    token_grid(num_frames, image_size, image_size, tubelet_size=tokenizer.tubelet_size, patch_size=tokenizer.patch_size)
    blocks = list(encoder.blocks)
    if not blocks:
        raise ValueError("classifier_to_hf: the encoder has no blocks")
    shapes = {(b.attn.num_heads, b.mlp.fc1.out_features) for b in blocks}
    if len(shapes) > 1:
        raise ValueError(f"classifier_to_hf: HF needs equal (heads, MLP width) in every block, got {sorted(shapes)}")
    eps = {float(n.eps) for b in blocks for n in (b.norm1, b.norm2)}
    if len(eps) > 1:
        raise ValueError(f"classifier_to_hf: HF has one layer_norm_eps, the blocks mix {sorted(eps)}")
    bias = {b.attn.q_bias is not None for b in blocks}
    if len(bias) > 1:
        raise ValueError(
            "classifier_to_hf: HF's qv_bias is shared by all blocks; some blocks have q/v biases, some not"
        )
    if any(type(b.mlp.act) is not nn.GELU or b.mlp.act.approximate != "none" for b in blocks):
        raise ValueError("classifier_to_hf: HF's 'gelu' is exact GELU; the model's MLPs use another activation")
    d = tokenizer.embed_dim
    config = transformers.VideoMAEConfig(
        image_size=image_size,
        patch_size=tokenizer.patch_size,
        num_channels=tokenizer.in_channels,
        num_frames=num_frames,
        tubelet_size=tokenizer.tubelet_size,
        hidden_size=d,
        num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads,
        intermediate_size=blocks[0].mlp.fc1.out_features,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=eps.pop(),
        **{hf_qv_bias_field(transformers.VideoMAEConfig): bias.pop()},  # qv_bias, or qkv_bias before transformers 5.24
        use_mean_pooling=True,
        num_labels=head.num_classes,
    )
    hf_model = transformers.VideoMAEForVideoClassification(config)
    if head.fc_norm.eps != hf_model.fc_norm.eps:
        warnings.warn(
            f"classifier_to_hf: the head's fc_norm eps {head.fc_norm.eps} replaces HF's fixed {hf_model.fc_norm.eps} "
            "on this instance; a save_pretrained / from_pretrained round trip rebuilds it with HF's value",
            stacklevel=2,
        )
        hf_model.fc_norm.eps = head.fc_norm.eps
    sd = classifier.state_dict()
    body = {k: v for k, v in sd.items() if k.startswith(("tokenizer.", "encoder."))}
    out = tubemask_to_hf_state_dict(body)
    out.update({hf + k[len(tm) :]: v for k, v in sd.items() for hf, tm in _HEAD_RENAMES if k.startswith(tm)})
    _load_exact(hf_model, fit_hf_layout(out, hf_model), where="classifier_to_hf")
    return _like(hf_model, classifier)
