"""State-dict names between Hugging Face `transformers` VideoMAE and tubemask, tensors untouched: pure functions
that [tubemask.interop.hf][] (pretraining models) and [tubemask.interop.hf_classification][] (classifiers) build on.

| Hugging Face (`VideoMAEForPreTraining`) | tubemask (`MAEWrapper`) |
|---|---|
| `videomae.embeddings.patch_embeddings.projection` | `tokenizer.proj` |
| `videomae.encoder.layer.{i}.layernorm_before` / `layernorm_after` | `encoder.blocks.{i}.norm1` / `norm2` |
| `...attention.attention.{query,key,value}.weight` | `encoder.blocks.{i}.attn.qkv.weight` (rows q, k, v) |
| `...attention.attention.query.bias` / `value.bias` | `encoder.blocks.{i}.attn.q_bias` / `v_bias` |
| `...attention.attention.q_bias` / `v_bias` (transformers 4.x names) | `encoder.blocks.{i}.attn.q_bias` / `v_bias` |
| `...attention.attention.key.bias` (transformers 5.17 only) | dropped (see below) |
| `...attention.output.dense` | `encoder.blocks.{i}.attn.proj` |
| `...intermediate.dense` / `...output.dense` | `encoder.blocks.{i}.mlp.fc1` / `mlp.fc2` |
| `videomae.layernorm` (only when `use_mean_pooling=False`) | `encoder.norm` |
| `encoder_to_decoder` | `encoder_to_decoder` |
| `mask_token` | `decoder.mask_token` |
| `decoder.decoder_layers.{i}.*` | `decoder.blocks.{i}.*` (as the encoder blocks) |
| `decoder.norm` / `decoder.head` | `decoder.norm` / `decoder.head` |

The q/v bias switch and layout depend on the `transformers` version (see
[hf_qv_bias][tubemask.interop.hf_keys.hf_qv_bias]): 4.x has `config.qkv_bias` and `q_bias` / `v_bias` parameters; 5.17
has `config.qkv_bias` and gives query, key *and* value a bias (`nn.Linear(bias=qkv_bias)`); 5.24 has `config.qv_bias`
and biases on query and value only, like VideoMAE itself. A key bias `b` adds `q . b` to every score of a query, the
same for all keys, so softmax cancels it: it is dropped on the way in and written as zeros on the way out (what 5.17
initialises and loads it as, since VideoMAE checkpoints have none).

Nothing here imports `transformers`: the functions read names, shapes and config fields.
"""

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "fit_hf_layout",
    "hf_qv_bias",
    "hf_qv_bias_field",
    "hf_to_tubemask_state_dict",
    "tubemask_to_hf_state_dict",
]

# HF block names -> tubemask block names, matched on the text after `layer.{i}.` (query/key/value weights are fused
# separately). "attention.output.dense." must come before "output.dense.".
_BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)
_QKV = ("query", "key", "value")
_HF_BLOCK = re.compile(r"^(videomae\.encoder\.layer|decoder\.decoder_layers)\.(\d+)\.(.+)$")
_TM_BLOCK = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")
_TOP_RENAMES: tuple[tuple[str, str], ...] = (
    ("videomae.embeddings.patch_embeddings.projection.", "tokenizer.proj."),
    ("videomae.layernorm.", "encoder.norm."),
    ("encoder_to_decoder.", "encoder_to_decoder."),
    ("mask_token", "decoder.mask_token"),
    ("decoder.norm.", "decoder.norm."),
    ("decoder.head.", "decoder.head."),
)


def hf_to_tubemask_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a `VideoMAEForPreTraining` state dict to `MAEWrapper` names (see the module table).

    A `VideoMAEModel` state dict (keys without the `videomae.` prefix) gives the `tokenizer.*` and `encoder.*` keys.
    Tensors are not copied; the fused `qkv` weight is a new tensor.

    Raises:
        ValueError: for keys that have no tubemask counterpart (e.g. a classifier).

    Both the `query.bias` / `value.bias` names (transformers 5.x) and `q_bias` / `v_bias` (4.x) are read; a
    `key.bias` (transformers 5.17) is dropped, since softmax cancels it (see the module notes).
    """
    sd = dict(state_dict)
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in sd):  # a bare VideoMAEModel
        sd = {f"videomae.{k}": v for k, v in sd.items()}
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        match = _HF_BLOCK.match(key)
        if match is not None:
            owner = "encoder" if match.group(1).startswith("videomae") else "decoder"
            prefix = f"{owner}.blocks.{match.group(2)}."
            rest = match.group(3)
            if rest.startswith("attention.attention."):
                name = rest[len("attention.attention.") :]
                if name in ("query.weight", "key.weight", "value.weight"):
                    qkv.setdefault(prefix, {})[name.split(".")[0]] = value
                    continue
                if name in ("query.bias", "q_bias"):
                    out[prefix + "attn.q_bias"] = value
                    continue
                if name in ("value.bias", "v_bias"):
                    out[prefix + "attn.v_bias"] = value
                    continue
                if name == "key.bias":  # transformers 5.17: shifts each query's scores by a constant; softmax drops it
                    continue
            else:
                new = next((tm + rest[len(hf) :] for hf, tm in _BLOCK_RENAMES if rest.startswith(hf)), None)
                if new is not None:
                    out[prefix + new] = value
                    continue
        else:
            new = next((tm + key[len(hf) :] for hf, tm in _TOP_RENAMES if key.startswith(hf)), None)
            if new is not None:
                out[new] = value
                continue
        unknown.append(key)
    if unknown:
        raise ValueError(f"hf_to_tubemask_state_dict: no tubemask counterpart for HF keys {unknown[:10]}")
    for prefix, parts in qkv.items():
        if set(parts) != set(_QKV):
            raise ValueError(f"hf_to_tubemask_state_dict: {prefix} has {sorted(parts)} of query/key/value weights")
        out[prefix + "attn.qkv.weight"] = torch.cat([parts[p] for p in _QKV], dim=0)
    return out


def tubemask_to_hf_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an `MAEWrapper` state dict to `VideoMAEForPreTraining` names; the inverse of
    [hf_to_tubemask_state_dict][tubemask.interop.hf_keys.hf_to_tubemask_state_dict].

    Raises:
        ValueError: for keys that have no HF counterpart (e.g. a learned position table).
    """
    inverse_top = [(tm, hf) for hf, tm in _TOP_RENAMES]
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        match = _TM_BLOCK.match(key)
        if match is not None:
            owner = "videomae.encoder.layer" if match.group(1) == "encoder" else "decoder.decoder_layers"
            prefix = f"{owner}.{match.group(2)}."
            rest = match.group(3)
            if rest == "attn.qkv.weight":
                for name, part in zip(_QKV, value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}attention.attention.{name}.weight"] = part
                continue
            if rest in ("attn.q_bias", "attn.v_bias"):
                out[f"{prefix}attention.attention.{'query' if rest == 'attn.q_bias' else 'value'}.bias"] = value
                continue
            new = next((hf + rest[len(tm) :] for hf, tm in _BLOCK_RENAMES if rest.startswith(tm)), None)
            if new is not None:
                out[prefix + new] = value
                continue
        else:
            new = next((hf + key[len(tm) :] for tm, hf in inverse_top if key.startswith(tm)), None)
            if new is not None:
                out[new] = value
                continue
        unknown.append(key)
    if unknown:
        raise ValueError(f"tubemask_to_hf_state_dict: no HF VideoMAE counterpart for keys {unknown[:10]}")
    return out


def hf_qv_bias_field(config_or_class: Any) -> str:
    """The `VideoMAEConfig` field that switches HF's attention biases: `qv_bias` from transformers 5.24 (a dataclass
    field, so a class attribute), `qkv_bias` in 5.17 and 4.x. Read on the class: a 5.17 config given `qv_bias=...`
    keeps it as an inert extra attribute."""
    cls = config_or_class if isinstance(config_or_class, type) else type(config_or_class)
    return "qv_bias" if hasattr(cls, "qv_bias") else "qkv_bias"


def hf_qv_bias(config: Any) -> bool:
    """Whether a `transformers.VideoMAEConfig` gives its attention query and value biases, on any `transformers`.

    transformers 5.24 reads `config.qv_bias`; 5.17 and 4.x read `config.qkv_bias` (5.17 then also biases the key,
    which softmax cancels). This reads the field the installed version's model is built from.
    """
    return bool(getattr(config, hf_qv_bias_field(config), True))


def fit_hf_layout(state_dict: dict[str, Tensor], hf_model: nn.Module) -> dict[str, Tensor]:
    """Adapt [tubemask_to_hf_state_dict][tubemask.interop.hf_keys.tubemask_to_hf_state_dict]'s 5.24 names to the layout
    of `hf_model`'s `transformers`: `q_bias` / `v_bias` for 4.x, and zero key biases where 5.17 has them."""
    expected = hf_model.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key not in expected:
            for new, old in (("q_bias", "query.bias"), ("v_bias", "value.bias")):
                if key.endswith(f"attention.attention.{old}"):
                    alt = key[: -len(old)] + new
                    if alt in expected:
                        key = alt
                        break
        out[key] = value
    for key, ref in expected.items():
        if key.endswith("attention.attention.key.bias") and key not in out:
            weight = out.get(key[: -len("bias")] + "weight")
            like = weight if weight is not None else ref
            out[key] = torch.zeros(ref.shape, dtype=like.dtype, device=like.device)
    return out
