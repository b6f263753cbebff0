"""The committed tables under docs/results/data_efficiency/ are what their commands make from the committed result
files: a change to the tables' code, or a result file added without its table made again, shows here. The designs
tables are made by `python -m tubemask.eval.designs` (each entry of TABLES is the command the docs give for it, in
docs/data_efficiency.md and the method pages); each study folder's `summary.md` by `recipes/data_efficiency.py
--summarise-only` over the seeds the folder has results for, with the `--baselines-dir` its `config.json` names."""

import dataclasses
import json
from pathlib import Path

import pytest
from recipe_helpers import load_recipe

from tubemask.eval.designs import main

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "data_efficiency"

TABLES = {  # the table's folder / name: the study folders, then the options after them (`--reference confirm` unless
    # they name another)
    "pool-5x/designs": ["pool-5x"],
    "pool-20x/designs": ["pool-5x", "pool-20x"],
    "pool-shifted-5x/designs": ["pool-shifted-5x", "pool-5x"],
    "masking/designs": [
        *("mask-frame-0.5", "mask-frame-0.75", "mask-random-0.5", "mask-random-0.75", "mask-random-0.9"),
        *("mask-tube-0.5", "mask-tube-0.9", "--lrs", "0.002", "0.004", "--factors", "mask", "ratio"),
    ],
    "finetune-motion-drop-0.4/designs": ["finetune-motion-drop-0.4"],
    "finetune-motion-drop-0.4-scratch/designs": ["finetune-motion-drop-0.4-scratch", "--arms", "scratch"],
    "method-motion-aware/designs": ["method-motion-aware"],
    "method-motion-aware-random/designs": ["method-motion-aware-random"],
    "method-motion-guided/designs": ["method-motion-guided"],
    "method-hog/designs": ["method-hog"],
    "method-teacher/designs": ["method-teacher"],
    "method-motion-aware-4870/designs": ["method-motion-aware-4870"],
    "method-motion-aware-4870/designs-against-2000-steps": [
        *("method-motion-aware-4870", "--reference", "method-motion-aware"),
    ],
    "tube-5655/designs": ["tube-5655"],
    "method-teacher/designs-against-tube-5655": ["method-teacher", "--reference", "tube-5655"],
    "methods/designs": sorted(p.name for p in RESULTS.glob("method-*")),  # the docs' `method-*`
}


def test_every_committed_table_is_listed():
    committed = {str(p.relative_to(RESULTS).with_suffix("")) for p in RESULTS.glob("*/designs*.md")}
    assert committed == set(TABLES), "add the table's command to TABLES (or remove the stale table)"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_committed_table_is_made_again_from_the_result_files(table, tmp_path):
    args = [a if a.startswith("-") or not (RESULTS / a).is_dir() else str(RESULTS / a) for a in TABLES[table]]
    out = tmp_path / "designs"
    if "--reference" not in args:
        args += ["--reference", str(RESULTS / "confirm")]
    assert main([*args, "--output", str(out)]) == 0
    assert out.with_suffix(".md").read_text() == (RESULTS / f"{table}.md").read_text(), f"{table}.md is stale"


SUMMARIES = sorted(str(p.parent.relative_to(RESULTS)) for p in RESULTS.glob("*/summary.md"))


def test_the_summaries_are_found():
    assert {"confirm", "pool-5x", "method-teacher"} <= set(SUMMARIES)


@pytest.mark.parametrize("folder", SUMMARIES)
def test_committed_summary_is_made_again_from_the_result_files(folder):
    recipe = load_recipe("data_efficiency")
    config = json.loads((RESULTS / folder / "config.json").read_text())
    cfg = recipe.ExperimentConfig(
        output_dir=RESULTS / folder,
        seeds=(),  # the seeds with result files here; `--baselines-dir` adds its arms to those
        baselines_dir=ROOT / config["baselines_dir"] if config["baselines_dir"] else None,
        data=dataclasses.replace(recipe.DataConfig(), num_classes=config["data"]["num_classes"]),
    )
    table = recipe.summary_table(cfg, recipe.study_results(cfg))
    assert table == (RESULTS / folder / "summary.md").read_text(), f"{folder}/summary.md is stale"
