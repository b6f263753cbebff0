"""Skip optimizer steps whose loss is NaN or infinite, and stop the run when that keeps happening.

A single non-finite loss (a bad clip, a bf16 overflow) is skipped: the caller zeroes the gradients and moves on. Many in
a row mean the run has diverged; continuing only burns compute, so the guard raises, naming the step and the last good
checkpoint to resume from (usually with a lower learning rate).
"""

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["NonFiniteGuard"]

CheckpointSource = str | os.PathLike | Callable[[], str | os.PathLike | None] | None


class NonFiniteGuard:
    """Count non-finite losses; raise after `max_consecutive` of them in a row.

    In distributed runs pass the same value on every rank (e.g. the all-reduced loss), so all ranks skip together.

    Args:
        max_consecutive: non-finite steps in a row that are tolerated, `>= 1`; the next one raises.
        checkpoint: the last good checkpoint named in the error: a path, or a callable returning it such as
            `CheckpointManager.latest`, or `None`.

    Example:
        ```python
        guard = NonFiniteGuard(max_consecutive=5, checkpoint=manager.latest)
        loss = model(batch)
        if guard.check(loss, step=step):
            loss.backward(); optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ```
    """

    def __init__(self, max_consecutive: int = 5, *, checkpoint: CheckpointSource = None) -> None:
        if max_consecutive < 1:
            raise ValueError(f"NonFiniteGuard: max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.checkpoint = checkpoint
        self.consecutive = 0
        self.skipped = 0
        self.last_bad_step: int | None = None

    def _checkpoint_path(self) -> Path | None:
        source = self.checkpoint() if callable(self.checkpoint) else self.checkpoint
        return None if source is None else Path(source)

    def check(self, loss: float | int | torch.Tensor, *, step: int | None = None) -> bool:
        """Return True when `loss` is finite (take the step), False when the step should be skipped.

        Args:
            loss: the step's loss; a tensor must be finite in every element.
            step: the optimizer step, for the error message.

        Raises:
            RuntimeError: on the `max_consecutive`-th non-finite loss in a row.
        """
        if isinstance(loss, torch.Tensor):
            finite = bool(torch.isfinite(loss.detach()).all().item())
        else:
            finite = math.isfinite(float(loss))
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        self.last_bad_step = step
        if self.consecutive >= self.max_consecutive:
            where = f"at step {step}" if step is not None else "at the latest step"
            path = self._checkpoint_path()
            resume = (
                f"resume from the last good checkpoint {path}" if path is not None else "no checkpoint was saved yet"
            )
            raise RuntimeError(
                f"the loss was NaN or infinite for {self.consecutive} steps in a row, ending {where} "
                f"({self.skipped} skipped in total; the limit is max_consecutive={self.max_consecutive}). "
                f"The run has diverged: {resume}, e.g. with a lower learning rate or longer warmup."
            )
        return False

    def state_dict(self) -> dict[str, int]:
        """Counters, for a checkpoint."""
        return {"consecutive": self.consecutive, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore counters from [state_dict][tubemask.train.nonfinite.NonFiniteGuard.state_dict]."""
        self.consecutive = int(state["consecutive"])
        self.skipped = int(state["skipped"])
