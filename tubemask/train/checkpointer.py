"""A run's checkpoints: the full state gathered collectively under FSDP2, written atomically on rank 0, read with
`weights_only=True`, and restored exactly (model, optimizer, and every part that has a `state_dict`).

Under FSDP2 each rank holds a shard of every parameter and of its AdamW state. A checkpoint (and `final.pt`) must hold
the full, unsharded tensors, so that it loads into a one-process model or another number of processes; gathering them
is a collective, so every rank calls [save][tubemask.train.checkpointer.Checkpointer.save] and rank 0 writes.

Example:
    ```python
    checkpointer = Checkpointer(out, ctx=ctx, config=config)
    state = checkpointer.load_latest() if resume else None   # before building: fine-tuning loads weights if None
    ...
    checkpointer.attach(prepared, loop=loop, stepper=stepper)
    if state is not None:
        log(checkpointer.restore(state))
    ...
    checkpointer.save(loop.step)                       # every rank
    checkpointer.save_final(out / "final.pt", test=...)  # every rank
    ```
"""

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist

from tubemask.train.checkpoint import CheckpointManager, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tubemask.train.distributed import DistributedContext
from tubemask.train.prepare import PreparedModel

__all__ = ["Stateful", "Checkpointer"]


@runtime_checkable
class Stateful(Protocol):
    """A part of the run that a checkpoint holds: its `state_dict` keys go to the top level of the checkpoint."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class Checkpointer:
    """Numbered checkpoints of a run, and its `final.pt`.

    A checkpoint holds `model` and `optimizer` (full, unsharded), the keys of every part's `state_dict`, `rng`
    (every generator) and `config`.

    Args:
        directory: the run's output directory.
        ctx: this process's place in the run; rank 0 writes.
        config: the run's config as plain values ([config_dict][tubemask.train.config.config_dict]).
        keep_last: numbered checkpoints kept.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        ctx: DistributedContext,
        config: dict[str, Any] | None = None,
        keep_last: int = 3,
    ) -> None:
        self.manager = CheckpointManager(directory, keep_last=keep_last)
        self.ctx = ctx
        self.config = config
        self._prepared: PreparedModel | None = None
        self.parts: dict[str, Stateful] = {}

    def attach(self, prepared: PreparedModel, **parts: Stateful) -> None:
        """What the checkpoints hold: the prepared model and optimizer, and the other stateful pieces (training
        position, scaler, schedule, EMA ...), whose `state_dict` keys go to the checkpoint's top level."""
        self._prepared = prepared
        self.parts = parts

    @property
    def prepared(self) -> PreparedModel:
        if self._prepared is None:
            raise RuntimeError("Checkpointer: call attach(prepared, ...) before saving or restoring")
        return self._prepared

    def latest(self) -> Path | None:
        """The newest checkpoint (None before the first)."""
        return self.manager.latest()

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint read on this rank with `weights_only=True`, or None.

        Under several processes every rank must find the same one (all call this): ranks that see different output
        directories, e.g. machines without a shared `--output-dir`, would resume from different steps or some from
        scratch, and their weights would silently diverge.

        Raises:
            ValueError: on every rank, naming what each rank found, when the ranks' newest checkpoints differ.
        """
        path = self.manager.latest()
        if self.ctx.world_size > 1:
            found: list[str | None] = [None] * self.ctx.world_size
            dist.all_gather_object(found, None if path is None else path.name)
            if len(set(found)) > 1:
                seen = ", ".join(f"rank {rank}: {name or 'none'}" for rank, name in enumerate(found))
                raise ValueError(
                    f"--resume: the processes found different checkpoints in {self.manager.directory} ({seen}); "
                    "every process must read the same --output-dir (on several machines, a shared filesystem)"
                )
        return None if path is None else load_checkpoint(path)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The full model state on the CPU (a collective under FSDP2: every rank calls it)."""
        return self._full_state(optimizer=False)[0]

    def _full_state(self, *, optimizer: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
        model, opt = self.prepared.model, self.prepared.optimizer
        if not self.prepared.fsdp:
            return model.state_dict(), opt.state_dict() if optimizer else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        if not optimizer:
            return get_model_state_dict(model, options=options), None
        return get_state_dict(model, opt, options=options)

    def state(self) -> dict[str, Any]:
        """The whole checkpoint (a collective under FSDP2)."""
        model_state, optimizer_state = self._full_state(optimizer=True)
        state: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}
        for part in self.parts.values():
            state.update(part.state_dict())
        state["rng"] = rng_state()
        state["config"] = self.config
        return state

    def save(self, step: int) -> Path | None:
        """Write the checkpoint of `step` (every rank calls it; rank 0 writes); returns its path on rank 0."""
        state = self.state()
        return self.manager.save(step, state) if self.ctx.is_main else None

    def restore(self, state: dict[str, Any]) -> str:
        """Load a checkpoint into the model, the optimizer and every part, then the generators; returns a line for
        the log (where it resumed, and the parts' notes, e.g. an EMA that starts now)."""
        model, opt = self.prepared.model, self.prepared.optimizer
        if self.prepared.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(
                model,
                opt,
                model_state_dict=state["model"],
                optim_state_dict=state["optimizer"],
                options=StateDictOptions(full_state_dict=True),
            )
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        notes = [note for part in self.parts.values() if (note := part.load_state_dict(state)) is not None]
        set_rng_state(state["rng"])
        where = f"resumed from {self.latest()} at step {state['step']} (epoch {state['epoch']}, batch "
        return "; ".join([where + f"{state['batch_in_epoch']})", *notes])

    def save_final(self, path: str | os.PathLike, **extra: Any) -> dict[str, torch.Tensor]:
        """Write `{"model": full weights, "config": ..., **extra}` to `path` (every rank calls it; rank 0 writes);
        returns the full model state."""
        model_state = self.model_state()
        if self.ctx.is_main:
            save_checkpoint(path, {"model": model_state, "config": self.config, **extra})
        return model_state
