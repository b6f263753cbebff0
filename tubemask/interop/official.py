"""Loading official VideoMAE V1 / V2 pretraining checkpoints (MCG-NJU/VideoMAE, OpenGVLab/VideoMAEv2).

Official names already match tubemask's except for two:

| official | tubemask (`MAEWrapper`) |
|---|---|
| `encoder.patch_embed.proj.{weight,bias}` | `tokenizer.proj.{weight,bias}` |
| `mask_token` | `decoder.mask_token` |
| `encoder.blocks.{i}.*`, `encoder.norm`, `encoder_to_decoder`, `decoder.blocks.{i}.*`, `decoder.norm`, `decoder.head` | same |
| `pos_embed`, `encoder.pos_embed`, `decoder.pos_embed` (fixed sinusoid, V2) | dropped (computed on the fly) |

Prefixes left by `DistributedDataParallel` (`module.`) and `torch.compile` (`_orig_mod.`) are removed. Files are read
with `torch.load(..., map_location="cpu", weights_only=True)`: no code in a checkpoint runs. The `args` namespace that
training scripts save next to the weights is allowed through (`argparse.Namespace` only).
"""

import argparse
import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from tubemask.interop.widths import mlp_ratio_for
from tubemask.mae import MAEWrapper
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.pos_embed import sinusoid_table
from tubemask.targets import TargetKind

__all__ = [
    "ENCODER_HEADS",
    "DECODER_HEADS",
    "OfficialLayout",
    "read_official",
    "official_to_tubemask_state_dict",
    "tubemask_to_official_state_dict",
    "infer_official_layout",
    "load_official",
]

ENCODER_HEADS: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
"""Attention heads of the official encoders by width (ViT-Ti/S/B/L/H and V2's ViT-g)."""
DECODER_HEADS: dict[int, int] = {96: 3, 192: 3, 384: 6, 512: 8, 640: 8}
"""Attention heads of the official decoders by width (96: tubemask's tiny preset)."""

_POS_EMBED_KEYS = ("pos_embed", "encoder.pos_embed", "decoder.pos_embed")
_RENAMES: tuple[tuple[str, str], ...] = (
    ("encoder.patch_embed.proj.", "tokenizer.proj."),
    ("mask_token", "decoder.mask_token"),
)
_WRAPPER_SEGMENTS = ("module", "_orig_mod")

Source = str | os.PathLike | Mapping[str, object]


def _allow_namespace() -> contextlib.AbstractContextManager:
    """Let `weights_only` unpickling build the `argparse.Namespace` of saved training args (torch >= 2.5)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals is not None else contextlib.nullcontext()


def _describe(source: Source) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<in-memory checkpoint>"


def read_official(source: Source) -> dict[str, Tensor]:
    """The model state dict of an official checkpoint, with wrapper prefixes removed and names still official.

    Args:
        source: a path to a `.pth` file, or an already loaded object: a dict with a `model` or `module` entry
            (`checkpoint-<epoch>.pth` layout) or a raw state dict.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: when the file cannot be read with `weights_only=True`, or holds no state dict.
    """
    where = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"load_official: no checkpoint file at {where}")
        try:
            with _allow_namespace():
                obj = torch.load(source, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"load_official: {where} cannot be read with torch.load(weights_only=True) (it pickles objects "
                f"other than tensors and plain containers). Load it yourself in a trusted setting and pass "
                f"checkpoint['model'] instead. Details: {str(err).splitlines()[0]}"
            ) from err
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise ValueError(f"load_official: {where} holds a {type(obj).__name__}, expected a dict")
    for entry in ("model", "module"):
        if isinstance(obj.get(entry), Mapping):
            obj = obj[entry]
            break
    else:
        if not all(isinstance(v, Tensor) for v in obj.values()):
            raise ValueError(
                f"load_official: {where} has neither a 'model' nor a 'module' entry nor only tensors; "
                f"top-level keys: {sorted(obj)[:10]}"
            )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ValueError(f"load_official: the state dict in {where} has non-tensor entries {not_tensors[:10]}")
    return {_strip(k): v for k, v in obj.items()}


def _strip(key: str) -> str:
    """Remove `module.` and `_orig_mod.` segments (DDP / torch.compile wrappers)."""
    return ".".join(part for part in key.split(".") if part not in _WRAPPER_SEGMENTS)


def official_to_tubemask_state_dict(
    state_dict: Mapping[str, Tensor], *, where: str = "state dict"
) -> dict[str, Tensor]:
    """Rename an official VideoMAE pretraining state dict to `MAEWrapper` names (see the module table).

    Wrapper prefixes are removed; fixed sinusoid position tables are checked and dropped.

    Args:
        state_dict: official names, optionally with `module.` / `_orig_mod.` prefixes.
        where: how errors name the source (e.g. the file).

    Raises:
        ValueError: when a stored position table is not the fixed sinusoid (a learned table tubemask's default
            `MAEWrapper` would silently ignore).
    """
    out: dict[str, Tensor] = {}
    for raw_key, value in state_dict.items():
        key = _strip(raw_key)
        if key in _POS_EMBED_KEYS:
            _check_sinusoid(key, value, where)
            continue
        new = next((tm + key[len(off) :] for off, tm in _RENAMES if key.startswith(off)), key)
        out[new] = value
    return out


def tubemask_to_official_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an `MAEWrapper` state dict to official VideoMAE names; the inverse of
    [official_to_tubemask_state_dict][tubemask.interop.official.official_to_tubemask_state_dict]."""
    return {_official_name(key): value for key, value in state_dict.items()}


def _official_name(key: str) -> str:
    return next((off + key[len(tm) :] for off, tm in _RENAMES if key.startswith(tm)), key)


def _check_sinusoid(key: str, value: Tensor, where: str) -> None:
    table = value.detach().float().reshape(-1, value.shape[-1])
    expected = sinusoid_table(table.shape[0], table.shape[1])
    if not torch.allclose(table, expected, atol=1e-4):
        raise ValueError(
            f"load_official: {key} in {where} is not VideoMAE's fixed sinusoid table (a learned position embedding?); "
            "tubemask computes the sinusoid on the fly, so this checkpoint needs a model with a learned table"
        )


@dataclass(frozen=True)
class OfficialLayout:
    """What the tensor shapes of an official checkpoint say about its model.

    Attributes:
        size: widths, depths and heads (heads from [ENCODER_HEADS][tubemask.interop.official.ENCODER_HEADS] and
            [DECODER_HEADS][tubemask.interop.official.DECODER_HEADS]).
        tubelet_size: frames per cube, from the Conv3d kernel.
        patch_size: pixels per cube side, from the Conv3d kernel.
        in_channels: clip channels, from the Conv3d kernel.
        mlp_ratio: MLP inner width over the token width, from `mlp.fc1`.
        final_norm: whether `encoder.norm` is present.
    """

    size: ViTSize
    tubelet_size: int
    patch_size: int
    in_channels: int
    mlp_ratio: float
    final_norm: bool


def _depth(keys: list[str], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    if found and found != set(range(max(found) + 1)):
        missing = sorted(set(range(max(found) + 1)) - found)
        raise ValueError(f"blocks {missing} of {prefix}* are missing")
    return len(found)


def infer_official_layout(state_dict: Mapping[str, Tensor], *, where: str = "state dict") -> OfficialLayout:
    """Read the model's preset from the tensor shapes of a tubemask-named state dict.

    Args:
        state_dict: the output of [official_to_tubemask_state_dict][tubemask.interop.official.official_to_tubemask_state_dict].
        where: how errors name the source.

    Raises:
        ValueError: when a tensor the layout is read from is missing, a width has no known head count, or the
            encoder and decoder MLP ratios differ (pass a built `model=` to `load_official` for such checkpoints).
    """
    needed = ("tokenizer.proj.weight", "encoder_to_decoder.weight", "decoder.head.weight")
    absent = [k for k in needed if k not in state_dict]
    if absent:
        raise ValueError(
            f"load_official: {where} lacks {[_official_name(k) for k in absent]}; is it a VideoMAE pretraining checkpoint? "
            f"(first keys: {sorted(state_dict)[:8]})"
        )
    keys = list(state_dict)
    try:
        depth = _depth(keys, "encoder.blocks.")
        decoder_depth = _depth(keys, "decoder.blocks.")
    except ValueError as err:
        raise ValueError(f"load_official: {where}: {err}") from err
    dim, in_channels, tubelet, patch, patch_w = state_dict["tokenizer.proj.weight"].shape
    if patch != patch_w:
        raise ValueError(f"load_official: {where} has non-square patches {patch}x{patch_w}")
    decoder_dim = state_dict["encoder_to_decoder.weight"].shape[0]
    for what, width, table in (("encoder", dim, ENCODER_HEADS), ("decoder", decoder_dim, DECODER_HEADS)):
        if width not in table:
            raise ValueError(
                f"load_official: {where} has {what} width {width}, which no official preset has (known: "
                f"{sorted(table)}); build the model yourself and pass it as load_official(..., model=model)"
            )
    mlp_ratio = 4.0
    if depth:
        hidden = state_dict["encoder.blocks.0.mlp.fc1.weight"].shape[0]
        mlp_ratio = mlp_ratio_for(hidden, dim, what=f"load_official: {where} encoder.blocks.0.mlp.fc1")
    if decoder_depth:
        dec_hidden = state_dict["decoder.blocks.0.mlp.fc1.weight"].shape[0]
        if int(decoder_dim * mlp_ratio) != dec_hidden:
            raise ValueError(
                f"load_official: {where} has decoder MLP width {dec_hidden} for width {decoder_dim}, which the "
                f"encoder's mlp_ratio {mlp_ratio:.4g} does not give; pass a built model=model"
            )
    return OfficialLayout(
        size=ViTSize(
            embed_dim=dim,
            depth=depth,
            num_heads=ENCODER_HEADS[dim],
            decoder_dim=decoder_dim,
            decoder_depth=decoder_depth,
            decoder_heads=DECODER_HEADS[decoder_dim],
        ),
        tubelet_size=tubelet,
        patch_size=patch,
        in_channels=in_channels,
        mlp_ratio=mlp_ratio,
        final_norm="encoder.norm.weight" in state_dict,
    )


def load_official(
    source: Source,
    *,
    model: MAEWrapper | None = None,
    strict: bool = True,
    target: TargetKind = "norm_pix",
) -> MAEWrapper:
    """Load an official VideoMAE V1 / V2 pretraining checkpoint into a tubemask `MAEWrapper`.

    Args:
        source: a `.pth` path (read with `weights_only=True`), or a loaded dict with a `model` or `module` entry, or a
            raw state dict. Official key names, optionally behind `module.` / `_orig_mod.` prefixes.
        model: the model to fill. None builds one with [videomae_pretrain][tubemask.models.videomae_pretrain] from the
            shapes (see [infer_official_layout][tubemask.interop.official.infer_official_layout]), LayerNorm eps 1e-6
            as the official code, and returns it in eval mode.
        strict: raise on missing or unexpected keys; False loads what matches and warns about the rest.
        target: reconstruction target of a built model (official pretraining: `"norm_pix"`).

    Returns:
        The model with the checkpoint's weights.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: for unreadable files, unknown widths, missing / unexpected keys (under `strict`) or shape
            mismatches; the message names the keys and the source.
    """
    where = _describe(source)
    state = official_to_tubemask_state_dict(read_official(source), where=where)
    built = model is None
    if model is None:
        layout = infer_official_layout(state, where=where)
        model = videomae_pretrain(
            layout.size,
            tubelet_size=layout.tubelet_size,
            patch_size=layout.patch_size,
            in_channels=layout.in_channels,
            mlp_ratio=layout.mlp_ratio,
            norm_eps=1e-6,
            final_norm=layout.final_norm,
            target=target,
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{_official_name(k)}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected  # model order: tokenizer, encoder, decoder
        if k in state and state[k].shape != expected[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"load_official: {len(mismatched)} tensors of {where} differ in shape from the model's, e.g. "
            f"{mismatched[:6]}"
        )
    if missing or unexpected:
        message = (
            f"load_official: {where} does not fit the model: missing keys (official names) "
            f"{[_official_name(k) for k in missing][:10]}, unexpected keys "
            f"{[_official_name(k) for k in unexpected][:10]}"
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model.eval() if built else model
