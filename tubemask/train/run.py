"""The run context every recipe starts with, in the manner of torchtune's recipes: the recipe assembles data, model
and loop body; the run does the I/O and the distributed work. Processes and device, precision, the output directory,
rank-0 logging, the metric sinks (JSON lines, TensorBoard, a progress bar), the bad-video journal, model preparation
(DDP / FSDP2 / compile, the optimizer built after wrapping), checkpoints and resume, the optimizer-step tail; and the
run's orderly end.

Example:
    ```python
    run = Run.start(cfg)                                   # cfg: a TrainConfig subclass
    sampler, loader = run.train_loader(dataset, batch_size=8, seed=0, workers=2, collate_fn=collate)
    loop = TrainLoop(loader, sampler, dataset, accum_steps=1, epochs=10)
    prepared = run.prepare(model, loop, lr=1e-3, build_optimizer=lambda m: build_adamw(m, lr=1e-3, weight_decay=0.05))
    run.open_metrics(resume_step=loop.step, tensorboard=False, total_steps=loop.end_step, desc="train")
    for _ in loop.epochs():
        for batch in loop.batches():
            with run.stepper.accumulating(prepared.train_model, last=loop.at_step_end):
                with run.autocast():
                    loss = prepared.train_model(batch).loss
                run.stepper.backward(loss)
            if loop.at_step_end:
                values = run.optimizer_step(loop, clips=8)
                run.log_step(loop.step, **values)
                run.save(loop, every=None)
    run.checkpointer.save_final(run.out / "final.pt")
    run.finish()
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
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from tubemask.data.failures import FailureLog
from tubemask.train.checkpointer import Checkpointer
from tubemask.train.config import TrainConfig, config_dict
from tubemask.train.distributed import DistributedContext, cleanup, setup_distributed
from tubemask.train.even_calls import max_over_ranks
from tubemask.train.logs import JsonlLogger, TensorBoardWriter
from tubemask.train.loop import BatchLayout, TrainLoop
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.prepare import PreparedModel, prepare_model
from tubemask.train.sampler import ResumableDistributedSampler, resumable_loader
from tubemask.train.schedule import WarmupCosine
from tubemask.train.seeding import rank_seed
from tubemask.train.step import OptimizerStep

__all__ = ["AMP_DTYPES", "Precision", "Run", "script_main"]

Precision = Literal["fp32", "bf16", "fp16"]
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each `--precision` (None: no autocast)."""
T = TypeVar("T")
LARGE_MODELS = ("large", "huge")
"""Size presets that `--sharding auto` shards with FSDP2 under torchrun."""


@dataclass
class Run:
    """One process's view of a training run.

    Attributes:
        cfg: the run's options.
        ctx: rank, world size and device.
        out: the output directory (created by rank 0).
        precision: `"fp32"`, `"bf16"` or `"fp16"` (autocast dtype in `amp_dtype`).
        journal: this rank's bad-video journal; datasets append to it, `finish` reports every rank's.
        checkpointer: the run's checkpoints (numbered and final).
        state: the checkpoint a resumed run continues from (None: a fresh run).
        stepper: the optimizer-step tail, once [prepare][tubemask.train.run.Run.prepare] has built it.
    """

    cfg: TrainConfig
    ctx: DistributedContext
    out: Path
    precision: Precision
    journal: str
    checkpointer: Checkpointer | None = None
    state: dict[str, Any] | None = None
    stepper: OptimizerStep | None = None
    metrics: JsonlLogger | None = None
    tensorboard: TensorBoardWriter | None = None
    bar: tqdm | None = None
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, cfg: TrainConfig) -> "Run":
        """Start the process group (under torchrun), pick the device and precision (default bf16 on CUDA, fp32 on the
        CPU), create the output directory on rank 0, seed the global RNG the same on every rank (same initial
        weights everywhere), and under `--resume` read the latest checkpoint (restored by
        [prepare][tubemask.train.run.Run.prepare]). A run that starts afresh forgets the bad videos an earlier run
        in the same directory met."""
        ctx = setup_distributed(cfg.device)
        precision = cfg.precision or ("bf16" if ctx.device.type == "cuda" else "fp32")
        if precision not in AMP_DTYPES:
            raise ValueError(f"--precision must be one of {', '.join(AMP_DTYPES)}, got {precision!r}")
        out = cfg.output_dir
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        run = cls(cfg=cfg, ctx=ctx, out=out, precision=precision, journal=str(FailureLog.journal_file(out, ctx.rank)))
        run.checkpointer = Checkpointer(out, ctx=ctx, config=config_dict(cfg), keep_last=cfg.keep_checkpoints)
        run.state = run.checkpointer.load_latest() if cfg.resume else None
        if cfg.resume and run.state is None:
            run.log(f"--resume: no checkpoint in {out}, starting from scratch")
        if run.state is None and run.is_main:
            FailureLog.remove_run_journals(out)
        return run

    @property
    def resumed(self) -> bool:
        """True when the run continues from a checkpoint (its weights then come from there)."""
        return self.state is not None

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

    def prepare(
        self,
        model: nn.Module,
        loop: TrainLoop,
        *,
        lr: float,
        build_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        ema_decay: float | None = None,
        reseed_per_rank: bool = False,
    ) -> PreparedModel:
        """Make `model` ready to train and the run resumable: wrap it ([prepare_model][tubemask.train.prepare.
        prepare_model]: `--sharding`, `--compile`, the optimizer built after wrapping), the warmup-cosine schedule
        of `loop` (`--warmup-epochs`, `--min-lr`), the optimizer-step tail (`--accum-steps`, `--clip-grad`, the
        scaler, `--max-bad-steps`, an EMA of the weights with `ema_decay`), the checkpointer; then restore a resumed
        run's checkpoint.

        Args:
            model: the model with its initial (or pretrained) weights.
            loop: the run's training position.
            lr: the peak learning rate.
            build_optimizer: makes the optimizer from the prepared model.
            ema_decay: keep an exponential moving average of the weights (not under FSDP2).
            reseed_per_rank: seed the global RNG per rank before restoring (dropout and drop path then differ
                between ranks).
        """
        cfg = self.cfg
        prepared = prepare_model(
            model,
            self.ctx,
            build_optimizer=build_optimizer,
            sharding=cfg.sharding,
            large=cfg.model in LARGE_MODELS,
            compile=cfg.compile,
            param_dtype=self.amp_dtype,
        )
        if ema_decay is not None and prepared.fsdp:
            raise SystemExit("--ema is not supported with FSDP2 sharding; drop --ema or pass --sharding ddp")
        ema = None
        if ema_decay is not None:
            ema = AveragedModel(prepared.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        schedule = WarmupCosine(loop.total_steps, loop.warmup_steps(cfg.warmup_epochs), base_lr=lr, min_lr=cfg.min_lr)
        self.stepper = OptimizerStep(
            prepared.optimizer,
            schedule,
            ctx=self.ctx,
            accum_steps=cfg.accum_steps,
            guard=NonFiniteGuard(cfg.max_bad_steps, checkpoint=self.checkpointer.latest),
            scaler=torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16"),
            clip_grad=cfg.clip_grad,
            ema=ema,
            model=prepared.model,
        )
        batch_size = getattr(loop.sampler, "batch_size", cfg.batch_size)  # the resumable sampler's, resolved
        layout = BatchLayout(self.ctx.world_size, batch_size, loop.accum_steps)
        self.checkpointer.attach(prepared, loop=loop, stepper=self.stepper, layout=layout)
        if reseed_per_rank:
            torch.manual_seed(rank_seed(cfg.seed, self.ctx.rank))
        if self.state is not None:
            self.log(self.checkpointer.restore(self.state))
        self.log(
            f"{loop.describe(schedule.warmup_steps)}; device {self.device}, precision {self.precision}, "
            f"{self.ctx.world_size} process(es), {prepared.strategy} sharding"
        )
        return prepared

    def optimizer_step(self, loop: TrainLoop, *, clips: int) -> dict[str, float]:
        """End an accumulation ([OptimizerStep.step][tubemask.train.step.OptimizerStep.step]), say in the log when
        a non-finite loss skipped it, count it in `loop` (`clips`: clips it trained on, over all processes), and
        return its metrics: epoch, loss (and the other values given to `backward`), lr, clips/s, data wait."""
        epoch, result = loop.epoch, self.stepper.step(loop.step)
        if not result.taken:
            skipped = self.stepper.guard.skipped
            self.log(f"step {loop.step}: non-finite loss {result.loss}, step skipped ({skipped} so far)")
        loop.step_taken(clips)
        values = {"epoch": epoch, "loss": result.loss, **result.values, "lr": result.lr}
        return values | {"clips_per_s": loop.meter.clips_per_s, "data_wait": loop.meter.data_wait_share}

    def eval_calls(self, batches: int) -> int | None:
        """For an evaluation of `batches` batches on this rank: under FSDP2 the most batches any rank has (a
        sharded forward is a collective, so every rank makes that many calls, see
        [pad_calls][tubemask.train.even_calls.pad_calls]); None otherwise."""
        return max_over_ranks(batches, self.ctx) if self.checkpointer.prepared.fsdp else None

    def save(self, loop: TrainLoop, *, every: int | None) -> None:
        """Checkpoint when the step just taken is a multiple of `every` (default: once per epoch) or the last one
        (every rank calls it: gathering FSDP2 shards is a collective)."""
        if loop.every(every or loop.steps_per_epoch) or loop.step == loop.end_step:
            self.checkpointer.save(loop.step)

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
        cleanup()  # a barrier first on a clean exit, none while an exception propagates


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
