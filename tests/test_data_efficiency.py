"""recipes/data_efficiency.py: a quick study end to end (every arm, choices on validation only, one result file per
(seed, arm), resuming, the summary's paired tests), the pool, and that the pretrained arm really starts from the
pretrained encoder."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe

from tubemask.eval.arms import augment
from tubemask.eval.data_efficiency import effective_mask_ratio
from tubemask.eval.study import summarise


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
        data=dataclasses.replace(cfg.data, labels_per_class=2, val_per_class=2, test_per_class=3, probe_per_class=3),
        model=dataclasses.replace(cfg.model, embed_dim=32, num_heads=2, depth=2, decoder_dim=16, decoder_heads=1),
        pretrain=dataclasses.replace(cfg.pretrain, steps=6, probe_every=3, batch_size=8),
        finetune=dataclasses.replace(cfg.finetune, epochs=2, eval_every=1, pretrained_lrs=(1e-3, 3e-3)),
    )
    return dataclasses.replace(cfg, quick=False, **changes)


def test_quick_study_writes_one_file_per_seed_and_arm_and_resumes(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path)
    results = recipe.main(cfg)
    assert sorted(results) == [0, 1]
    for seed in (0, 1):
        assert sorted(results[seed]) == sorted(recipe.ARMS)
        for arm in recipe.ARMS:
            saved = json.loads((tmp_path / f"seed{seed}" / f"{arm}.json").read_text())
            assert saved == json.loads(json.dumps(results[seed][arm]))
            runs, chosen = saved["runs"], saved["chosen"]
            assert chosen["val"] == max(r["val"] for r in runs)  # chosen on validation, never on test
            assert 0.0 <= chosen["test"] <= 1.0
        assert [r["lr"] for r in results[seed]["pretrained"]["runs"]] == [1e-3, 3e-3]
        pretraining = json.loads((tmp_path / f"seed{seed}" / "pretrain.json").read_text())
        assert [row["step"] for row in pretraining["history"]] == [0, 3, 6]
        assert pretraining["effective_mask_ratio"] == 0.75 and pretraining["pool_clips"] == 4 * 8 * 2
        assert (tmp_path / f"seed{seed}" / "pretrained.pt").is_file()
    summary = (tmp_path / "summary.md").read_text()
    for arm in recipe.ARMS:
        assert f"| {arm} | 2 |" in summary
    assert "| pretrained - scratch | 2 |" in summary and "95% interval (t)" in summary
    assert (tmp_path / "data_efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run finds every file and runs nothing; a deleted file is redone alone
    (tmp_path / "seed1" / "handmade.json").unlink()
    before = (tmp_path / "seed0" / "scratch.json").stat().st_mtime_ns
    recipe.main(cfg)
    assert (tmp_path / "seed1" / "handmade.json").is_file()
    assert (tmp_path / "seed0" / "scratch.json").stat().st_mtime_ns == before
    log = (tmp_path / "log.txt").read_text()
    assert "seed 0: every arm has its result file; skipped" in log


def test_summarise_only_rebuilds_from_the_files(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path, seeds=(0,), arms=("handmade", "random_probe"))
    recipe.main(cfg)
    (tmp_path / "summary.md").unlink()
    recipe.main(dataclasses.replace(cfg, summarise_only=True))
    assert "| handmade | 1 |" in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "seed0" / "pretrained.pt").exists()  # no arm needed pretraining


def test_pool_is_the_labelled_set_plus_disjoint_extras(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path)
    for factor, extra in ((1.0, 0), (3.0, 2)):
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pool_factor=factor))
        data = recipe.make_data(cfg, 0)
        n = data["train"].clips.shape[0]
        assert data["pool"].clips.shape[0] == n * (1 + extra)
        assert torch.equal(data["pool"].clips[:n], data["train"].clips)
    flat = {name: split.clips.flatten(1) for name, split in data.items() if name != "pool"}
    flat["extra"] = data["pool"].clips[n:].flatten(1)
    names = list(flat)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            same = (flat[a][:, None, :] == flat[b][None, :, :]).all(dim=2)
            assert not same.any(), f"{a} and {b} share a clip"
    counts = torch.bincount(data["train"].labels, minlength=cfg.data.num_classes)
    assert counts.tolist() == [cfg.data.labels_per_class] * cfg.data.num_classes
    with pytest.raises(ValueError, match="pool-factor=0.5"):
        recipe.make_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pool_factor=0.5)), 0)


def test_motion_task_is_still_available(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task="motion", num_classes=4))
    data = recipe.make_data(cfg, 0)
    assert data["train"].labels.tolist() == [0, 1, 2, 3] * 2
    with pytest.raises(ValueError, match="scenes task has 8 classes"):
        recipe.make_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task="scenes")), 0)


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


def test_augmentation_shifts_whole_clips_and_keeps_shape(recipe):
    video = torch.zeros(2, 3, 4, 16, 16)
    video[:, :, :, 6:10, 6:10] = 1.0
    out = augment(video, 3, torch.Generator().manual_seed(0))
    assert out.shape == video.shape
    for i in range(2):
        frames = out[i, 0]
        assert all(torch.equal(frames[0] != frames[0, 0, 0], f != f[0, 0]) for f in frames)  # same shift every frame


def summary_of(recipe, pre, scr):
    results = {
        s: {
            "pretrained": {"chosen": {"test": a, "train": 1.0, "val": a, "lr": 1e-3}},
            "scratch": {"chosen": {"test": b, "train": 1.0, "val": b, "lr": 1e-3}, "chosen_on_grid_edge": True},
        }
        for s, (a, b) in enumerate(zip(pre, scr, strict=True))
    }
    return summarise(results, ("pretrained", "scratch"), (("pretrained", "scratch"),), chance=1 / 8)


@pytest.mark.parametrize(
    ("pre", "scr", "verdict"),
    [
        ([0.60, 0.62, 0.61], [0.40, 0.41, 0.43], "pretrained beats scratch"),
        ([0.40, 0.41, 0.43], [0.60, 0.62, 0.61], "scratch beats pretrained"),
        ([0.50, 0.40, 0.61], [0.45, 0.52, 0.50], "no difference shown"),
        # 2 SE would call this a win (mean 0.05, SE 0.0208); the t interval with 2 degrees of freedom does not
        ([0.55, 0.50, 0.60], [0.50, 0.48, 0.52], "no difference shown"),
    ],
)
def test_verdict_uses_the_t_interval(recipe, pre, scr, verdict):
    table = summary_of(recipe, pre, scr)
    assert f"| {verdict} |" in table
    assert "(3 on a grid edge)" in table


def test_bad_options_name_the_option(recipe, tmp_path):
    with pytest.raises(ValueError, match="--seeds"):
        recipe.main(tiny(recipe, tmp_path, seeds=()))
    cfg = tiny(recipe, tmp_path)
    with pytest.raises(ValueError, match="--finetune.pretrained-lrs"):
        recipe.main(dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, scratch_lrs=())))
    with pytest.raises(FileNotFoundError, match="seed5/pretrained.pt"):
        recipe.main(tiny(recipe, tmp_path / "other", seeds=(5,), arms=("pretrained",), pretrained_dir=tmp_path))


def test_out_of_domain_pool_holds_no_task_clip(recipe, tmp_path):
    cfg = tiny(recipe, tmp_path)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pool_domain="shifted", pool_factor=2.0))
    data = recipe.make_data(cfg, 0)
    n = data["train"].clips.shape[0]
    assert data["pool"].clips.shape == (2 * n, *data["train"].clips.shape[1:])
    pool, train = data["pool"].clips.flatten(1), data["train"].clips.flatten(1)
    assert not (pool[:, None] == train[None]).all(dim=2).any()


@pytest.mark.parametrize(
    ("mask", "ratio", "effective"),
    [("tube", 0.9, 14 / 16), ("random", 0.9, 57 / 64), ("frame", 0.9, 3 / 4), ("frame", 0.5, 2 / 4)],
)
def test_effective_mask_ratio_on_the_studys_grid(recipe, mask, ratio, effective):
    """4 x 4 x 4 tokens: int(0.9 * 16) = 14 cells per slot, int(0.9 * 64) = 57 tokens, int(0.9 * 4) = 3 slots."""
    cfg = recipe.ExperimentConfig()
    cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, mask=mask, mask_ratio=ratio))
    assert effective_mask_ratio(cfg.pretrain, cfg.model, cfg.data) == pytest.approx(effective)


def test_baselines_come_from_another_study_with_the_same_splits(recipe, tmp_path):
    base = tiny(recipe, tmp_path / "base", seeds=(0,), arms=("scratch", "handmade"))
    recipe.main(base)
    design = tiny(recipe, tmp_path / "design", seeds=(0,), baselines_dir=tmp_path / "base")
    design = dataclasses.replace(design, data=dataclasses.replace(design.data, pool_factor=2.0))
    results = recipe.main(design)
    assert not (tmp_path / "design" / "seed0" / "scratch.json").exists()  # read, not rerun or copied
    assert results[0]["scratch"] == json.loads((tmp_path / "base" / "seed0" / "scratch.json").read_text())
    assert (tmp_path / "design" / "seed0" / "random_probe.json").exists()  # the base study had none: run here
    assert "| pretrained - scratch |" not in (tmp_path / "design" / "summary.md").read_text()  # one seed: no test
    assert "| scratch | 1 |" in (tmp_path / "design" / "summary.md").read_text()
    grid = dataclasses.replace(design, finetune=dataclasses.replace(design.finetune, pretrained_lrs=(2e-3,)))
    recipe.check_baselines(grid)  # the pretrained arm's grid does not touch the shared arms
    other = dataclasses.replace(design, finetune=dataclasses.replace(design.finetune, epochs=3))
    with pytest.raises(ValueError, match=r"finetune options differ in \['epochs'\]"):
        recipe.main(other)


@pytest.mark.parametrize(
    "options",
    [
        {"mask": "motion_aware", "query_ratio": 0.25},
        {"mask": "motion_aware", "mask_ratio": 0.9, "query_ratio": 0.2, "motion_visible": "random"},
        {"mask": "motion_aware", "query_ratio": 0.25, "motion_energy": "embedding"},
        {"mask": "motion_guided"},
        {"target": "hog"},
        {"target": "norm_pix", "mask": "random", "loss": "smooth_l1"},
    ],
)
def test_pretraining_with_the_post_videomae_pieces(recipe, tmp_path, options):
    cfg = tiny(recipe, tmp_path, seeds=(0,), stage="pretrain")
    cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, **options))
    recipe.main(cfg)
    pretraining = json.loads((tmp_path / "seed0" / "pretrain.json").read_text())
    assert all(row["loss"] > 0 for row in pretraining["history"][1:])
    assert pretraining["mask"] == cfg.pretrain.mask


@pytest.mark.parametrize("target", ["hog", "norm_pix"])
def test_the_probe_reads_the_encoder_whatever_the_target(recipe, tmp_path, target):
    """The probe arm loads the pretrained encoder alone: a HOG target's decoder head (27 values per cube) is not the
    pixel one's, and the probe must not care (the first HOG run of the study failed there)."""
    cfg = tiny(recipe, tmp_path, seeds=(0,), arms=("pretrained_probe",))
    cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, target=target))
    recipe.main(cfg)
    assert 0.0 <= json.loads((tmp_path / "seed0" / "pretrained_probe.json").read_text())["chosen"]["test"] <= 1.0


def test_frozen_features_are_the_encoders_and_name_a_missing_weight():
    from tubemask.eval.arms import frozen_features
    from tubemask.eval.data_efficiency import ModelConfig, vit_size
    from tubemask.hog import HOGTarget
    from tubemask.models import videomae_pretrain

    m = ModelConfig()
    torch.manual_seed(3)
    hog = videomae_pretrain(vit_size(m), patch_size=m.patch_size, tubelet_size=m.tubelet_size, target=HOGTarget())
    clips = torch.randint(0, 256, (3, 3, 8, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = frozen_features(m, 8, hog.state_dict(), 0, clips)
    again = frozen_features(m, 8, {k: v for k, v in hog.state_dict().items() if not k.startswith("decoder.")}, 1, clips)
    torch.testing.assert_close(got, again, rtol=0, atol=0)  # the decoder and the seed play no part
    assert not torch.allclose(got, frozen_features(m, 8, None, 0, clips))
    with pytest.raises(ValueError, match="lack"):
        frozen_features(m, 8, {k: v for k, v in hog.state_dict().items() if k != "encoder.norm.weight"}, 0, clips)


def test_motion_aware_options_need_the_motion_aware_mask():
    from tubemask.eval.data_efficiency import PretrainOptions, make_masker

    masker = make_masker(PretrainOptions(mask="motion_aware", mask_ratio=0.9, query_ratio=0.2, motion_visible="random"))
    assert masker.visible == "random" and masker.num_queried((4, 4, 4)) == 12
    for options in ({"query_ratio": 0.2}, {"motion_visible": "random"}, {"motion_energy": "embedding"}):
        with pytest.raises(ValueError, match="motion_aware only, not to 'tube'"):
            make_masker(PretrainOptions(**options))
    embedding = PretrainOptions(mask="motion_aware", motion_energy="embedding")
    with pytest.raises(ValueError, match="pass tokenizer="):
        make_masker(embedding)
    tokenizer = torch.nn.Identity()
    assert make_masker(embedding, tokenizer=tokenizer).embed is tokenizer
    assert make_masker(PretrainOptions(mask="motion_aware"), tokenizer=tokenizer).embed is None


def test_pretraining_with_a_teacher_from_an_earlier_study(recipe, tmp_path):
    recipe.main(tiny(recipe, tmp_path / "teacher", seeds=(0,), stage="pretrain"))
    cfg = tiny(recipe, tmp_path / "student", seeds=(0,), arms=("pretrained", "pretrained_probe"))  # both read it
    teacher = tmp_path / "teacher" / "seed0" / "pretrained.pt"
    mvd = dict(target="teacher", teacher=teacher, loss="smooth_l1")
    cfg = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, **mvd))
    recipe.main(cfg)
    student = torch.load(tmp_path / "student" / "seed0" / "pretrained.pt", weights_only=True)
    assert student["decoder.head.weight"].shape[0] == cfg.model.embed_dim  # reconstructs the teacher's features
    assert (tmp_path / "student" / "seed0" / "pretrained_probe.json").is_file()
    finetuned = json.loads((tmp_path / "student" / "seed0" / "pretrained.json").read_text())
    assert finetuned["chosen"]["lr"] in cfg.finetune.pretrained_lrs  # the encoder alone, its decoder left behind
    missing = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, teacher=tmp_path / "none.pt"))
    with pytest.raises(FileNotFoundError, match="none.pt"):
        recipe.main(dataclasses.replace(missing, output_dir=tmp_path / "other"))


def test_fine_tuning_over_the_most_moving_cubes(recipe, tmp_path, monkeypatch):
    """`--finetune.motion-drop 0.4` fine-tunes an earlier study's encoder with the motion-aware selector (39 of the 64
    cubes of the study's grid here: 25 dropped); a share outside [0, 1) is refused by name; a study folder written
    before the option existed still serves as baselines (the option counts at its default, 0)."""
    recipe.main(tiny(recipe, tmp_path / "base", seeds=(0,), stage="pretrain"))
    cfg = tiny(recipe, tmp_path / "drop", seeds=(0,), arms=("pretrained",), pretrained_dir=tmp_path / "base")
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, motion_drop=0.4))
    built = []
    original = recipe.videomae_classifier

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(recipe, "videomae_classifier", spy)
    results = recipe.main(cfg)
    assert results[0]["pretrained"]["chosen"]["lr"] in cfg.finetune.pretrained_lrs
    selector = built[0].selector
    assert selector.mask_ratio == 0.4 and selector.num_masked((4, 4, 4)) == 25
    with pytest.raises(ValueError, match="--finetune.motion-drop 1.0"):
        recipe.main(dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, motion_drop=1.0)))
    old = json.loads((tmp_path / "base" / "config.json").read_text())
    del old["finetune"]["motion_drop"]  # as written before the option existed
    (tmp_path / "base" / "config.json").write_text(json.dumps(old))
    recipe.check_baselines(tiny(recipe, tmp_path / "design", seeds=(0,), baselines_dir=tmp_path / "base"))
    with pytest.raises(ValueError, match=r"finetune options differ in \['motion_drop'\]"):
        recipe.check_baselines(dataclasses.replace(cfg, baselines_dir=tmp_path / "base"))


def test_the_floor_is_the_runs_own_loss_of_predicting_zeros(recipe, tmp_path):
    """Pixel targets and masks depend on the seed alone, so two runs that differ only in their loss see the same
    targets: the smooth-L1 floor lies below the squared one (0.5 t^2 < t^2 and |t| - 0.5 < t^2 for every t != 0)."""
    cfg = tiny(recipe, tmp_path, seeds=(0,))
    data = recipe.make_data(cfg, 0)
    floors = {}
    for loss in ("mse", "smooth_l1"):
        run = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, loss=loss))
        _, history = recipe.pretrain(run, data, 0, log=lambda _: None)
        floors[loss] = [row["zero_floor"] for row in history if "zero_floor" in row]
    assert len(floors["mse"]) == 2 and all(0 < s < m for s, m in zip(floors["smooth_l1"], floors["mse"], strict=True))


def test_the_loss_option_sets_the_models_loss():
    from tubemask.eval.data_efficiency import PretrainOptions, make_loss
    from tubemask.losses import reconstruction_mse, reconstruction_smooth_l1

    assert make_loss(PretrainOptions()) is reconstruction_mse
    assert make_loss(PretrainOptions(loss="smooth_l1")) is reconstruction_smooth_l1
