"""AdamW parameter groups: which tensors get weight decay, and layer-wise learning-rate decay for fine-tuning.

Two rules, both from the VideoMAE / BEiT / MAE recipes:

- **No weight decay** for biases, normalisation weights, position embeddings, class and mask tokens, every parameter
  with fewer than two dimensions, and every name a module lists in an optional `no_weight_decay()` method (the timm
  convention).
- **Layer-wise lr decay** (fine-tuning only): block `i` of an `L`-block encoder gets `lr * layer_decay ** (L - i)`,
  the embeddings `lr * layer_decay ** (L + 1)` and the head the full `lr`. Each group carries the factor as
  `lr_scale`; [apply_lr][tubemask.train.schedule.apply_lr] multiplies it in at every step.
"""

import re
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["DEFAULT_NO_DECAY_NAMES", "default_layer_id", "param_groups", "build_adamw"]

DEFAULT_NO_DECAY_NAMES: tuple[str, ...] = ("pos_embed", "cls_token", "mask_token", "q_bias", "v_bias")
"""Name components whose parameters never get weight decay, whatever their number of dimensions."""

_BLOCK = re.compile(r"^(?:encoder\.)?blocks\.(\d+)\.")
_EMBEDDING_PREFIXES = (
    "tokenizer.",
    "pos_embed",
    "cls_token",
    "encoder.tokenizer.",
    "encoder.pos_embed",
    "encoder.cls_token",
)


def default_layer_id(name: str, num_layers: int) -> int:
    """Layer index of a parameter under tubemask's naming, for layer-wise lr decay.

    Embeddings (`tokenizer.*`, `pos_embed`, `cls_token`, also under `encoder.`) are layer 0; `blocks.{i}.*` and
    `encoder.blocks.{i}.*` are layer `i + 1`; everything else (final norm, head, decoder) is layer `num_layers + 1`.

    Args:
        name: the parameter's qualified name, as from `model.named_parameters()`.
        num_layers: number of transformer blocks `L` in the encoder.

    Returns:
        An int in `[0, num_layers + 1]`.
    """
    if name.startswith(_EMBEDDING_PREFIXES):
        return 0
    match = _BLOCK.match(name)
    if match is not None:
        return int(match.group(1)) + 1
    return num_layers + 1


def _listed_no_decay(model: nn.Module) -> set[str]:
    """Qualified names from every module's optional `no_weight_decay()` (names are relative to that module)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        method = getattr(module, "no_weight_decay", None)
        if not callable(method):
            continue
        for name in method():
            names.add(f"{prefix}.{name}" if prefix else name)
    return names


def _is_no_decay(name: str, param: torch.Tensor, no_decay_names: Iterable[str], listed: set[str]) -> bool:
    if param.ndim <= 1 or name.endswith(".bias") or name in listed:
        return True
    parts = name.split(".")
    return any(part in no_decay_names for part in parts)


def _infer_num_layers(model: nn.Module) -> int:
    for path in ("encoder.blocks", "blocks"):
        module: object = model
        for attr in path.split("."):
            module = getattr(module, attr, None)
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            return len(module)
    raise ValueError(
        "param_groups: layer_decay needs num_layers; it could not be inferred because the model has neither "
        "`encoder.blocks` nor `blocks` as a ModuleList. Pass num_layers=<encoder depth>."
    )


def param_groups(
    model: nn.Module,
    *,
    weight_decay: float | int,
    no_decay_names: Iterable[str] = DEFAULT_NO_DECAY_NAMES,
    layer_decay: float | int | None = None,
    num_layers: int | None = None,
    layer_id_fn: Callable[[str, int], int] | None = None,
) -> list[dict]:
    """Split the trainable parameters of `model` into AdamW groups.

    Args:
        model: the model; frozen parameters (`requires_grad=False`) are left out.
        weight_decay: decay for the decayed group, `>= 0`.
        no_decay_names: name components (split on `.`) that are never decayed, in addition to biases, parameters with
            fewer than two dimensions and names listed by `no_weight_decay()` methods of `model` or its submodules.
        layer_decay: per-layer lr factor in `(0, 1]` for fine-tuning; `None` gives every group `lr_scale = 1`.
        num_layers: encoder depth `L`; inferred from `model.encoder.blocks` or `model.blocks` when `None`.
        layer_id_fn: `(name, num_layers) -> layer id in [0, L + 1]`; defaults to
            [default_layer_id][tubemask.train.optim.default_layer_id].

    Returns:
        A list of dicts with keys `params`, `param_names`, `weight_decay` and `lr_scale`
        (`layer_decay ** (L + 1 - layer_id)`), ordered by layer id, decayed group first within a layer. Empty groups
        are omitted.

    Raises:
        ValueError: when `weight_decay < 0`, `layer_decay` is outside `(0, 1]`, or a layer id is outside `[0, L + 1]`.
    """
    if weight_decay < 0:
        raise ValueError(f"param_groups: weight_decay must be >= 0, got {weight_decay}")
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"param_groups: layer_decay must be in (0, 1], got {layer_decay}")
    if layer_decay is not None and num_layers is None:
        num_layers = _infer_num_layers(model)
    if num_layers is not None and num_layers < 0:
        raise ValueError(f"param_groups: num_layers must be >= 0, got {num_layers}")
    layer_id_fn = layer_id_fn or default_layer_id
    no_decay_names = tuple(no_decay_names)
    listed = _listed_no_decay(model)

    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = _is_no_decay(name, param, no_decay_names, listed)
        if layer_decay is None:
            layer_id, scale = 0, 1.0
        else:
            layer_id = layer_id_fn(name, num_layers)
            if not 0 <= layer_id <= num_layers + 1:
                raise ValueError(
                    f"param_groups: layer id {layer_id} for parameter {name!r} is outside [0, {num_layers + 1}]"
                )
            scale = layer_decay ** (num_layers + 1 - layer_id)
        key = (layer_id, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else float(weight_decay),
                "lr_scale": float(scale),
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def build_adamw(
    model: nn.Module,
    *,
    lr: float | int,
    weight_decay: float | int,
    betas: tuple[float, float] = (0.9, 0.95),
    layer_decay: float | int | None = None,
    num_layers: int | None = None,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over [param_groups][tubemask.train.optim.param_groups] of `model`.

    Each group starts at `lr * lr_scale`; a schedule then sets the lr every step through
    [apply_lr][tubemask.train.schedule.apply_lr].

    Args:
        model: the model to optimise.
        lr: peak learning rate (already scaled for the batch size), `> 0`.
        weight_decay: AdamW decay for the decayed groups.
        betas: AdamW betas; VideoMAE pretraining uses `(0.9, 0.95)`, fine-tuning `(0.9, 0.999)`.
        layer_decay: layer-wise lr decay in `(0, 1]`, or `None`.
        num_layers: encoder depth for layer decay; inferred when `None`.
        fused: use the fused CUDA kernel; `None` picks it when every parameter is on CUDA.

    Raises:
        ValueError: when `lr <= 0` or a beta is outside `[0, 1)`.
    """
    if lr <= 0:
        raise ValueError(f"build_adamw: lr must be > 0, got {lr}")
    for beta in betas:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"build_adamw: betas must be in [0, 1), got {betas}")
    groups = param_groups(model, weight_decay=weight_decay, layer_decay=layer_decay, num_layers=num_layers)
    if not groups:
        raise ValueError("build_adamw: the model has no trainable parameters")
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    if fused is None:
        fused = all(p.is_cuda for group in groups for p in group["params"])
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)
