"""The fine-tuning recipes on generated video: smoke runs of every preset, loading a pretraining checkpoint, the
linear probe's frozen encoder, exact resume, and the multi-view test outputs."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recipe_helpers import RECIPES, load_recipe, read_metrics, tensorboard_scalars, torchrun

import tubemask
from tubemask.data import make_synthetic_ucf101, read_ucf101

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "finetune_ucf101": "FinetuneConfig",
    "finetune_hmdb51": "HMDB51Config",
    "finetune_ssv2": "SSv2Config",
    "finetune_k400": "K400Config",
}
ENCODER = ("tokenizer.", "encoder.")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (10x slower on a shared 2-core machine). Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(recipe: str = "finetune_ucf101", **options) -> dict:
    module = load_recipe(recipe)
    return module.main(getattr(module, CONFIGS[recipe])(**options))


@pytest.fixture(scope="module")
def ucf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic UCF101: 3 classes x 6 videos of 24 frames at 32 x 32 (split 1: 12 train, 6 test)."""
    pytest.importorskip("torchcodec.encoders", reason="the recipe tests write and read videos: torchcodec + FFmpeg")
    return make_synthetic_ucf101(
        tmp_path_factory.mktemp("ucf") / "data", num_classes=3, videos_per_class=6, num_frames=24, size=32
    )


def tiny_options(data_root: Path, output_dir: Path, **overrides) -> dict:
    """A fast CPU run: tiny model, 8 frames of 32 x 32, 2 videos x 2 clips per step (6 steps per epoch), 1 x 1 test."""
    options = dict(
        data_root=data_root,
        output_dir=output_dir,
        model="tiny",
        patch_size=8,
        input_size=32,
        num_frames=8,
        sampling_rate=2,
        batch_size=2,
        epochs=2,
        warmup_epochs=0.5,
        base_lr=0.05,
        test_clips=1,
        test_crops=1,
        workers=0,
        device="cpu",
    )
    options.update(overrides)
    return options


def pretrained_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A tubemask pretraining model saved as `{"model": state_dict}` (what the pretraining recipe writes)."""
    torch.manual_seed(123)
    state = tubemask.videomae_pretrain("tiny", patch_size=8).state_dict()
    torch.save({"model": state}, path)
    return state


def final(output_dir: Path) -> dict:
    return torch.load(output_dir / "final.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_recipes_load_without_running() -> None:
    base = load_recipe("finetune_ucf101")
    presets = {
        "finetune_ucf101": "UCF101",
        "finetune_hmdb51": "HMDB51",
        "finetune_ssv2": "SSV2",
        "finetune_k400": "K400",
    }
    for name, config in CONFIGS.items():
        module = load_recipe(name)
        cfg = base.resolve(getattr(module, config)(data_root=Path("/data")), getattr(module, presets[name]))
        assert cfg.model == "base" and cfg.layer_decay == 0.7 and cfg.repeated_sampling == 2, name
    ssv2 = load_recipe("finetune_ssv2")
    cfg = base.resolve(ssv2.SSv2Config(data_root=Path("/data")), ssv2.SSV2)
    assert (cfg.flip, cfg.test_clips, cfg.test_crops) == (0.0, 2, 3)
    probe = load_recipe("finetune_ucf101")
    cfg = probe.resolve(probe.FinetuneConfig(linear_probe=True, mixup=0.5))
    assert (cfg.mixup, cfg.cutmix, cfg.drop_path, cfg.model) == (0.5, 0.0, 0.0, "tiny")  # given options win


def test_ucf101_smoke_writes_every_output(ucf: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tensorboard = importlib.util.find_spec("tensorboard") is not None  # optional; the dev environment has it
    result = run(**tiny_options(ucf, out, max_steps=2, test_clips=2, test_crops=3, tensorboard=tensorboard))
    assert result["step"] == 2
    for name in ("final.pt", "checkpoint-00000002.pt", "metrics.jsonl", "loss.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    state = final(out)
    assert state["step"] == 2 and "head.head.weight" in state["model"] and "model_ema" not in state
    assert state["model"]["head.head.weight"].shape == (3, 192)
    assert state["class_names"] == ["MoveLeft", "MoveRight", "MoveUp"]
    report = json.loads((out / "test_results.json").read_text())
    assert report["num_videos"] == 6 and report["missing_views"] == 0
    assert report["protocol"]["views"] == 6 and report["weights"] == "model"
    assert 0.0 <= report["top1"] <= report["top5"] == 1.0  # 3 classes: top-5 holds every class
    assert set(report["per_class_accuracy"]) == set(state["class_names"])
    assert sum(map(sum, report["confusion_matrix"])) == 6
    per_class = [v for v in report["per_class_accuracy"].values() if v is not None]
    assert math.isclose(report["mean_class_accuracy"], sum(per_class) / len(per_class), rel_tol=1e-6)
    rows = read_metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert rows[-1]["test_top1"] == report["top1"]
    if tensorboard:  # the training scalars of metrics.jsonl, per step
        scalars = tensorboard_scalars(out / "tensorboard")
        assert scalars["loss"] == [(r["step"], pytest.approx(r["loss"])) for r in rows if "loss" in r]


def test_bf16_autocast_on_cpu_trains_and_tests_like_fp32(ucf: Path, tmp_path: Path) -> None:
    """`--precision bf16` on CPU: float32 weights, training losses within 0.5% of the fp32 run's, a full test pass."""
    losses = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        run(**tiny_options(ucf, out, max_steps=3, precision=precision))
        rows = read_metrics(out)
        losses[precision] = [r["loss"] for r in rows if "loss" in r]
        assert all(w.dtype == torch.float32 for w in final(out)["model"].values() if w.is_floating_point())
        assert json.loads((out / "test_results.json").read_text())["num_videos"] == 6
    assert len(losses["bf16"]) == len(losses["fp32"]) == 3
    torch.testing.assert_close(torch.tensor(losses["bf16"]), torch.tensor(losses["fp32"]), rtol=5e-3, atol=0)
    assert losses["bf16"] != losses["fp32"]  # autocast really ran in bf16


def _sibling_layouts(ucf: Path, root: Path) -> dict[str, dict]:
    """The synthetic videos laid out as HMDB51, SSv2 and K400 expect (symlinks; torchcodec reads by content)."""
    train, test = read_ucf101(ucf, split=1, train=True), read_ucf101(ucf, split=1, train=False)
    classes = sorted({r.path.parent.name for r in train})
    # HMDB51: videos/<class>/<name>.avi + splits/<class>_test_split1.txt with "name.avi 1" (train) / "2" (test)
    hmdb = root / "hmdb"
    (hmdb / "splits").mkdir(parents=True)
    for cls in classes:
        (hmdb / "videos" / cls).mkdir(parents=True)
        lines = []
        for mark, records in (("1", train), ("2", test)):
            for r in records:
                if r.path.parent.name == cls:
                    (hmdb / "videos" / cls / r.path.name).symlink_to(r.path)
                    lines.append(f"{r.path.name} {mark}")
        (hmdb / "splits" / f"{cls}_test_split1.txt").write_text("\n".join(lines) + "\n")
    # SSv2: something-something-v2-{train,validation}.json + labels.json + videos/<id>.webm
    ssv2 = root / "ssv2"
    (ssv2 / "videos").mkdir(parents=True)
    templates = {c: f"Moving something {c}" for c in classes}
    for subset, records, offset in (("train", train, 0), ("validation", test, 1000)):
        entries = []
        for i, r in enumerate(records, start=offset):
            (ssv2 / "videos" / f"{i}.webm").symlink_to(r.path)
            entries.append(
                {"id": str(i), "template": f"Moving [something] {r.path.parent.name}", "label": "x", "placeholders": []}
            )
        (ssv2 / f"something-something-v2-{subset}.json").write_text(json.dumps(entries))
    (ssv2 / "labels.json").write_text(json.dumps({templates[c]: str(j) for j, c in enumerate(classes)}))
    # K400: {train,val}.csv + <split>/<label>/<youtube_id>_<start>_<end>.mp4
    k400 = root / "k400"
    for split, csv, records in (("train", "train.csv", train), ("val", "val.csv", test)):
        rows = ["label,youtube_id,time_start,time_end,split"]
        for i, r in enumerate(records):
            label = r.path.parent.name.lower()
            (k400 / split / label).mkdir(parents=True, exist_ok=True)
            (k400 / split / label / f"{split}{i:06d}_000000_000010.mp4").symlink_to(r.path)
            rows.append(f"{label},{split}{i:06d},0,10,{split}")
        (k400 / csv).write_text("\n".join(rows) + "\n")
    return {
        "finetune_hmdb51": (dict(data_root=hmdb, video_dir="videos", split_dir="splits"), classes),
        "finetune_ssv2": (dict(data_root=ssv2, video_dir="videos"), [templates[c] for c in classes]),
        "finetune_k400": (dict(data_root=k400), [c.lower() for c in classes]),
    }


@pytest.mark.parametrize("recipe", ["finetune_hmdb51", "finetune_ssv2", "finetune_k400"])
def test_sibling_recipes_two_steps(recipe: str, ucf: Path, tmp_path: Path) -> None:
    layout, names = _sibling_layouts(ucf, tmp_path / "layouts")[recipe]
    out = tmp_path / "run"
    options = tiny_options(layout.pop("data_root"), out, max_steps=2)
    result = run(recipe, **options, **layout)
    assert result["step"] == 2
    report = json.loads((out / "test_results.json").read_text())
    assert report["class_names"] == names and report["num_videos"] == 6
    assert final(out)["class_names"] == names


def test_finetune_loads_a_tubemask_pretraining_checkpoint(ucf: Path, tmp_path: Path, capsys) -> None:
    pretrained = pretrained_checkpoint(tmp_path / "pretrain.pt")
    out = tmp_path / "run"
    # one step at a negligible lr: the encoder must still be (almost exactly) the pretrained one
    run(**tiny_options(ucf, out, finetune=tmp_path / "pretrain.pt", max_steps=1, lr=1e-12, eval_every=0))
    assert "loaded" in capsys.readouterr().out
    weights = final(out)["model"]
    encoder = {k: v for k, v in weights.items() if k.startswith(ENCODER)}
    assert len(encoder) == 2 + 4 * 13 and "encoder.norm.weight" not in weights  # VideoMAE fine-tuning drops it
    for key, value in encoder.items():
        torch.testing.assert_close(value, pretrained[key], atol=1e-8, rtol=0, msg=key)


def test_linear_probe_trains_only_the_head(ucf: Path, tmp_path: Path) -> None:
    pretrained = pretrained_checkpoint(tmp_path / "pretrain.pt")
    out = tmp_path / "run"
    run(**tiny_options(ucf, out, finetune=tmp_path / "pretrain.pt", linear_probe=True, max_steps=3, eval_every=0))
    state = final(out)
    weights = state["model"]
    for key, value in weights.items():
        if key.startswith(ENCODER):
            assert torch.equal(value, pretrained[key]), key
    torch.manual_seed(0)
    fresh = tubemask.videomae_classifier("tiny", num_classes=3, patch_size=8).state_dict()
    assert not torch.equal(weights["head.fc_norm.weight"], fresh["head.fc_norm.weight"])  # the head did train
    assert state["config"]["mixup"] == 0.0 and state["config"]["linear_probe"] is True


def test_motion_drop_trains_and_tests_on_the_most_moving_cubes(ucf: Path, tmp_path: Path, capsys) -> None:
    """`--motion-drop 0.5`: the encoder sees 32 of the 64 cubes in training and test (EVEREST's fine-tuning); the
    run writes its outputs like any other; a share outside [0, 1) is refused by name."""
    out = tmp_path / "run"
    result = run(**tiny_options(ucf, out, motion_drop=0.5, max_steps=2))
    assert result["step"] == 2
    assert "--motion-drop 0.5: the encoder sees the 32 most moving of 64 cubes" in capsys.readouterr().out
    assert final(out)["config"]["motion_drop"] == 0.5
    assert json.loads((out / "test_results.json").read_text())["num_videos"] == 6
    with pytest.raises(ValueError, match="--motion-drop 1.0"):
        run(**tiny_options(ucf, tmp_path / "bad", motion_drop=1.0, max_steps=1))


@pytest.mark.slow  # four runs: over 10 s on a busy 2-core machine
def test_resume_is_exact_with_ema_mixup_and_drop_path(ucf: Path, tmp_path: Path) -> None:
    # 12 videos / 4 per step = 3 steps per epoch, 2 epochs; every source of randomness switched on
    options = dict(batch_size=4, ema=True, ema_decay=0.9, drop_path=0.2, mixup=0.8, cutmix=1.0)
    run(**tiny_options(ucf, tmp_path / "full", **options))
    parts = tmp_path / "parts"
    # stop at the end of epoch 0 (the uninterrupted run evaluates right after that checkpoint), then mid-epoch 1
    # with data-loader workers, then run to the end
    run(**tiny_options(ucf, parts, max_steps=3, **options))
    run(**tiny_options(ucf, parts, max_steps=4, resume=True, workers=2, **options))
    result = run(**tiny_options(ucf, parts, resume=True, **options))
    assert result["step"] == 6
    full, resumed = final(tmp_path / "full"), final(parts)
    assert_same_weights(full["model"], resumed["model"])
    assert_same_weights(full["model_ema"], resumed["model_ema"])
    rows = read_metrics(parts)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))
    assert [r["epoch"] for r in rows if "val_top1" in r] == [0, 1]
    full_report = json.loads((tmp_path / "full" / "test_results.json").read_text())
    parts_report = json.loads((parts / "test_results.json").read_text())
    assert full_report["weights"] == "ema" and full_report["top1"] == parts_report["top1"]


@pytest.mark.slow  # two processes started by torchrun
def test_torchrun_two_processes_test_every_video_once(ucf: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    torchrun("finetune_ucf101", tiny_options(ucf, out, max_steps=2, test_clips=2, ema=True))
    report = json.loads((out / "test_results.json").read_text())
    assert report["num_videos"] == 6 and report["missing_views"] == 0 and report["weights"] == "ema"
    assert final(out)["step"] == 2


@pytest.mark.slow  # four runs of two processes started by torchrun
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(sharding: str, ucf: Path, tmp_path: Path) -> None:
    """DDP and FSDP2 train the weights one process trains (the optimizer is built after wrapping), a stopped and
    resumed run included, and final.pt holds full tensors. Mixup pairs and dropout differ per rank, so they are off."""
    same = dict(mixup=0.0, cutmix=0.0, drop_path=0.0, head_dropout=0.0, eval_every=0)
    run(**tiny_options(ucf, tmp_path / "one", batch_size=4, max_steps=3, **same))
    two = tiny_options(ucf, tmp_path / "two", batch_size=2, max_steps=2, sharding=sharding, **same)
    torchrun("finetune_ucf101", two)  # stop after step 2, then resume to step 3 (the checkpoint gathers the shards)
    torchrun("finetune_ucf101", {**two, "max_steps": 3, "resume": True})
    one, both = final(tmp_path / "one"), final(tmp_path / "two")
    assert both["step"] == 3 and one["model"].keys() == both["model"].keys()
    start = torch.load(tmp_path / "two" / "checkpoint-00000002.pt", weights_only=True)["model"]
    assert any(not torch.equal(start[k], both["model"][k]) for k in start)  # step 3 changed the weights
    for key, value in one["model"].items():
        assert type(both["model"][key]) is torch.Tensor, key  # full tensors, not DTensor shards
        torch.testing.assert_close(both["model"][key], value, atol=1e-6, rtol=0, msg=key)
    reports = [json.loads((tmp_path / name / "test_results.json").read_text()) for name in ("one", "two")]
    assert reports[0]["top1"] == reports[1]["top1"] and reports[1]["num_videos"] == 6


def test_cli_help_lists_the_shared_option_spellings() -> None:
    result = subprocess.run(
        [sys.executable, str(RECIPES / "finetune_ucf101.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in (
        "--data-root",
        "--finetune",
        "--linear-probe",
        "--layer-decay",
        "--test-clips",
        "--eval-every",
        "--ema",
    ):
        assert flag in result.stdout, flag
