"""The tail of every training step: accumulation, gradient sync, clipping, loss scaling, schedule, non-finite guard,
EMA, and the loss read back once per optimizer step instead of once per micro-step.

Example:
    ```python
    stepper = OptimizerStep(optimizer, schedule, ctx=ctx, accum_steps=2, guard=NonFiniteGuard(5))
    for batch in loop.batches():
        with stepper.accumulating(train_model, last=loop.at_step_end), run.autocast():
            loss = train_model(batch).loss
        stepper.backward(loss)
        if loop.at_step_end:
            result = stepper.step(loop.step)     # one device-to-host read: the guard and the log need the loss
            loop.step_taken(clips)
    ```
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tubemask.train.distributed import DistributedContext
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.schedule import WarmupCosine

__all__ = ["OptimizerStep", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports.

    Attributes:
        loss: the step's loss, averaged over micro-steps and processes.
        lr: the peak learning rate the schedule set for the step.
        taken: False when the loss was not finite and the update was skipped.
        values: the other per-micro-step values passed to `backward`, averaged the same way.
    """

    loss: float
    lr: float
    taken: bool
    values: dict[str, float]


class OptimizerStep:
    """Accumulate gradients over `accum_steps` micro-steps, then clip, step, schedule and average.

    The loss (and any value passed to [backward][tubemask.train.step.OptimizerStep.backward]) is summed on the device
    and read back once per optimizer step, after one all-reduce over the processes: the non-finite guard needs it on
    the host to decide whether to apply the update, and the metrics log takes the same number. Each read waits for
    the device to drain, so there is one per optimizer step rather than one per micro-step.

    Args:
        optimizer: built from the wrapped model's parameters (see [prepare_model][tubemask.train.prepare.prepare_model]).
        schedule: sets the learning rate of each step.
        ctx: this process's place in the run (the average over processes is taken when it has several).
        accum_steps: micro-steps per optimizer step; each micro-step's loss is divided by it.
        guard: skips non-finite steps and stops a diverged run (default: 5 in a row).
        scaler: a `torch.amp.GradScaler` (enabled for fp16); default: a disabled one.
        clip_grad: clip the gradients' global norm to this value (None: no clipping).
        ema: an `AveragedModel` updated after every applied step.
        model: the unwrapped model whose parameters are clipped and averaged into `ema`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupCosine,
        *,
        ctx: DistributedContext,
        accum_steps: int = 1,
        guard: NonFiniteGuard | None = None,
        scaler: torch.amp.GradScaler | None = None,
        clip_grad: float | None = None,
        ema: torch.optim.swa_utils.AveragedModel | None = None,
        model: nn.Module | None = None,
    ) -> None:
        if accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
        if clip_grad is not None and clip_grad <= 0:
            raise ValueError(f"clip_grad must be > 0 (or None for no clipping), got {clip_grad}")
        if (clip_grad is not None or ema is not None) and model is None:
            raise ValueError("OptimizerStep: clip_grad and ema need the model whose parameters they read")
        self.optimizer, self.schedule, self.ctx = optimizer, schedule, ctx
        self.accum_steps = accum_steps
        self.guard = guard if guard is not None else NonFiniteGuard(5)
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(ctx.device.type, enabled=False)
        self.clip_grad, self.ema, self.model = clip_grad, ema, model
        self._sums: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def accumulating(self, train_model: nn.Module, *, last: bool) -> Iterator[None]:
        """Run one micro-step's forward and backward inside this: on all but the `last` micro-step of an
        accumulation the gradients are not synchronised between processes (DDP `no_sync`; FSDP2
        `set_requires_gradient_sync(False)`)."""
        target = getattr(train_model, "_orig_mod", train_model)  # under torch.compile, the wrapped module
        if hasattr(target, "set_requires_gradient_sync"):  # FSDP2
            target.set_requires_gradient_sync(last)
            yield
        elif not last and hasattr(target, "no_sync"):  # DDP
            with target.no_sync():
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor, **values: torch.Tensor) -> None:
        """Back-propagate `loss / accum_steps` (scaled under fp16) and add it, and each of `values` (detached), to
        the step's sums on the device."""
        loss = loss / self.accum_steps
        self.scaler.scale(loss).backward()
        for name, value in {"loss": loss, **{k: v / self.accum_steps for k, v in values.items()}}.items():
            value = value.detach().float()
            self._sums[name] = value if name not in self._sums else self._sums[name] + value

    def step(self, step: int) -> StepResult:
        """End the accumulation: average the sums over processes, set the learning rate of `step`, and apply the
        update when the loss is finite (clipping first, EMA after); gradients are zeroed either way."""
        names = list(self._sums)
        sums = torch.stack([self._sums[name] for name in names])
        self._sums = {}
        if self.ctx.is_distributed:
            torch.distributed.all_reduce(sums)
            sums /= self.ctx.world_size
        values = dict(zip(names, sums.tolist(), strict=True))  # the one device-to-host read of the step
        loss = values.pop("loss")
        lr = self.schedule.step(self.optimizer, step)
        taken = self.guard.check(loss, step=step)
        if taken:
            if self.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss=loss, lr=lr, taken=taken, values=values)

    def state_dict(self) -> dict[str, Any]:
        """Scaler, schedule, skipped-step count and EMA weights, under the keys the recipes' checkpoints use."""
        state: dict[str, Any] = {
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "skipped_steps": self.guard.skipped,
            "bad_steps_in_a_row": self.guard.consecutive,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> str | None:
        """Restore from a checkpoint's dict (other keys are ignored); returns a note when `ema` is on but the
        checkpoint has no EMA weights (the average then starts now)."""
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.guard.skipped = state["skipped_steps"]
        self.guard.consecutive = state.get("bad_steps_in_a_row", 0)  # checkpoints before 2026-12-04 lack it
        if self.ema is None:
            return None
        if state.get("ema") is None:
            return "--ema: the checkpoint has no EMA weights (a run without --ema); the average starts now"
        self.ema.load_state_dict(state["ema"])
        return None
