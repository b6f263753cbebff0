"""Shared by the recipe tests (recipes are scripts, not a package, so tests load them by path) and by the tests that
read what a run writes (metrics.jsonl, TensorBoard events)."""

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(name: str) -> ModuleType:
    """Load `recipes/<name>.py` as a fresh module registered under `name` (dataclasses and pickling need it)."""
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
