"""scripts/studies.sh: every job of the queued plan is a command the data-efficiency recipe accepts, on the frozen
design, with the splits and model of the confirmatory study it is compared with. A typo in the plan would otherwise
surface hours into an unattended run."""

import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

import pytest
import tyro
from recipe_helpers import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("docs/results/data_efficiency")
SECTIONS = ("data", "model", "pretrain", "finetune")


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("data_efficiency")


@pytest.fixture(scope="module")
def jobs(recipe, tmp_path_factory):
    claims = tmp_path_factory.mktemp("claims")
    out = subprocess.run(
        ["bash", "scripts/studies.sh", "--commands"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TUBEMASK_STUDY_CLAIMS": str(claims)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = [shlex.split(line) for line in out.splitlines()]
    assert all(c[:2] == ["python", "recipes/data_efficiency.py"] for c in commands)
    return [tyro.cli(recipe.ExperimentConfig, args=c[2:]) for c in commands]


def committed_config(folder: Path, recipe=None) -> dict:
    """A folder's `config.json`, with the options it predates at their defaults (as the recipe reads it)."""
    config = json.loads((ROOT / folder / "config.json").read_text())
    if recipe is None:
        return config
    defaults = as_json(recipe.ExperimentConfig())
    return {k: {**defaults[k], **v} if isinstance(v, dict) else v for k, v in config.items()}


def as_json(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def test_plan_is_one_job_per_folder_and_seed_in_the_order_they_run(jobs):
    order = [str(cfg.output_dir.name) for cfg in jobs]
    folders = list(dict.fromkeys(order))
    assert folders == [
        "confirm",
        "pool-5x",
        "pool-20x",
        "pool-shifted-5x",
        *(f"mask-{cell}" for cell in ("tube-0.5", "tube-0.9", "random-0.5", "random-0.75", "random-0.9")),
        "mask-frame-0.5",
        "mask-frame-0.75",
        "method-motion-aware",
        "method-motion-aware-random",
        "finetune-motion-drop-0.4",
        "finetune-motion-drop-0.4-scratch",
        "method-motion-guided",
        "method-hog",
        "method-teacher",
        "method-motion-aware-4870",
        "tube-5655",
    ]
    seeds = {f: [cfg.seeds for cfg in jobs if cfg.output_dir.name == f] for f in folders}
    assert seeds["confirm"] == [(s,) for s in range(100, 110)]
    assert all(seeds[f] == [(s,) for s in range(100, 105)] for f in folders if not f.startswith(("confirm", "mask-")))
    assert all(seeds[f] == [(100,), (101,), (102,)] for f in folders if f.startswith("mask-"))


def test_every_job_runs_the_frozen_design_but_for_what_its_step_changes(recipe, jobs):
    frozen = committed_config(RESULTS / "confirm", recipe)
    for cfg in jobs:
        if cfg.output_dir.name == "confirm":
            assert set(cfg.arms) == set(recipe.ARMS) and cfg.baselines_dir is None
            assert {s: as_json(cfg)[s] for s in SECTIONS} == {s: frozen[s] for s in SECTIONS}
            continue
        if cfg.output_dir.name.startswith("finetune-"):  # fine-tuning-side: the confirmatory encoders, refitted
            assert cfg.baselines_dir is None
            if cfg.arms == ("pretrained",):
                assert cfg.pretrained_dir == RESULTS / "confirm"
            else:
                assert cfg.arms == ("scratch",) and cfg.pretrained_dir is None
            ours = as_json(dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, motion_drop=0.0)))
            assert {s: ours[s] for s in SECTIONS} == {s: frozen[s] for s in SECTIONS}
            assert cfg.finetune.motion_drop == 0.4
            continue
        assert cfg.arms == ("pretrained", "pretrained_probe")
        assert cfg.baselines_dir == RESULTS / "confirm"
        assert cfg.threads == 1 and not cfg.quick
        recipe.check_baselines(dataclasses.replace(cfg, baselines_dir=ROOT / RESULTS / "confirm"))
        if cfg.pretrain.target == "teacher":
            assert cfg.pretrain.teacher == RESULTS / "confirm" / f"seed{cfg.seeds[0]}" / "pretrained.pt"


def per_seed(config: dict, seeds: list[int]) -> dict:
    """`config`'s option sections with a file of the run's own seed folder (the teacher, `seed{N}/pretrained.pt` of
    the job's seed N) written as the plan writes it, `seed{seed}`."""
    sections = {s: dict(config[s]) for s in SECTIONS}
    if sections["pretrain"].get("teacher") and len(seeds) == 1:
        sections["pretrain"]["teacher"] = sections["pretrain"]["teacher"].replace(f"/seed{seeds[0]}/", "/seed{seed}/")
    return sections


def test_jobs_resume_the_folders_already_committed(recipe, jobs):
    """A folder with results on main was started with the options its job now gives (only seeds and arms differ, and
    the file of each job's own seed: the teacher)."""
    for cfg in jobs:
        if (ROOT / cfg.output_dir / "config.json").is_file():
            theirs = committed_config(cfg.output_dir, recipe)
            ours = as_json(cfg)
            assert per_seed(ours, ours["seeds"]) == per_seed(theirs, theirs["seeds"]), cfg.output_dir
