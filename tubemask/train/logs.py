"""Training logs: a resumable JSON-lines log, its loss plot, smoothed meters, throughput, and TensorBoard.

The JSON-lines file is the run's record: one object per line with a `step` key, flushed as it is written, readable
with any tool (`pandas.read_json(path, lines=True)`). On resume from step `s`, lines with `step > s` (written after
the checkpoint the run resumes from) are dropped, so the log never holds two histories.
"""

import json
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tubemask.atomic import atomic_path

__all__ = ["JsonlLogger", "read_jsonl", "plot_loss_curve", "SmoothedValue", "ThroughputMeter", "TensorBoardWriter"]


def _plain(value: Any) -> Any:
    """A JSON-serialisable version of a logged value (tensors and NumPy scalars become Python numbers)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"JsonlLogger: can only log single-element tensors, got shape {tuple(value.shape)}")
        return value.item()
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return value.item()
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; a torn last line (a crash mid-write) is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class JsonlLogger:
    """Append one JSON object per call to a file, flushed line by line.

    Args:
        path: the `.jsonl` file; parent directories are created.
        resume_step: when resuming from the checkpoint of this step, records with `step > resume_step` are removed
            first (atomically). `None` keeps the file as it is and appends.

    Example:
        ```python
        with JsonlLogger("runs/pretrain/log.jsonl", resume_step=start - 1) as log:
            log.log(step, loss=loss, lr=lr)
        ```
    """

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self.truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if self._file.tell() > 0 and not self._ends_with_newline():
            self._file.write("\n")  # a torn last line from a crash must not swallow the next record
            self._file.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def truncate_after(self, step: int) -> int:
        """Drop records with `step > step` (and torn lines); return how many records were dropped."""
        records = read_jsonl(self.path)
        kept = [r for r in records if not (isinstance(r.get("step"), (int, float)) and r["step"] > step)]
        reopen = getattr(self, "_file", None) is not None and not self._file.closed
        if reopen:
            self._file.close()
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in kept:
                f.write(json.dumps(record) + "\n")
        if reopen:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return len(records) - len(kept)

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        """Write `{"step": step, **values}` as one line and flush it; return the record.

        Values may be numbers, strings, single-element tensors or NumPy scalars; NaN and infinity are written as
        JSON `NaN` / `Infinity` (Python's `json` reads them back).
        """
        record = {"step": int(step), **{key: _plain(value) for key, value in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> "JsonlLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_loss_curve(
    jsonl_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    key: str = "loss",
    log_y: bool = False,
    title: str | None = None,
) -> Path:
    """Plot `key` against `step` from a JSON-lines log into a PNG (matplotlib Agg, no display needed).

    Non-finite values are left out of the curve. The PNG is written atomically.

    Args:
        jsonl_path: the log written by [JsonlLogger][tubemask.train.logs.JsonlLogger].
        png_path: the picture to write.
        key: the record key to plot.
        log_y: logarithmic y axis.
        title: figure title (default: the key).

    Raises:
        ValueError: when no record holds a finite number under `key`.
        ImportError: when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plot_loss_curve needs matplotlib: pip install matplotlib") from error
    points = [
        (r["step"], float(r[key]))
        for r in read_jsonl(jsonl_path)
        if "step" in r and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    if not points:
        raise ValueError(f"plot_loss_curve: no record in {jsonl_path} has a finite number under key {key!r}")
    steps, values = zip(*points, strict=True)
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)  # attaches the Agg canvas; no global pyplot state
    axes = figure.add_subplot()
    axes.plot(steps, values, linewidth=1.0)
    axes.set_xlabel("step")
    axes.set_ylabel(key)
    axes.set_title(title or key)
    if log_y and min(values) > 0:
        axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
    return png_path


class SmoothedValue:
    """A running series with a windowed median / mean and a global mean (as in the MAE / VideoMAE loggers).

    Args:
        window: how many of the latest values the windowed statistics use, `>= 1`.
    """

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"SmoothedValue: window must be >= 1, got {window}")
        self._window: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.count = 0

    def update(self, value: float | int | torch.Tensor, n: int = 1) -> None:
        """Add `value`, weighing it as `n` samples in the global mean."""
        value = float(_plain(value))
        self._window.append(value)
        self.total += value * n
        self.count += n

    @property
    def value(self) -> float:
        """The latest value (NaN before any update)."""
        return self._window[-1] if self._window else math.nan

    @property
    def median(self) -> float:
        """Median over the window."""
        if not self._window:
            return math.nan
        return float(torch.tensor(list(self._window), dtype=torch.float64).median().item())

    @property
    def avg(self) -> float:
        """Mean over the window."""
        return sum(self._window) / len(self._window) if self._window else math.nan

    @property
    def global_avg(self) -> float:
        """Weighted mean over every update."""
        return self.total / self.count if self.count else math.nan


class ThroughputMeter:
    """Clips per second and the share of wall time spent waiting for data, over a window of steps.

    Call [data_ready][tubemask.train.logs.ThroughputMeter.data_ready] when a batch arrives and
    [step][tubemask.train.logs.ThroughputMeter.step] when its optimizer step is done. With several batches per
    step (gradient accumulation), also call [fetching][tubemask.train.logs.ThroughputMeter.fetching] before each
    fetch, so that only the fetches count as waiting, not the compute of the micro-steps between them. On CUDA, the
    step timing is only meaningful if the caller synchronises (e.g. `loss.item()`) before `step`.

    Args:
        window: steps the rates are averaged over.
        clock: a monotonic clock in seconds (injectable for tests).

    Example:
        ```python
        meter = ThroughputMeter()
        for batch in loader:
            meter.data_ready()
            loss = train_step(batch)
            meter.step(batch.shape[0])
        print(meter.clips_per_s, meter.data_wait_share)
        ```
    """

    def __init__(self, window: int = 20, *, clock: Callable[[], float] = time.perf_counter) -> None:
        if window < 1:
            raise ValueError(f"ThroughputMeter: window must be >= 1, got {window}")
        self._clock = clock
        self._steps: deque[tuple[int, float, float]] = deque(maxlen=window)  # (clips, data seconds, total seconds)
        self._last_end = clock()
        self._fetch_start: float | None = None
        self._wait = 0.0

    def reset(self) -> None:
        """Start timing afresh from now (e.g. after evaluation or a checkpoint save)."""
        self._steps.clear()
        self._last_end = self._clock()
        self._fetch_start = None
        self._wait = 0.0

    def fetching(self) -> None:
        """Mark that the next batch is being asked for; the time until `data_ready` counts as data wait."""
        self._fetch_start = self._clock()

    def data_ready(self) -> None:
        """Mark that the batch has arrived. After `fetching`, the time since then counts as data wait; without it,
        the time since the last step does (one batch per step)."""
        now = self._clock()
        if self._fetch_start is not None:
            self._wait += now - self._fetch_start
            self._fetch_start = None
        else:
            self._wait = now - self._last_end

    def step(self, clips: int) -> None:
        """Mark the end of a step that processed `clips` clips (on this process)."""
        now = self._clock()
        self._steps.append((clips, self._wait, now - self._last_end))
        self._last_end = now
        self._wait = 0.0

    @property
    def clips_per_s(self) -> float:
        """Clips per second over the window (NaN before the first step)."""
        seconds = sum(s[2] for s in self._steps)
        return sum(s[0] for s in self._steps) / seconds if seconds > 0 else math.nan

    @property
    def data_wait_share(self) -> float:
        """Fraction in `[0, 1]` of the window's wall time spent waiting for data (NaN before the first step)."""
        seconds = sum(s[2] for s in self._steps)
        return sum(s[1] for s in self._steps) / seconds if seconds > 0 else math.nan


class TensorBoardWriter:
    """A thin wrapper over `torch.utils.tensorboard.SummaryWriter` that logs keyword scalars per step.

    Args:
        log_dir: the TensorBoard run directory.

    Raises:
        ImportError: when the `tensorboard` package is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardWriter needs the tensorboard package: pip install tensorboard "
                "(or log with JsonlLogger alone)"
            ) from error
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, **scalars: Any) -> None:
        """Write each scalar under its keyword name at `step`."""
        for key, value in scalars.items():
            self._writer.add_scalar(key, float(_plain(value)), global_step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
