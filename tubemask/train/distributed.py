"""Distributed setup for runs started with `torchrun`: process group, device, DDP / FSDP2 wrapping, rank-0 output.

A plain `python recipe.py` run is a world of one: [setup_distributed][tubemask.train.distributed.setup_distributed]
then starts no process group, and the helpers here become no-ops, so recipes need no `if distributed:` branches.

Example:
    ```python
    ctx = setup_distributed()            # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    model = wrap_ddp(model.to(ctx.device), ctx)
    ...
    rank0_print(f"loss {all_reduce_mean(loss.detach()).item():.4f}")
    cleanup()
    ```
"""

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "setup_distributed",
    "cleanup",
    "is_distributed",
    "all_reduce_mean",
    "wrap_ddp",
    "wrap_fsdp2",
    "rank0_print",
    "get_logger",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the run.

    Attributes:
        rank: global rank in `[0, world_size)`.
        local_rank: rank on this machine; the CUDA device index.
        world_size: number of processes.
        device: the device this process computes on.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and saves checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} must be an integer (it is normally set by torchrun)"
        ) from None


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Read torchrun's environment, pick the device and, for more than one process, start the process group.

    Uses the `gloo` backend on CPU and `nccl` on CUDA, and sets the current CUDA device to `LOCAL_RANK` (also passed to
    `init_process_group` as `device_id`, so the NCCL communicator is bound to that GPU from the start).

    Args:
        device: `"auto"` (CUDA when available, else CPU), `"cpu"` or `"cuda"`.

    Returns:
        The [DistributedContext][tubemask.train.distributed.DistributedContext] of this process.

    Raises:
        ValueError: for an unknown `device`, or ranks outside `[0, WORLD_SIZE)`.
        RuntimeError: when `"cuda"` is asked for without a CUDA device, or a multi-process run lacks
            `MASTER_ADDR` / `MASTER_PORT` or `torch.distributed`.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"setup_distributed: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("setup_distributed: device='cuda' was asked for, but torch.cuda.is_available() is False")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"setup_distributed: RANK={rank} must be in [0, WORLD_SIZE={world_size})")
    if local_rank < 0:
        raise ValueError(f"setup_distributed: LOCAL_RANK={local_rank} must be >= 0")

    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"setup_distributed: LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices"
            )
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")

    if world_size > 1:
        if not dist.is_available():
            raise RuntimeError("setup_distributed: WORLD_SIZE > 1 but this torch build has no torch.distributed")
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise RuntimeError(
                f"setup_distributed: WORLD_SIZE={world_size} but {', '.join(missing)} is not set; launch with torchrun"
            )
        if not dist.is_initialized():
            # device_id binds the NCCL communicator to this rank's GPU at once (no lazy, guessed device; torch >= 2.3)
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo",
                init_method="env://",
                rank=rank,
                world_size=world_size,
                **({"device_id": torch_device} if use_cuda else {}),
            )
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=torch_device)


def cleanup() -> None:
    """Destroy the process group, if one was started.

    On a clean exit every rank first waits at a barrier, so that no rank tears the group down while another still
    talks to it (full-suite runs saw a gloo rank abort in teardown: "terminate called without an active exception").
    Called while an exception propagates (this rank failed; another may be blocked in a collective that will never
    complete), it destroys the group at once, so the failure surfaces instead of a hang at the barrier.
    """
    if not is_distributed():
        return
    if sys.exc_info()[0] is None:
        dist.barrier()
    dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over all processes (a new tensor; the argument is not modified).

    Without a process group it returns a detached copy. Every process must call it with the same shape.
    """
    out = tensor.detach().clone()
    if not is_distributed() or dist.get_world_size() == 1:
        return out
    # SUM then divide: ReduceOp.AVG is not supported by gloo.
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    if out.is_floating_point() or out.is_complex():
        return out.div_(dist.get_world_size())
    return out / dist.get_world_size()


def wrap_ddp(model: nn.Module, ctx: DistributedContext, **ddp_kwargs: Any) -> nn.Module:
    """Move `model` to `ctx.device` and wrap it in `DistributedDataParallel` when more than one process runs.

    Args:
        model: the model.
        ctx: this process's context.
        **ddp_kwargs: passed to `DistributedDataParallel` (e.g. `find_unused_parameters=True`).

    Returns:
        The DDP-wrapped model, or the moved model itself in a single-process run. Reach the bare model through
        `.module` on the wrapper.
    """
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    if not is_distributed():
        raise RuntimeError("wrap_ddp: ctx.world_size > 1 but no process group is initialised; call setup_distributed()")
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def _fully_shard():
    """`fully_shard` and `MixedPrecisionPolicy` from wherever this torch release keeps them (public since 2.6,
    `_composable` in 2.4-2.5)."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        return fully_shard, MixedPrecisionPolicy
    except ImportError:
        pass
    try:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard

        return fully_shard, MixedPrecisionPolicy
    except ImportError:
        raise RuntimeError(
            f"wrap_fsdp2: torch {torch.__version__} has no FSDP2 fully_shard (needs torch >= 2.4 with "
            "torch.distributed); use wrap_ddp instead"
        ) from None


def wrap_fsdp2(
    model: nn.Module,
    ctx: DistributedContext,
    *,
    block_attr: str = "blocks",
    param_dtype: torch.dtype | None = None,
    **shard_kwargs: Any,
) -> nn.Module:
    """Shard `model` with FSDP2 (`fully_shard`): each block of every `ModuleList` named `block_attr`, then the root.

    Sharding per transformer block lets FSDP gather one block's parameters at a time. The model is sharded in place
    and returned (FSDP2 does not wrap; parameters become DTensors).

    Args:
        model: the model; moved to `ctx.device` first.
        ctx: this process's context; needs an initialised process group when `ctx.world_size > 1`.
        block_attr: attribute name of the block lists (`"blocks"` matches `encoder.blocks` and `decoder.blocks`).
        param_dtype: the dtype parameters are gathered and computed in, e.g. `torch.bfloat16` for a bf16 autocast
            run: then every `fully_shard` gets `MixedPrecisionPolicy(param_dtype=param_dtype,
            reduce_dtype=torch.float32)`, so the all-gathers move half the bytes while the sharded parameters, the
            optimizer state and the gradient reduction stay float32. None (default): no policy, float32 gathers.
        **shard_kwargs: passed to every `fully_shard` call (e.g. `reshard_after_forward`, or your own `mp_policy`
            instead of `param_dtype`).

    Raises:
        RuntimeError: when this torch has no `fully_shard`, or no process group is initialised.
        ValueError: when the model has no `ModuleList` named `block_attr`, or both `param_dtype` and `mp_policy`
            are given.
    """
    if param_dtype is not None and "mp_policy" in shard_kwargs:
        raise ValueError("wrap_fsdp2: pass param_dtype or mp_policy, not both")
    fully_shard, mixed_precision_policy = _fully_shard()
    if not is_distributed():
        raise RuntimeError("wrap_fsdp2: no process group is initialised; call setup_distributed() under torchrun")
    if param_dtype is not None:
        shard_kwargs["mp_policy"] = mixed_precision_policy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    from torch.distributed.device_mesh import init_device_mesh

    model = model.to(ctx.device)
    block_lists = [
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == block_attr
    ]
    if not block_lists:
        raise ValueError(f"wrap_fsdp2: the model has no nn.ModuleList named {block_attr!r}; pass block_attr=<name>")
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for blocks in block_lists:
        for block in blocks:
            fully_shard(block, mesh=mesh, **shard_kwargs)
    fully_shard(model, mesh=mesh, **shard_kwargs)
    return model


def _current_rank() -> int:
    if is_distributed():
        return dist.get_rank()
    return _env_int("RANK", 0)


def rank0_print(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only (the rank comes from the process group, else from `RANK`)."""
    if _current_rank() == 0:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def get_logger(name: str = "tubemask", level: int = logging.INFO) -> logging.Logger:
    """A logger that logs at `level` on rank 0 and only warnings and errors on other ranks.

    Adds one stream handler with a `[rank r]` prefix the first time it is called for `name`.
    """
    logger = logging.getLogger(name)
    rank = _current_rank()
    if not any(getattr(handler, "_tubemask", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"))
        handler._tubemask = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level if rank == 0 else max(level, logging.WARNING))
    return logger
