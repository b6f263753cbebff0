"""Shared by the recipe tests (recipes are scripts, not a package, so tests load them by path, or start them as
processes) and by the tests that read what a run writes (metrics.jsonl, TensorBoard events)."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import NoReturn

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(name: str) -> ModuleType:
    """Load `recipes/<name>.py` as a fresh module registered under `name` (dataclasses and pickling need it). The
    recipes folder goes on `sys.path`, as for a script run from it, so sibling recipes import their base recipe."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_metrics(output_dir: Path) -> list[dict]:
    """Every row of a run's `metrics.jsonl`, strictly: a line that is not JSON fails the test."""
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard run directory as `(step, value)` pairs, read with tensorboard's own
    event reader (the test is skipped without the tensorboard package)."""
    import pytest

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def cli_args(options: dict) -> list[str]:
    """A recipe config's keyword options as its command line: `True` a bare flag, `False`/`None` left out, a tuple as
    several values."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, tuple):
            args += [flag, *map(str, value)]
        elif value is not False and value is not None:  # not `not in (False, None)`: 0 and 0.0 equal False
            args += [flag, str(value)]
    return args


def free_port() -> int:
    """A TCP port free on localhost now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_worker() -> NoReturn:
    """End a spawned test worker that has finished cleanly (results written, process group destroyed) without the
    interpreter's teardown: gloo can abort there on exit ("terminate called without an active exception", SIGABRT,
    seen in full-suite runs), which would fail a test whose work passed. Call it after the worker's try / finally, so
    that an exception still propagates and fails the test."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def torchrun(recipe: str, options: dict, *, processes: int = 2, timeout: float = 300) -> None:
    """Run `recipes/<recipe>.py` under `torch.distributed.run` with one thread per process; fails the test with the
    tails of stdout and stderr when it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        + ["--master-port", str(free_port()), str(RECIPES / f"{recipe}.py"), *cli_args(options)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
