"""tubemask.eval.designs: designs read from study folders, paired with a reference over common seeds, plotted."""

import json
from pathlib import Path

import pytest

from tubemask.eval.design_folders import other_options, read_design, restrict_learning_rates
from tubemask.eval.designs import compare_designs, compare_factor, design_axis, main
from tubemask.eval.paired_stats import holm, paired_t_test


def write_study(
    folder: Path, scores: dict[int, tuple[float, float]], mask="tube", ratio=0.75, effective=0.75, config=None
):
    if config is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"pretrain": config}))
    for seed, (finetuned, probe) in scores.items():
        d = folder / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "pretrained.json").write_text(json.dumps({"chosen": {"test": finetuned, "val": finetuned, "lr": 1e-3}}))
        (d / "pretrained_probe.json").write_text(json.dumps({"chosen": {"test": probe, "weight_decay": 0.1}}))
        meta = {"seed": seed, "mask": mask, "mask_ratio": ratio, "effective_mask_ratio": effective, "pool_clips": 160}
        (d / "pretrain.json").write_text(json.dumps({**meta, "history": []}))
    return folder


def test_designs_are_paired_with_the_reference_over_common_seeds(tmp_path):
    ref = write_study(tmp_path / "tube-0.75", {0: (0.60, 0.40), 1: (0.62, 0.42), 2: (0.61, 0.41)})
    worse = write_study(
        tmp_path / "frame-0.75", {0: (0.50, 0.30), 1: (0.51, 0.33), 2: (0.49, 0.30), 7: (0.9, 0.9)}, mask="frame"
    )
    same = write_study(tmp_path / "random-0.75", {0: (0.65, 0.40), 1: (0.55, 0.44)}, mask="random")
    table = compare_designs([read_design(worse), read_design(same)], read_design(ref))
    assert "| **tube-0.75** (reference) | tube | 0.75 / 0.750 | - | - | 160 |" in table
    assert "| frame-0.75 | frame | 0.75 / 0.750 | - | - | 160 | 0.600 +- 0.100 (4) |" in table  # seed 7: own row
    assert "| pretrained | frame-0.75 - tube-0.75 | 3 | 0.500 / 0.610 | -0.110 |" in table  # seed 7 is not paired
    assert table.count("| worse |") == 2
    assert "| pretrained | random-0.75 - tube-0.75 | 2 | 0.600 / 0.610 | -0.010 |" in table  # the reference's 2 seeds
    assert "no difference shown" in table
    pairs = [  # the paired rows in order: per arm, per design
        ([0.50, 0.51, 0.49], [0.60, 0.62, 0.61]),
        ([0.65, 0.55], [0.60, 0.62]),
        ([0.30, 0.33, 0.30], [0.40, 0.42, 0.41]),
        ([0.40, 0.44], [0.40, 0.42]),
    ]
    adjusted = holm([paired_t_test(x, y).p for x, y in pairs])  # the four rows are one family
    assert "| p (t-test, Holm over 4) | verdict |" in table
    assert [row.split(" | ")[-2] for row in table.splitlines()[-4:]] == [f"{p:.3g}" for p in adjusted]


def test_a_folder_is_one_design(tmp_path):
    folder = write_study(tmp_path / "mixed", {0: (0.5, 0.3)})
    write_study(folder, {1: (0.5, 0.3)}, mask="random")
    with pytest.raises(ValueError, match="pretrained differently"):
        read_design(folder)
    with pytest.raises(FileNotFoundError, match="no result file"):
        read_design((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_cli_writes_the_table_and_the_plot(tmp_path, capsys):
    ref = write_study(tmp_path / "tube-0.9", {0: (0.6, 0.4), 1: (0.62, 0.42)}, ratio=0.9, effective=0.875)
    other = write_study(tmp_path / "tube-0.5", {0: (0.5, 0.3), 1: (0.52, 0.31)}, ratio=0.5, effective=0.5)
    assert main([str(other), "--reference", str(ref), "--output", str(tmp_path / "out" / "masks")]) == 0
    assert (tmp_path / "out" / "masks.md").read_text().startswith("| design |")
    assert (tmp_path / "out" / "masks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "nowhere"), "--reference", str(ref), "--output", str(tmp_path / "x")]) == 2
    assert "nowhere: not a study folder" in capsys.readouterr().out


def test_the_target_and_step_count_come_from_the_study_config(tmp_path):
    ref = write_study(
        tmp_path / "confirm", {0: (0.6, 0.4), 1: (0.62, 0.42)}, config={"target": "pixels", "steps": 2000}
    )
    hog = write_study(tmp_path / "hog", {0: (0.7, 0.5), 1: (0.71, 0.52)}, config={"target": "hog", "steps": 4870})
    design = read_design(hog)
    assert (design.target, design.steps) == ("hog", 4870)
    table = compare_designs([design], read_design(ref))
    assert "| **confirm** (reference) | tube | 0.75 / 0.750 | pixels | 2000 | 160 |" in table
    assert "| hog | tube | 0.75 / 0.750 | hog | 4870 | 160 |" in table


def test_the_plot_axis_follows_what_the_designs_vary(tmp_path):
    scores = {0: (0.6, 0.4), 1: (0.62, 0.42)}
    tube = read_design(write_study(tmp_path / "tube", scores, config={"target": "pixels", "steps": 2000}))
    pixels = {"target": "pixels", "steps": 2000}
    tube_09 = read_design(write_study(tmp_path / "tube-0.9", scores, ratio=0.9, effective=0.875, config=pixels))
    hog = read_design(write_study(tmp_path / "hog", scores, config={"target": "hog", "steps": 2000}))
    aware = read_design(write_study(tmp_path / "aware", scores, mask="motion_aware", ratio=0.9, effective=0.891))
    assert design_axis([tube, tube_09, hog]) == "ratio"  # tube at two ratios: a sweep
    assert design_axis([tube, hog, aware]) == "design"  # one ratio per kind: methods side by side
    pools = []
    for name, clips, domain in (("5x", 800, "same"), ("20x", 3200, "same"), ("shifted", 800, "shifted")):
        folder = write_study(tmp_path / name, scores, config={"target": "pixels", "steps": 2000})
        (folder / "config.json").write_text(
            json.dumps({"pretrain": {"target": "pixels"}, "data": {"pool_domain": domain}})
        )
        for meta in folder.glob("seed*/pretrain.json"):
            meta.write_text(json.dumps({**json.loads(meta.read_text()), "pool_clips": clips}))
        pools.append(read_design(folder))
    assert design_axis([tube, *pools]) == "pool"
    assert design_axis([tube, pools[2]]) == "design"  # one size per domain
    table = compare_designs(pools, tube)
    assert "| shifted | tube | 0.75 / 0.750 | pixels | - | 800 (shifted) |" in table
    assert "| 5x | tube | 0.75 / 0.750 | pixels | - | 800 |" in table


def test_the_plot_draws_each_axis_with_the_reference_baselines(tmp_path):
    ref = write_study(
        tmp_path / "confirm", {0: (0.6, 0.4), 1: (0.62, 0.42), 2: (0.5, 0.3)}, config={"target": "pixels"}
    )
    for seed, score in ((0, 0.65), (1, 0.66), (2, 0.9)):
        (ref / f"seed{seed}" / "scratch.json").write_text(json.dumps({"chosen": {"test": score}}))
    hog = write_study(tmp_path / "hog", {0: (0.7, 0.5), 1: (0.71, 0.52)}, config={"target": "hog"})
    half = write_study(tmp_path / "tube-0.5", {0: (0.5, 0.3), 1: (0.52, 0.31)}, ratio=0.5, effective=0.5)
    for others, name in (([hog], "methods"), ([half], "ratios")):
        argv = [*map(str, others), "--reference", str(ref), "--output", str(tmp_path / name)]
        assert main(argv) == 0
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _with_runs(folder: Path, seed: int, runs: list[tuple[float, float, float]]) -> None:
    """Give `seed`'s fine-tuned arm a learning-rate grid: `(lr, val, test)` per run, chosen by the study's rule."""
    path = folder / f"seed{seed}" / "pretrained.json"
    rows = [{"lr": lr, "val": val, "test": test} for lr, val, test in runs]
    path.write_text(json.dumps({"runs": rows, "chosen": max(rows, key=lambda r: (r["val"], -r["lr"]))}))


def test_lrs_choose_every_design_again_on_the_grid_they_share(tmp_path, capsys):
    """A reference fine-tuned over 4 learning rates and a design over 2: `--lrs` re-chooses both among the 2 on
    validation (ties to the smaller), from the runs in the files; a rate a file lacks is named."""
    ref = write_study(tmp_path / "confirm", {0: (0.0, 0.4), 1: (0.0, 0.4)})
    _with_runs(ref, 0, [(1e-3, 0.70, 0.50), (2e-3, 0.60, 0.61), (4e-3, 0.65, 0.62), (8e-3, 0.5, 0.4)])
    _with_runs(ref, 1, [(1e-3, 0.70, 0.50), (2e-3, 0.65, 0.63), (4e-3, 0.65, 0.66), (8e-3, 0.5, 0.4)])
    cell = write_study(tmp_path / "tube-0.5", {0: (0.0, 0.4), 1: (0.0, 0.4)}, ratio=0.5, effective=0.5)
    _with_runs(cell, 0, [(2e-3, 0.60, 0.70), (4e-3, 0.50, 0.60)])
    _with_runs(cell, 1, [(2e-3, 0.60, 0.71), (4e-3, 0.50, 0.60)])
    assert compare_designs([read_design(cell)], read_design(ref)).count("| 0.500 +- 0.000 (2) |") == 1  # 1e-3 chosen
    restricted = restrict_learning_rates(read_design(ref), (0.002, 0.004))
    assert [restricted.results[s]["pretrained"]["chosen"]["test"] for s in (0, 1)] == [0.62, 0.63]  # tie: 2e-3
    assert read_design(ref).results[0]["pretrained"]["chosen"]["lr"] == 1e-3  # the files are not changed
    out = tmp_path / "out" / "masks"
    assert main([str(cell), "--reference", str(ref), "--output", str(out), "--lrs", "0.002", "0.004"]) == 0
    table = out.with_suffix(".md").read_text()
    assert table.startswith("The pretrained arm of every design is chosen on validation among lr 0.002, 0.004 only.")
    assert "| pretrained | tube-0.5 - confirm | 2 | 0.705 / 0.625 | +0.080 |" in table  # both on the restricted lrs
    assert main([str(cell), "--reference", str(ref), "--output", str(out), "--lrs", "0.001", "0.002"]) == 2
    assert (
        "tube-0.5/seed0/pretrained.json: fine-tuned at lr [0.002, 0.004], not at every one of"
        in capsys.readouterr().out
    )


def test_factor_effects_pair_every_cell_both_levels_ran(tmp_path):
    """Tube beats random by 0.10 at every ratio and seed: 6 pairs over 2 ratios; frame ran one ratio only, so tube -
    frame pairs 3; ratios pair over the mask types that ran both (tube and random); the reference counts as a cell."""
    noise = {0: 0.0, 1: 0.01, 2: -0.01}

    def cell(name, mask, ratio, score):
        scores = {s: (score + e, 0.3 + e) for s, e in noise.items()}
        return read_design(write_study(tmp_path / name, scores, mask=mask, ratio=ratio, effective=ratio))

    grid = [
        cell("tube-0.9", "tube", 0.9, 0.65),  # before 0.75: the matched ratios are listed ascending all the same
        cell("tube-0.75", "tube", 0.75, 0.60),
        cell("random-0.75", "random", 0.75, 0.50),
        cell("random-0.9", "random", 0.9, 0.55),
        cell("frame-0.75", "frame", 0.75, 0.40),
    ]
    masks = compare_factor(grid, "mask")
    assert "| pretrained | tube - random | 0.75, 0.9 | 6 | 0.625 / 0.525 | +0.100 |" in masks
    assert "| pretrained | tube - frame | 0.75 | 3 | 0.600 / 0.400 | +0.200 |" in masks
    assert "| pretrained | random - frame | 0.75 | 3 | 0.500 / 0.400 | +0.100 |" in masks
    assert "| pretrained_probe | tube - random | 0.75, 0.9 | 6 | 0.300 / 0.300 | +0.000 |" in masks
    ratios = compare_factor(grid, "ratio")
    assert "| pretrained | 0.9 - 0.75 | tube, random | 6 | 0.600 / 0.550 | +0.050 |" in ratios
    with pytest.raises(ValueError, match="tube-0.9 and copy are the same cell"):
        compare_factor([*grid, cell("copy", "tube", 0.9, 0.6)], "mask")
    with pytest.raises(ValueError, match="factor 'target'"):
        compare_factor(grid, "target")
    out = tmp_path / "out" / "grid"
    folders = [str(tmp_path / d.name) for d in grid if d.name != "tube-0.75"]
    assert main([*folders, "--reference", str(tmp_path / "tube-0.75"), "--output", str(out), "--factors", "mask"]) == 0
    assert "Mask types, each pair over every ratio both ran" in out.with_suffix(".md").read_text()


def test_options_the_columns_do_not_show_get_a_column_of_their_own(tmp_path):
    """Two motion-aware designs that differ in what the mask, ratio, target and step columns cannot say are told apart;
    an option a folder's config lacks counts at its default, and without any such option there is no column."""
    ref = write_study(tmp_path / "confirm", {0: (0.6, 0.4), 1: (0.62, 0.42)}, config={"target": "pixels"})
    top = write_study(
        tmp_path / "aware", {0: (0.6, 0.4), 1: (0.6, 0.4)}, mask="motion_aware", config={"query_ratio": 0.3}
    )
    split = {"query_ratio": 0.2, "motion_visible": "random", "motion_energy": "pixels", "loss": "mse"}
    random = write_study(tmp_path / "aware-random", {0: (0.6, 0.4), 1: (0.6, 0.4)}, mask="motion_aware", config=split)
    assert other_options(read_design(random), read_design(ref)) == {
        "pretrain.motion_visible": "random",
        "pretrain.query_ratio": 0.2,
    }  # motion_energy and loss are at their defaults, which the reference's config predates
    table = compare_designs([read_design(top), read_design(random)], read_design(ref))
    assert "| pool clips | other options | pretrained (seeds) |" in table
    assert "| **confirm** (reference) | tube | 0.75 / 0.750 | pixels | - | 160 | - |" in table
    assert "| aware | motion_aware | 0.75 / 0.750 | - | - | 160 | pretrain.query_ratio 0.3 |" in table
    assert "| pretrain.motion_visible random, pretrain.query_ratio 0.2 |" in table
    tube = write_study(tmp_path / "tube-0.5", {0: (0.5, 0.3), 1: (0.5, 0.3)}, ratio=0.5, config={"mask_ratio": 0.5})
    assert "other options" not in compare_designs([read_design(tube)], read_design(ref))


def test_arms_compares_the_arms_it_names(tmp_path, capsys):
    """A fine-tuning option run on the scratch arm alone is paired with the reference's scratch arm."""
    ref = write_study(tmp_path / "confirm", {0: (0.6, 0.4), 1: (0.62, 0.42), 2: (0.61, 0.41)})
    drop = tmp_path / "drop-scratch"
    for seed, (ours, theirs) in enumerate([(0.70, 0.65), (0.66, 0.64), (0.69, 0.60)]):
        for folder, score in ((ref, theirs), (drop, ours)):
            (folder / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            (folder / f"seed{seed}" / "scratch.json").write_text(json.dumps({"chosen": {"test": score}}))
    out = tmp_path / "out" / "scratch"
    assert main([str(drop), "--reference", str(ref), "--output", str(out), "--arms", "scratch"]) == 0
    table = out.with_suffix(".md").read_text()
    assert "| scratch (seeds) |" in table and "pretrained (seeds)" not in table
    assert "| scratch | drop-scratch - confirm | 3 | 0.683 / 0.630 | +0.053 |" in table
    assert out.with_suffix(".png").is_file()
    assert main([str(drop), "--reference", str(ref), "--output", str(out)]) == 2  # no pretrained arm there
    assert "drop-scratch: no result file of the arms pretrained, pretrained_probe" in capsys.readouterr().out
