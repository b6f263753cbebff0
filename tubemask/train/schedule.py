"""Learning-rate schedules: batch-size scaling, per-step linear warmup then cosine decay, and applying an lr to groups.

VideoMAE sets `lr = base_lr * total_batch / 256`, warms up linearly from `warmup_start_lr` for `warmup_steps`, then
follows a half cosine down to `min_lr` at `total_steps`. The schedule here is per optimizer step (not per epoch), so
gradient accumulation and resumption need no special cases: pass the optimizer step count.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch

__all__ = ["scaled_lr", "cosine_schedule", "apply_lr", "apply_weight_decay", "WarmupCosine"]


def scaled_lr(base_lr: float | int, total_batch: int, reference: int = 256) -> float:
    """The linear scaling rule: `base_lr * total_batch / reference`.

    Args:
        base_lr: learning rate quoted for a batch of `reference` clips, `> 0`.
        total_batch: clips per optimizer step over all processes and accumulation steps, `> 0`.
        reference: the batch size `base_lr` refers to (VideoMAE: 256).

    Raises:
        ValueError: when any argument is not positive.
    """
    for name, value in (("base_lr", base_lr), ("total_batch", total_batch), ("reference", reference)):
        if value <= 0:
            raise ValueError(f"scaled_lr: {name} must be > 0, got {value}")
    return float(base_lr * total_batch / reference)


def cosine_schedule(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lr: float | int,
    min_lr: float | int,
    warmup_start_lr: float | int = 0.0,
) -> float:
    """Learning rate at optimizer step `step`: linear warmup, then half-cosine decay to `min_lr`.

    During warmup (`step < warmup_steps`) the value goes linearly from `warmup_start_lr` at step 0 towards `base_lr`;
    from `warmup_steps` to `total_steps` it is `min_lr + (base_lr - min_lr) * (1 + cos(pi * progress)) / 2`; from
    `total_steps` on it stays at `min_lr`.

    Args:
        step: optimizer step, `>= 0`.
        total_steps: steps of the whole run, `> 0`.
        warmup_steps: steps of linear warmup, in `[0, total_steps]`.
        base_lr: peak learning rate.
        min_lr: final learning rate.
        warmup_start_lr: learning rate at step 0 when `warmup_steps > 0`.

    Raises:
        ValueError: when `step < 0`, `total_steps <= 0` or `warmup_steps` is outside `[0, total_steps]`.
    """
    if step < 0:
        raise ValueError(f"cosine_schedule: step must be >= 0, got {step}")
    if total_steps <= 0:
        raise ValueError(f"cosine_schedule: total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"cosine_schedule: warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
    if step >= total_steps:
        return float(min_lr)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float | int) -> None:
    """Set every group's lr to `lr * group.get("lr_scale", 1.0)` (layer-wise decay is kept in `lr_scale`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def apply_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float | int) -> None:
    """Set the weight decay of every group that decays; groups with `weight_decay == 0` (no-decay groups) stay at 0."""
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0) > 0:
            group["weight_decay"] = weight_decay


@dataclass
class WarmupCosine:
    """The numbers of a warmup + cosine schedule, callable per step, and savable in a checkpoint.

    Optionally the weight decay also follows a cosine from `weight_decay` to `weight_decay_end` (no warmup), as in
    some VideoMAE fine-tuning scripts; leave `weight_decay_end=None` to keep it fixed.

    Attributes:
        total_steps: optimizer steps of the whole run.
        warmup_steps: linear warmup steps.
        base_lr: peak learning rate (after batch-size scaling).
        min_lr: final learning rate.
        warmup_start_lr: learning rate at step 0.
        weight_decay: starting weight decay (only used with `weight_decay_end`).
        weight_decay_end: final weight decay, or `None` for a fixed weight decay.

    Example:
        ```python
        sched = WarmupCosine(total_steps=1000, warmup_steps=100, base_lr=1.5e-4, min_lr=1e-6)
        for step in range(start, sched.total_steps):
            sched.step(optimizer, step)
            ...
        ```
    """

    total_steps: int
    warmup_steps: int
    base_lr: float | int
    min_lr: float | int = 0.0
    warmup_start_lr: float | int = 0.0
    weight_decay: float | int | None = None
    weight_decay_end: float | int | None = None

    def __post_init__(self) -> None:
        cosine_schedule(
            0,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            base_lr=self.base_lr,
            min_lr=self.min_lr,
            warmup_start_lr=self.warmup_start_lr,
        )
        if (self.weight_decay_end is None) != (self.weight_decay is None):
            raise ValueError("WarmupCosine: set both weight_decay and weight_decay_end for a weight-decay cosine")
        if self.weight_decay is not None and (self.weight_decay <= 0 or self.weight_decay_end <= 0):
            # apply_weight_decay tells decayed groups by weight_decay > 0, so a scheduled value may never reach 0.
            raise ValueError(
                f"WarmupCosine: weight_decay and weight_decay_end must be > 0, got {self.weight_decay} and "
                f"{self.weight_decay_end}"
            )

    def lr(self, step: int) -> float:
        """Learning rate at optimizer step `step`."""
        return cosine_schedule(
            step,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            base_lr=self.base_lr,
            min_lr=self.min_lr,
            warmup_start_lr=self.warmup_start_lr,
        )

    def wd(self, step: int) -> float | None:
        """Weight decay at optimizer step `step`, or `None` when the weight decay is fixed."""
        if self.weight_decay is None or self.weight_decay_end is None:
            return None
        return cosine_schedule(
            step, total_steps=self.total_steps, warmup_steps=0, base_lr=self.weight_decay, min_lr=self.weight_decay_end
        )

    def step(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Apply the lr (and the weight decay, if scheduled) of `step` to `optimizer`; return the lr."""
        lr = self.lr(step)
        apply_lr(optimizer, lr)
        wd = self.wd(step)
        if wd is not None:
            apply_weight_decay(optimizer, wd)
        return lr

    def state_dict(self) -> dict:
        """The schedule's numbers, as plain values (loadable with `torch.load(weights_only=True)`)."""
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore numbers saved by [state_dict][tubemask.train.schedule.WarmupCosine.state_dict].

        Raises:
            KeyError: when `state` has keys that are not fields of the schedule.
        """
        names = {f.name for f in fields(self)}
        unknown = set(state) - names
        if unknown:
            raise KeyError(
                f"WarmupCosine.load_state_dict: unknown keys {sorted(unknown)}; expected a subset of {sorted(names)}"
            )
        for key, value in state.items():
            setattr(self, key, value)
        self.__post_init__()
