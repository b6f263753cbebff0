"""Model preparation for training: DDP, FSDP2 or neither, `torch.compile`, and the optimizer built from the
prepared model, always after wrapping.

FSDP2 (`fully_shard`) replaces every parameter by a DTensor shard. An optimizer built before that holds the old
tensors, which no gradient ever reaches again: the run "trains" with a learning rate and never changes a weight. Taking
the optimizer as a builder that runs after wrapping makes that order the only one possible.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tubemask.train.distributed import DistributedContext, wrap_ddp, wrap_fsdp2

__all__ = ["Sharding", "PreparedModel", "choose_sharding", "prepare_model"]

Sharding = Literal["auto", "ddp", "fsdp"]


@dataclass
class PreparedModel:
    """A model ready to train.

    Attributes:
        model: the module whose `state_dict` names checkpoints hold (sharded in place under FSDP2); evaluation,
            pictures and EMA use it.
        train_model: what the training loop calls: the DDP wrapper, the FSDP2-sharded model, or `model`, compiled
            with `--compile`.
        optimizer: built from the parameters of the prepared model.
        strategy: `"none"` (one process), `"ddp"` or `"fsdp"`.
    """

    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    strategy: Literal["none", "ddp", "fsdp"]

    @property
    def fsdp(self) -> bool:
        """True when the parameters are FSDP2 shards (the forward is then a collective: every rank must call it)."""
        return self.strategy == "fsdp"


def choose_sharding(sharding: Sharding, ctx: DistributedContext, *, large: bool) -> Literal["none", "ddp", "fsdp"]:
    """The strategy for `--sharding`: none for one process; under torchrun `"auto"` shards the `large` models (ViT-L
    and ViT-H, whose weights, gradients and AdamW state do not fit a GPU replicated) and replicates the others."""
    if sharding not in ("auto", "ddp", "fsdp"):
        raise ValueError(f"--sharding must be 'auto', 'ddp' or 'fsdp', got {sharding!r}")
    if not ctx.is_distributed:
        return "none"
    if sharding == "auto":
        return "fsdp" if large else "ddp"
    return sharding


def prepare_model(
    model: nn.Module,
    ctx: DistributedContext,
    *,
    build_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    sharding: Sharding = "auto",
    large: bool = False,
    compile: bool = False,
    param_dtype: torch.dtype | None = None,
) -> PreparedModel:
    """Move `model` to the device, wrap it for the run's processes, build its optimizer, then compile.

    Args:
        model: the model with its initial (or resumed) weights; `requires_grad` already set for frozen parts.
        ctx: this process's place in the run.
        build_optimizer: makes the optimizer from the prepared model (called once, after wrapping).
        sharding: `--sharding` (see [choose_sharding][tubemask.train.prepare.choose_sharding]).
        large: the model is one `"auto"` shards.
        compile: wrap the training module in `torch.compile`.
        param_dtype: under FSDP2, gather parameters in this dtype (bf16 runs: half the all-gather traffic).
    """
    strategy = choose_sharding(sharding, ctx, large=large)
    model = model.to(ctx.device)
    if strategy == "fsdp":
        options = {} if param_dtype is None else {"param_dtype": param_dtype}
        train_model = wrap_fsdp2(model, ctx, **options)
    elif strategy == "ddp":
        train_model = wrap_ddp(model, ctx)
    else:
        train_model = model
    optimizer = build_optimizer(model)  # after wrapping: FSDP2 has replaced the parameters by their shards
    if compile:
        train_model = torch.compile(train_model)
    return PreparedModel(model=model, train_model=train_model, optimizer=optimizer, strategy=strategy)
