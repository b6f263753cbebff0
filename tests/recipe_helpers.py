"""Shared by the recipe tests: recipes are scripts, not a package, so tests load them by path."""

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
