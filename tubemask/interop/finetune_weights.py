"""Loading pretrained (or fine-tuned) encoder weights into a [VideoClassifier][tubemask.classification.VideoClassifier].

Three checkpoint layouts are recognised and brought to one set of names:

| layout | example keys | what is used |
|---|---|---|
| tubemask pretraining (`final.pt`, `encoder.pt`) | `tokenizer.proj.*`, `encoder.blocks.{i}.*`, `encoder.norm.*` | tokenizer, blocks, final norm |
| official VideoMAE / V2 pretraining | `encoder.patch_embed.proj.*`, `encoder.blocks.{i}.*`, `encoder.norm.*` | the same |
| official fine-tuned | `patch_embed.proj.*`, `blocks.{i}.*`, `norm.*`, `fc_norm.*`, `head.*`, `pos_embed` | the same plus the head |

The decoder side of pretraining checkpoints (`decoder.*`, `encoder_to_decoder.*`, `mask_token`) is dropped. Prefixes left
by `DistributedDataParallel` (`module.`), `torch.compile` (`_orig_mod.`) and detection / mmaction wrappers
(`backbone.`) are removed. The encoder's final norm is dropped when the classifier has none (VideoMAE's fine-tuning
layout replaces it by `fc_norm`). A stored position table goes into a
[LearnedPositionEmbedding][tubemask.pos_embed.LearnedPositionEmbedding], interpolated trilinearly over `(t, h, w)` when
the clip size differs, and is ignored (with a note) by the fixed sinusoid. A classification layer with another number
of classes is skipped with a note. Files are always read with `torch.load(..., map_location="cpu", weights_only=True)`.
"""

import argparse
import contextlib
import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tubemask.pos_embed import LearnedPositionEmbedding, sinusoid_table

__all__ = ["LoadReport", "read_state_dict", "canonical_state_dict", "interpolate_pos_embed", "load_pretrained_encoder"]

Source = str | os.PathLike | Mapping[str, object]

_WRAPPER_SEGMENTS = ("module", "_orig_mod")
_LEADING_PREFIXES = ("backbone.", "encoder.")
_PRETRAIN_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token")
_POS_KEYS = ("pos_embed", "pos_embed.weight")
# canonical (official fine-tuned) name -> VideoClassifier name, matched on prefixes
_TO_CLASSIFIER: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.", "tokenizer.proj."),
    ("blocks.", "encoder.blocks."),
    ("norm.", "encoder.norm."),
    ("fc_norm.", "head.fc_norm."),
    ("head.", "head.head."),
)


@dataclass
class LoadReport:
    """What [load_pretrained_encoder][tubemask.interop.finetune_weights.load_pretrained_encoder] did.

    Attributes:
        source: the file, or `"<in-memory state dict>"`.
        layout: `"tubemask"`, `"official-pretrain"` or `"official-finetune"`.
        loaded: classifier keys that received a checkpoint tensor.
        missing: classifier keys left as they were (for a pretrained encoder: the head).
        unexpected: checkpoint keys (canonical names) with no place in the classifier.
        dropped: checkpoint keys left out on purpose (decoder side, final norm, mismatched head, sinusoid table).
        notes: one line per decision worth knowing (interpolation, dropped norm, ignored table, skipped head).
    """

    source: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} tensors from {self.source} ({self.layout} layout)",
            f"missing ({len(self.missing)}): {self.missing[:8]}",
            f"unexpected ({len(self.unexpected)}): {self.unexpected[:8]}",
            f"dropped ({len(self.dropped)}): {self.dropped[:8]}",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _allow_namespace() -> contextlib.AbstractContextManager:
    """Let `weights_only` unpickling rebuild the `argparse.Namespace` official scripts save next to the weights."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals is not None else contextlib.nullcontext()


def read_state_dict(source: Source) -> tuple[dict[str, Tensor], str]:
    """The tensors of a checkpoint and a name for it in messages.

    Args:
        source: a file path, or a loaded object: a dict with a `model`, `module` or `state_dict` entry (nested ones
            are unwrapped too), or a raw state dict. Non-tensor entries of the state dict (e.g. a step counter) are
            left out.

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: when the file cannot be read with `weights_only=True` or holds no tensors.
    """
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        if not os.path.isfile(where):
            raise FileNotFoundError(f"load_pretrained_encoder: no checkpoint file at {where}")
        try:
            with _allow_namespace():
                obj = torch.load(where, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"load_pretrained_encoder: {where} cannot be read with torch.load(weights_only=True) (it pickles "
                "objects other than tensors and plain containers). Load it yourself in a trusted setting and pass "
                f"the state dict. Details: {str(err).splitlines()[0]}"
            ) from err
    else:
        where, obj = "<in-memory state dict>", source
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("model", "module", "state_dict") if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"load_pretrained_encoder: {where} holds a {type(obj).__name__}, expected a dict of tensors")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(
            f"load_pretrained_encoder: {where} holds no tensors and no 'model' / 'module' / 'state_dict' entry; "
            f"top-level keys: {sorted(map(str, obj))[:10]}"
        )
    return tensors, where


def _detect_layout(keys: list[str]) -> str:
    if any(k.startswith("tokenizer.") for k in keys):
        return "tubemask"
    if any(k.startswith("encoder.patch_embed.") for k in keys):
        return "official-pretrain"
    return "official-finetune"


def canonical_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str], str]:
    """Bring any of the three layouts to official fine-tuned names (`patch_embed.proj`, `blocks.{i}`, `norm`,
    `fc_norm`, `head`, `pos_embed`).

    Returns:
        `(state_dict, dropped, layout)`: the renamed tensors, the original keys of the pretraining-only parts that
        were left out, and the detected layout.
    """
    stripped: dict[str, Tensor] = {}
    for raw, value in state_dict.items():
        key = ".".join(part for part in raw.split(".") if part not in _WRAPPER_SEGMENTS)
        if key.startswith("backbone."):
            key = key[len("backbone.") :]
        stripped[key] = value
    layout = _detect_layout(list(stripped))
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in stripped.items():
        if key.startswith(_PRETRAIN_ONLY):
            dropped.append(key)
            continue
        for prefix in _LEADING_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key.startswith("tokenizer.proj."):
            key = "patch_embed.proj." + key[len("tokenizer.proj.") :]
        elif key.startswith(("head.head.", "head.fc_norm.")):  # a tubemask VideoClassifier checkpoint
            key = key[len("head.") :]
        elif key in _POS_KEYS:
            key = "pos_embed"
        out[key] = value
    return out, dropped, layout


def interpolate_pos_embed(
    table: Tensor, source_grid: tuple[int, int, int], target_grid: tuple[int, int, int]
) -> Tensor:
    """Resize a position table `[t*h*w, d]` (raster order) from `source_grid` to `target_grid`, trilinearly over
    `(t, h, w)` (`align_corners=False`); computed in float32 and returned in the table's dtype.

    Raises:
        ValueError: when the table's row count does not fill `source_grid`.
    """
    table = table.reshape(-1, table.shape[-1])
    if table.shape[0] != math.prod(source_grid):
        raise ValueError(f"interpolate_pos_embed: {table.shape[0]} rows do not fill source grid {source_grid}")
    if tuple(source_grid) == tuple(target_grid):
        return table.clone()
    t, h, w = source_grid
    x = table.float().reshape(1, t, h, w, -1).permute(0, 4, 1, 2, 3)  # [1 d t h w]
    x = F.interpolate(x, size=tuple(target_grid), mode="trilinear", align_corners=False)
    return x.permute(0, 2, 3, 4, 1).reshape(math.prod(target_grid), -1).to(table.dtype)


def _infer_source_grid(rows: int, target: tuple[int, int, int], where: str) -> tuple[int, int, int]:
    """The grid of a stored table: the target's frames with a square frame grid, else the target's frame grid."""
    t, h, w = target
    if rows % t == 0:
        side = math.isqrt(rows // t)
        if side * side == rows // t:
            return (t, side, side)
    if rows % (h * w) == 0:
        return (rows // (h * w), h, w)
    raise ValueError(
        f"load_pretrained_encoder: cannot tell the grid of the {rows}-row pos_embed in {where} (target grid {target}); "
        "pass source_grid=(t, h, w)"
    )


def _classifier_key(canonical: str) -> str:
    return next(tm + canonical[len(c) :] for c, tm in _TO_CLASSIFIER if canonical.startswith(c))


def load_pretrained_encoder(
    classifier: nn.Module,
    path_or_state_dict: Source,
    *,
    strict: bool = False,
    source_grid: tuple[int, int, int] | None = None,
) -> LoadReport:
    """Copy pretrained weights into a [VideoClassifier][tubemask.classification.VideoClassifier] (see the module table).

    Args:
        classifier: the model to fill, with the `tokenizer`, `encoder`, `pos_embed` and `head` names of
            `VideoClassifier`.
        path_or_state_dict: a checkpoint file, a loaded checkpoint dict (`model` / `module` / `state_dict` entries are
            unwrapped) or a raw state dict.
        strict: raise when a tokenizer / encoder / learned position tensor of the classifier stays missing, or when
            the checkpoint has keys with no place. The head may always stay missing (a pretrained encoder has none).
        source_grid: the `(t, h, w)` token grid a stored learned position table was trained for; inferred when
            `None` (the classifier's frame count with a square frame grid, else its frame grid).

    Returns:
        A [LoadReport][tubemask.interop.finetune_weights.LoadReport].

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when nothing of the encoder is found, when shapes disagree (naming the file and the keys with both
            shapes), or under `strict` as described.
    """
    tensors, where = read_state_dict(path_or_state_dict)
    canonical, dropped, layout = canonical_state_dict(tensors)
    report = LoadReport(source=where, layout=layout, dropped=dropped)
    own = classifier.state_dict()
    if not any(k.startswith(("patch_embed.", "blocks.")) for k in canonical):
        raise ValueError(
            f"load_pretrained_encoder: {where} has no encoder weights (no patch_embed.* / blocks.* / tokenizer.* / "
            f"encoder.blocks.* keys); first keys: {sorted(tensors)[:8]}"
        )
    if dropped:
        report.notes.append(
            f"dropped {len(dropped)} pretraining-only tensors (decoder, encoder_to_decoder, mask_token)"
        )

    updates: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for key, value in canonical.items():
        if key == "pos_embed":
            _place_pos_embed(classifier, value, own, updates, report, where, source_grid)
            continue
        if not key.startswith(tuple(c for c, _ in _TO_CLASSIFIER)):
            report.unexpected.append(key)
            continue
        target = _classifier_key(key)
        if target not in own:
            if key.startswith("norm."):
                report.dropped.append(key)
                if key.endswith("weight"):
                    report.notes.append(
                        "the checkpoint's final encoder norm is not used: the classifier has no encoder.norm "
                        "(VideoMAE fine-tuning pools first and normalises with fc_norm)"
                    )
            else:
                report.unexpected.append(key)
            continue
        if tuple(own[target].shape) != tuple(value.shape):
            if key.startswith("head."):
                report.dropped.append(key)
                if key.endswith("weight"):
                    report.notes.append(
                        f"the checkpoint's classification layer has shape {tuple(value.shape)}, the classifier's "
                        f"{tuple(own[target].shape)}: head not loaded (another number of classes)"
                    )
                continue
            mismatched.append(f"{key} {tuple(value.shape)} -> {target} {tuple(own[target].shape)}")
            continue
        updates[target] = value
    if mismatched:
        raise ValueError(f"load_pretrained_encoder: shapes in {where} do not fit the classifier: {mismatched[:8]}")

    report.loaded = sorted(updates)
    report.missing = sorted(k for k in own if k not in updates)
    if strict:
        hard_missing = [k for k in report.missing if not k.startswith("head.")]
        if hard_missing or report.unexpected:
            raise ValueError(
                f"load_pretrained_encoder(strict=True): {where} leaves classifier keys {hard_missing[:8]} missing and "
                f"has keys {report.unexpected[:8]} with no place in the classifier"
            )
    with torch.no_grad():
        for key, value in updates.items():
            own[key].copy_(value.to(dtype=own[key].dtype))
    return report


def _place_pos_embed(
    classifier: nn.Module,
    value: Tensor,
    own: Mapping[str, Tensor],
    updates: dict[str, Tensor],
    report: LoadReport,
    where: str,
    source_grid: tuple[int, int, int] | None,
) -> None:
    table = value.reshape(-1, value.shape[-1])
    pos = getattr(classifier, "pos_embed", None)
    if not isinstance(pos, LearnedPositionEmbedding):
        report.dropped.append("pos_embed")
        fixed = torch.allclose(table.float(), sinusoid_table(*table.shape), atol=1e-4)
        kind = "VideoMAE's fixed sinusoid" if fixed else "a learned table (it differs from the fixed sinusoid)"
        report.notes.append(
            f"the stored pos_embed ({kind}, {tuple(table.shape)}) is ignored: the classifier's "
            f"{type(pos).__name__} is computed, not loaded"
            + ("" if fixed else "; build the classifier with a LearnedPositionEmbedding to use it")
        )
        return
    if table.shape[1] != pos.dim:
        raise ValueError(
            f"load_pretrained_encoder: pos_embed in {where} is {table.shape[1]} wide, the classifier's {pos.dim}"
        )
    target = tuple(pos.grid)
    if table.shape[0] != math.prod(target) or source_grid is not None:
        src = tuple(source_grid) if source_grid is not None else _infer_source_grid(table.shape[0], target, where)
        table = interpolate_pos_embed(table, src, target)
        if src != target:
            report.notes.append(f"pos_embed interpolated trilinearly from grid {src} to {target}")
    updates["pos_embed.weight"] = table
    if "pos_embed.weight" not in own:  # pragma: no cover - LearnedPositionEmbedding always has it
        raise ValueError("load_pretrained_encoder: the classifier's pos_embed has no weight")
