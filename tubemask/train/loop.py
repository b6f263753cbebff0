"""Where a resumable run stands: epochs, accumulation micro-steps and optimizer steps, in one object.

The recipes' loops all have the same shape: for each epoch, point the sampler at the epoch (and, after a resume, at the
batch to start from), draw micro-batches, take an optimizer step every `accum_steps` of them, end the epoch before a
tail shorter than `accum_steps`, and stop at `end_step`. [TrainLoop][tubemask.train.loop.TrainLoop] does that
bookkeeping and keeps `step`, `epoch` and `batch_in_epoch` (what a checkpoint needs to resume exactly); the recipe keeps
the step body.

Example:
    ```python
    loop = TrainLoop(loader, sampler, dataset, accum_steps=2, epochs=10)
    for epoch in loop.epochs():
        for batch in loop.batches():
            loss = model(batch).loss
            loss.backward()
            if loop.at_step_end:
                optimizer.step(); optimizer.zero_grad()
                loop.step_taken(clips=batch.shape[0] * 2)
        # the epoch ended (loop.epoch_ended) or the run stops (loop.stopped): evaluate, draw pictures
    ```
"""

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from tubemask.train.logs import ThroughputMeter

__all__ = ["TrainLoop", "BatchLayout"]


@runtime_checkable
class _EpochSampler(Protocol):
    batches_per_epoch: int

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None: ...


class TrainLoop:
    """Epochs, micro-batches and optimizer steps of a run that can stop and resume anywhere.

    Args:
        loader: yields the micro-batches of the epoch the sampler is set to.
        sampler: the loader's sampler ([ResumableDistributedSampler][tubemask.train.sampler.ResumableDistributedSampler]).
        dataset: the loader's dataset; its `set_epoch` is called with the sampler's when it has one.
        accum_steps: micro-batches per optimizer step.
        epochs: epochs of the schedule.
        max_steps: stop after this many optimizer steps without changing the schedule (None: at the schedule's end).

    Raises:
        ValueError: when one epoch holds fewer micro-batches than `accum_steps`.
    """

    def __init__(
        self,
        loader: Iterable[Any],
        sampler: _EpochSampler,
        dataset: Any,
        *,
        accum_steps: int,
        epochs: int,
        max_steps: int | None = None,
    ) -> None:
        if accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
        self.loader, self.sampler, self.dataset = loader, sampler, dataset
        self.accum_steps = accum_steps
        self.epochs_total = epochs
        self.steps_per_epoch = sampler.batches_per_epoch // accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"one epoch has {sampler.batches_per_epoch} batches, fewer than --accum-steps {accum_steps}; lower "
                "--batch-size/--accum-steps or add videos"
            )
        self.total_steps = self.steps_per_epoch * epochs
        self.end_step = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.micro = 0
        self.epoch_ended = False
        self.meter = ThroughputMeter()

    # ---- position, for checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """`step`, `epoch` and `batch_in_epoch` (micro-batches of the epoch already trained on)."""
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a [state_dict][tubemask.train.loop.TrainLoop.state_dict] (extra keys are ignored)."""
        self.step, self.epoch, self.batch_in_epoch = (
            int(state["step"]),
            int(state["epoch"]),
            int(state["batch_in_epoch"]),
        )

    @property
    def stopped(self) -> bool:
        """True once `end_step` or the last epoch is reached."""
        return self.step >= self.end_step or self.epoch >= self.epochs_total

    def warmup_steps(self, warmup_epochs: float) -> int:
        """Optimizer steps of `warmup_epochs` epochs (rounded), at most the whole schedule."""
        return min(self.total_steps, round(warmup_epochs * self.steps_per_epoch))

    def every(self, interval: int | None) -> bool:
        """True when the step just taken is a multiple of `interval` (None or 0: never)."""
        return bool(interval) and self.step % interval == 0

    # ---- iteration ---------------------------------------------------------------------------------------------
    def epochs(self) -> Iterator[int]:
        """The epochs still to train, each with the sampler (and dataset) set to it; stops at `end_step`."""
        while not self.stopped:
            self.sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            self.micro, self.epoch_ended = 0, False
            self.meter.reset()
            yield self.epoch

    def batches(self) -> Iterator[Any]:
        """The micro-batches of the current epoch, until its end (a tail shorter than `accum_steps` is dropped) or
        `end_step`. Inside the body, `at_step_end` says whether this micro-batch completes an optimizer step."""
        batches = iter(self.loader)
        while True:
            self.meter.fetching()  # only the fetches count as data wait, not the micro-steps between them
            try:
                batch = next(batches)
            except StopIteration:
                break
            self.meter.data_ready()
            self.batch_in_epoch += 1
            yield batch
            self.micro = (self.micro + 1) % self.accum_steps
            if self.epoch_ended or self.step >= self.end_step:
                return
        self.epoch, self.batch_in_epoch, self.epoch_ended = self.epoch + 1, 0, True

    @property
    def at_step_end(self) -> bool:
        """True on the last micro-batch of an optimizer step (gradients are then synchronised and applied)."""
        return self.micro == self.accum_steps - 1

    def step_taken(self, clips: int) -> None:
        """Count the optimizer step just taken, which trained on `clips` clips on this process; when it was the
        epoch's last, move to the next epoch (a checkpoint written now resumes there, not in the dropped tail)."""
        self.step += 1
        self.meter.step(clips)
        usable = self.sampler.batches_per_epoch - self.sampler.batches_per_epoch % self.accum_steps
        if self.batch_in_epoch >= usable:
            self.epoch, self.batch_in_epoch, self.epoch_ended = self.epoch + 1, 0, True

    def describe(self, warmup_steps: int) -> str:
        """One log line: steps per epoch, epochs, total and warmup steps, and an early stop."""
        early = f"; stopping early at step {self.end_step} (--max-steps)" if self.end_step < self.total_steps else ""
        return (
            f"{self.steps_per_epoch} steps per epoch, {self.epochs_total} epochs = {self.total_steps} steps, warmup "
            f"{warmup_steps} steps{early}"
        )


@dataclass(frozen=True)
class BatchLayout:
    """What one optimizer step is made of: processes x clips per process and micro-step x accumulation micro-steps.

    A checkpoint part ([Checkpointer.attach][tubemask.train.checkpointer.Checkpointer.attach]): a checkpoint records
    its run's layout, and resuming it under another layout raises, because the data position (micro-batches of this
    process into the epoch), the steps per epoch and so the learning-rate schedule would no longer continue the run
    that was stopped. Checkpoints written before layouts were recorded resume unchecked.
    """

    world_size: int
    batch_size: int | None
    accum_steps: int

    def describe(self) -> str:
        total = "" if self.batch_size is None else f" = {self.world_size * self.batch_size * self.accum_steps} clips"
        return f"{self.world_size} process(es) x batch {self.batch_size} x {self.accum_steps} micro-step(s){total}"

    def state_dict(self) -> dict[str, Any]:
        return {"batch_layout": asdict(self)}

    def load_state_dict(self, state: dict[str, Any]) -> str | None:
        saved = state.get("batch_layout")
        if saved is None:
            return "the checkpoint does not record its batch layout (an older one): resumed without checking it"
        theirs = BatchLayout(**saved)
        if theirs != self:
            raise ValueError(
                f"--resume: the checkpoint was written by {theirs.describe()}, this run has {self.describe()}; its data "
                "position and learning-rate schedule would not continue. Resume with the same number of processes, "
                "--batch-size and --accum-steps, or start a new run in another --output-dir from its weights."
            )
        return None
