"""recipes/data_efficiency.py: a quick run end to end (both arms, lr choice on validation, table, plot), the verdict
rule, and that the pretrained arm really starts from the pretrained encoder."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe


@pytest.fixture(scope="module")
def recipe():
    module = load_recipe("data_efficiency")
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)


def tiny(recipe, out: Path, **changes):
    cfg = recipe.apply_quick(recipe.ExperimentConfig(output_dir=out, threads=1, seeds=(0, 1)))
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, num_classes=3, unlabelled=48, probe_per_class=4),
        model=dataclasses.replace(cfg.model, embed_dim=32, num_heads=2, depth=2, decoder_dim=16, decoder_heads=1),
        pretrain=dataclasses.replace(cfg.pretrain, steps=6, probe_every=3, batch_size=8),
        finetune=dataclasses.replace(cfg.finetune, epochs=2, lrs=(1e-3, 3e-3)),
    )
    return dataclasses.replace(cfg, **changes)


def test_quick_run_writes_table_plot_and_every_number(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path)
    results = recipe.main(cfg)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == json.loads(json.dumps(results["seeds"]))
    assert [s["seed"] for s in saved["seeds"]] == [0, 1]
    for entry in saved["seeds"]:
        steps = [row["step"] for row in entry["pretrain_history"]]
        assert steps == [0, 3, 6]
        for row in entry["pretrain_history"][1:]:
            assert math.isfinite(row["loss"]) and row["zero_floor"] > 0
            assert 0.0 <= row["probe_per_time"] <= 1.0 and row["participation_ratio"] >= 1.0
        for arm in ("pretrained", "scratch"):
            runs = entry[arm]["runs"]
            assert [r["lr"] for r in runs] == [1e-3, 3e-3]
            best_val = max(r["val"] for r in runs)
            assert entry[arm]["chosen"]["val"] == best_val  # chosen on validation, never on test
            assert entry[arm]["chosen"] in runs
            for r in runs:
                for split in ("train", "val", "test"):
                    assert 0.0 <= r[split] <= 1.0
    summary = (tmp_path / "summary.md").read_text()
    assert "| pretrained |" in summary and "| scratch |" in summary and "Verdict:" in summary
    assert (tmp_path / "data_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "done in" in (tmp_path / "log.txt").read_text()


def test_pretrain_stage_stops_before_fine_tuning(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path, stage="pretrain", seeds=(3,))
    results = recipe.main(cfg)
    assert "pretrained" not in results["seeds"][0] and "scratch" not in results["seeds"][0]
    assert not (tmp_path / "summary.md").exists()
    assert (tmp_path / "data_efficiency.png").exists()


def test_pretrained_arm_starts_from_the_pretrained_encoder(recipe, tmp_path, monkeypatch):
    cfg = tiny(recipe, tmp_path)
    data = recipe.make_data(cfg, 0)
    state, _ = recipe.pretrain(cfg, data, 0, log=lambda msg: None)
    seen = {}
    original = recipe.load_pretrained_encoder

    def spy(model, weights, **kwargs):
        report = original(model, weights, **kwargs)
        seen["block0"] = model.encoder.blocks[0].attn.qkv.weight.detach().clone()
        return report

    monkeypatch.setattr(recipe, "load_pretrained_encoder", spy)
    recipe.finetune(cfg, data, 0, 1e-3, state)
    torch.testing.assert_close(seen["block0"], state["encoder.blocks.0.attn.qkv.weight"], rtol=0, atol=0)


def test_sets_are_disjoint_and_balanced(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path)
    data = recipe.make_data(cfg, 0)
    flat = {name: split.clips.flatten(1) for name, split in data.items()}
    names = list(flat)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            same = (flat[a][:, None, :] == flat[b][None, :, :]).all(dim=2)
            assert not same.any(), f"{a} and {b} share a clip"
    counts = torch.bincount(data["train"].labels, minlength=cfg.data.num_classes)
    assert counts.tolist() == [cfg.data.labels_per_class] * cfg.data.num_classes


def seeds_with(pre, scr):
    return {
        "config": {"data": {"num_classes": 10}},
        "seeds": [
            {
                "pretrained": {"chosen": {"test": a, "train": 1.0, "lr": 1e-3}},
                "scratch": {"chosen": {"test": b, "train": 1.0, "lr": 1e-3}},
            }
            for a, b in zip(pre, scr, strict=True)
        ],
    }


@pytest.mark.parametrize(
    ("pre", "scr", "verdict"),
    [
        ([0.60, 0.62, 0.61], [0.40, 0.41, 0.43], "pretraining beats scratch by more than two standard errors"),
        ([0.40, 0.41, 0.43], [0.60, 0.62, 0.61], "scratch beats pretraining"),
        ([0.50, 0.40, 0.61], [0.45, 0.52, 0.50], "no difference beyond two standard errors"),
        ([0.50], [0.40], "one seed: no standard error"),
    ],
)
def test_verdict_uses_paired_standard_error(recipe, pre, scr, verdict):
    assert verdict in recipe.summarise(seeds_with(pre, scr))


def test_mean_se(recipe):
    mean, se = recipe.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(recipe.mean_se([1.0])[1])


def test_bad_options_name_the_option(recipe, tmp_path):
    with pytest.raises(ValueError, match="--seeds"):
        recipe.main(tiny(recipe, tmp_path, seeds=()))
    cfg = tiny(recipe, tmp_path)
    with pytest.raises(ValueError, match="--finetune.lrs"):
        recipe.main(dataclasses.replace(cfg, quick=False, finetune=dataclasses.replace(cfg.finetune, lrs=())))


def test_reuses_saved_pretrained_encoders(recipe, tmp_path):
    first = recipe.main(tiny(recipe, tmp_path / "first", stage="pretrain", seeds=(0,)))
    saved = torch.load(tmp_path / "first" / "pretrained_seed0.pt", weights_only=True)
    assert "encoder.blocks.0.attn.qkv.weight" in saved and first["seeds"][0]["pretrain_history"]
    cfg = tiny(recipe, tmp_path / "second", seeds=(0,), arms=("pretrained",), pretrained_dir=tmp_path / "first")
    second = recipe.main(cfg)
    entry = second["seeds"][0]
    assert entry["pretrain_history"] == [] and "scratch" not in entry and entry["pretrained"]["runs"]
    assert not (tmp_path / "second" / "summary.md").exists()  # one arm: no verdict
    with pytest.raises(FileNotFoundError, match="pretrained_seed5.pt"):
        recipe.main(tiny(recipe, tmp_path / "third", seeds=(5,), pretrained_dir=tmp_path / "first"))
