"""The run context every recipe starts with: processes and device, precision, the output directory, rank-0 logging,
the metric sinks (JSON lines, TensorBoard, a progress bar) and the bad-video journal; and its orderly end.

Example:
    ```python
    run = Run.start(device="auto", precision=None, output_dir=out, seed=0)
    run.log("effective batch ...")                # rank 0 only
    with run.autocast():
        loss = model(batch).loss
    run.open_metrics(resume_step=0, tensorboard=False, total_steps=100, desc="pretrain")
    run.log_step(step, loss=loss_value, lr=lr)    # metrics.jsonl, TensorBoard, progress bar
    run.finish()                                  # bad-video report, sinks closed, process group destroyed
    ```
"""

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tubemask.data.failures import FailureLog
from tubemask.train.checkpointer import Checkpointer
from tubemask.train.distributed import DistributedContext, cleanup, setup_distributed
from tubemask.train.metrics import JsonlLogger, TensorBoardWriter
from tubemask.train.sampler import ResumableDistributedSampler, resumable_loader

__all__ = ["AMP_DTYPES", "Precision", "Run", "script_main"]

Precision = Literal["fp32", "bf16", "fp16"]
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each `--precision` (None: no autocast)."""
T = TypeVar("T")


@dataclass
class Run:
    """One process's view of a training run.

    Attributes:
        ctx: rank, world size and device.
        out: the output directory (created by rank 0).
        precision: `"fp32"`, `"bf16"` or `"fp16"` (autocast dtype in `amp_dtype`).
        journal: this rank's bad-video journal; datasets append to it, `finish` reports every rank's.
    """

    ctx: DistributedContext
    out: Path
    precision: Precision
    journal: str
    metrics: JsonlLogger | None = None
    tensorboard: TensorBoardWriter | None = None
    bar: tqdm | None = None
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls, *, device: Literal["auto", "cpu", "cuda"], precision: Precision | None, output_dir: Path, seed: int
    ) -> "Run":
        """Start the process group (under torchrun), pick the device and precision (default bf16 on CUDA, fp32 on the
        CPU), create the output directory on rank 0, and seed the global RNG the same on every rank (same initial
        weights everywhere)."""
        ctx = setup_distributed(device)
        precision = precision or ("bf16" if ctx.device.type == "cuda" else "fp32")
        if precision not in AMP_DTYPES:
            raise ValueError(f"--precision must be one of {', '.join(AMP_DTYPES)}, got {precision!r}")
        if ctx.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        return cls(
            ctx=ctx, out=output_dir, precision=precision, journal=str(FailureLog.journal_file(output_dir, ctx.rank))
        )

    @property
    def device(self) -> torch.device:
        """This process's device."""
        return self.ctx.device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype (None under fp32)."""
        return AMP_DTYPES[self.precision]

    @property
    def is_main(self) -> bool:
        """True on rank 0, which logs and writes."""
        return self.ctx.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        """`torch.autocast` at the run's precision (a no-op context under fp32)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled under fp16 only."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def log(self, message: str) -> None:
        """Print on rank 0 (through the progress bar when one is open, so lines do not garble it)."""
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def rank0_first(self, make: Callable[[], T]) -> T:
        """`make()` on rank 0, then, after a barrier, on the other ranks: for a cache that rank 0 fills (a generated
        dataset) and the others then only find."""
        if self.is_main:
            result = make()
        if self.ctx.is_distributed:
            torch.distributed.barrier()
        if not self.is_main:
            result = make()
        return result

    def train_loader(
        self,
        dataset: Any,
        *,
        batch_size: int,
        seed: int,
        workers: int,
        collate_fn: Callable[[list[Any]], Any],
        generator: torch.Generator | None = None,
    ) -> tuple[ResumableDistributedSampler, DataLoader]:
        """The training loader of this rank: bad videos journaled for the end-of-run report, this rank's share of
        each global batch, `(epoch, index)` keys, workers kept across epochs, pinned batches on CUDA (see
        [resumable_loader][tubemask.train.sampler.resumable_loader])."""
        dataset.failures.journal = self.journal
        return resumable_loader(
            dataset,
            batch_size=batch_size,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            seed=seed,
            workers=workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=collate_fn,
            generator=generator,
        )

    def resume_state(self, checkpointer: Checkpointer, resume: bool) -> dict[str, Any] | None:
        """The latest checkpoint under `--resume` (None without one, said in the log); a run that starts afresh
        forgets the bad videos an earlier run in the same directory met."""
        state = checkpointer.load_latest() if resume else None
        if resume and state is None:
            self.log(f"--resume: no checkpoint in {self.out}, starting from scratch")
        if state is None and self.is_main:
            FailureLog.remove_run_journals(self.out)
        return state

    # ---- metrics -----------------------------------------------------------------------------------------------
    def open_metrics(self, *, resume_step: int, tensorboard: bool, total_steps: int, desc: str) -> None:
        """On rank 0: `metrics.jsonl` (records after `resume_step` dropped), TensorBoard scalars when asked, and a
        progress bar over `total_steps` optimizer steps."""
        if not self.is_main:
            return
        self.metrics = JsonlLogger(self.out / "metrics.jsonl", resume_step=resume_step)
        if tensorboard:
            self.tensorboard = TensorBoardWriter(self.out / "tensorboard")
        self.bar = tqdm(
            total=total_steps,
            initial=resume_step,
            dynamic_ncols=True,
            desc=desc,
            file=sys.stdout,
            mininterval=1.0,
        )

    def log_values(self, step: int, **values: Any) -> None:
        """Write `values` at `step` to metrics.jsonl and TensorBoard (rank 0; no bar update)."""
        if self.metrics is not None:
            self.metrics.log(step, **values)
        if self.tensorboard is not None:
            self.tensorboard.log(step, **values)

    def log_step(self, step: int, **values: Any) -> None:
        """Log one optimizer step's values and advance the progress bar (its postfix shows loss, lr, clips/s and
        the share of time spent waiting for data)."""
        if not self.is_main:
            return
        self.log_values(step, **values)
        postfix = {"loss": f"{values['loss']:.4f}", "lr": f"{values['lr']:.2e}"}
        if "clips_per_s" in values:
            postfix["clips_s"] = f"{values['clips_per_s']:.1f}"
        if "data_wait" in values:
            postfix["wait"] = f"{values['data_wait']:.0%}"
        self.bar.set_postfix(postfix)
        self.bar.update(1)

    # ---- the end -----------------------------------------------------------------------------------------------
    def report_bad_videos(self) -> FailureLog:
        """Every process's bad videos (workers and ranks), printed on rank 0."""
        return FailureLog.report_run(self.out, self.log)

    def finish(self) -> None:
        """Close the sinks and destroy the process group (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.metrics is not None:
            self.metrics.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        cleanup()


def script_main(main: Callable[[Any], Any], config: Any) -> None:
    """What a recipe does when started as a script: log records from DataLoader workers (they name each bad video),
    exit on SIGTERM with status 143 (so `finally` blocks and torchrun's teardown run), every core for intra-op work
    unless OMP_NUM_THREADS says otherwise, parse the command line into the `config` dataclass with tyro, run `main`,
    and print the wall time."""
    import tyro

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    start = time.time()
    main(tyro.cli(config))
    print(f"wall time {time.time() - start:.0f} s")
