"""The AVA detection recipe on a generated synthetic AVA: a smoke run writing every output, loading a pretraining
checkpoint, exact resume, the evaluation wiring, and two processes under torchrun."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe, read_metrics, torchrun

from tubemask import videomae_pretrain
from tubemask.data import make_synthetic_ava, read_ava_boxes, read_ava_exclusions, read_ava_label_map


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead on a shared 2-core machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ava(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torchcodec.encoders", reason="the recipe tests write and read videos: torchcodec + FFmpeg")
    return make_synthetic_ava(tmp_path_factory.mktemp("ava") / "data", num_videos=4, seconds=5, seed=1)


def run(**options) -> dict:
    module = load_recipe("detect_ava")
    return module.main(module.DetectConfig(**options))


def tiny_options(ava, output_dir: Path, **overrides) -> dict:
    """A fast CPU run on the synthetic files given as an AVA layout: tiny model, 8 frames of 48 pixels."""
    options = dict(
        data_root=ava.video_root.parent,
        video_dir=ava.video_root,
        train_csv=ava.train_csv,
        val_csv=ava.val_csv,
        val_detections=ava.val_detections_csv,
        label_map=ava.label_map,
        exclusions=ava.exclusions,
        output_dir=output_dir,
        model="tiny",
        patch_size=8,
        num_frames=8,
        sampling_rate=2,
        short_side=48,
        scale_jitter=(48, 56),
        crop_size=48,
        box_jitter=0.05,
        batch_size=4,
        epochs=2,
        warmup_epochs=0.5,
        base_lr=0.05,
        drop_path=0.1,
        head_dropout=0.1,
        layer_decay=0.75,
        workers=0,
        device="cpu",
    )
    options.update(overrides)
    return options


def final(output_dir: Path) -> dict:
    return torch.load(output_dir / "final.pt", weights_only=True)


def test_presets_resolve_without_running() -> None:
    module = load_recipe("detect_ava")
    full = module.resolve(module.DetectConfig(data_root=Path("/data")))
    assert (full.model, full.patch_size, full.num_frames, full.sampling_rate) == ("base", 16, 16, 4)
    assert (full.short_side, full.crop_size, full.detection_threshold, full.num_classes) == (256, 224, 0.8, 80)
    assert full.flip == 0.5 and full.seek_mode == "approximate"  # 15-minute movies: no packet scan per open
    synthetic = module.resolve(module.DetectConfig(model="small"))
    assert synthetic.model == "small" and synthetic.patch_size == 8  # given options win over the preset
    assert synthetic.flip == 0.0  # the synthetic actions are directions: a flip would swap left and right


def test_missing_annotation_file_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    with pytest.raises(SystemExit, match="--train-csv: .*ava_train_v2.2.csv does not exist"):
        run(data_root=tmp_path, output_dir=tmp_path / "out", device="cpu")


def test_ground_truth_as_detections_scores_one(ava) -> None:
    module = load_recipe("detect_ava")
    truth = read_ava_boxes(ava.val_csv, kind="ground_truth")
    detections = {key: (frame.boxes, frame.labels.float()) for key, frame in truth.items()}
    classes = sorted(read_ava_label_map(ava.label_map))
    result = module.evaluate(detections, truth, classes, read_ava_exclusions(ava.exclusions))
    assert result.mean_ap == 1.0 and result.num_frames == len(truth) - len(read_ava_exclusions(ava.exclusions))


def test_smoke_writes_every_output(ava, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(**tiny_options(ava, out))
    train_frames = read_ava_boxes(ava.train_csv, kind="ground_truth")
    steps = 2 * (len(train_frames) // 4)
    assert result["step"] == steps and result["bad_videos"] == 0
    for name in ("final.pt", f"checkpoint-{steps:08d}.pt", "metrics.jsonl", "loss.png", "test_results.json"):
        assert (out / name).is_file(), name
    state = final(out)
    assert state["model"]["head.head.weight"].shape == (80, 192) and state["step"] == steps
    report = json.loads((out / "test_results.json").read_text())
    assert 0.0 <= report["map"] <= 1.0
    evaluated = [v for v in report["per_class_ap"].values() if v is not None]
    assert math.isclose(report["map"], sum(evaluated) / len(evaluated), rel_tol=1e-9)
    rows = read_metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert [r["epoch"] for r in rows if "val_map" in r] == [0]  # after epoch 1; the last epoch is the test
    assert rows[-1]["test_map"] == report["map"]


def test_finetune_loads_a_pretraining_checkpoint_with_its_final_norm(ava, tmp_path: Path, capsys) -> None:
    torch.manual_seed(5)
    state = videomae_pretrain("tiny", patch_size=8).state_dict()
    key = "encoder.blocks.1.mlp.fc1.weight"
    state[key] = state[key] + 0.5  # far from any fresh initialisation: only loading can put it there
    torch.save({"model": state}, tmp_path / "pretrain.pt")
    out = tmp_path / "run"
    run(**tiny_options(ava, out, finetune=tmp_path / "pretrain.pt", max_steps=1, eval_every=0))
    assert "--finetune:" in capsys.readouterr().out
    trained = final(out)["model"]
    # one optimizer step at a small lr: the loaded encoder weights are near the checkpoint's, far from a fresh init
    assert key in trained and torch.allclose(trained[key], state[key], atol=1e-2)
    assert trained["encoder.norm.weight"].shape == state["encoder.norm.weight"].shape  # the final norm is kept


def test_resume_is_exact(ava, tmp_path: Path) -> None:
    run(**tiny_options(ava, tmp_path / "full"))
    parts = tmp_path / "parts"
    run(**tiny_options(ava, parts, max_steps=1))
    run(**tiny_options(ava, parts, resume=True))
    full, resumed = final(tmp_path / "full"), final(parts)
    assert full["step"] == resumed["step"]
    for key in full["model"]:
        assert torch.equal(full["model"][key], resumed["model"][key]), key
    a = json.loads((tmp_path / "full" / "test_results.json").read_text())
    b = json.loads((parts / "test_results.json").read_text())
    assert a["map"] == b["map"]


@pytest.mark.slow  # four runs of two processes started by torchrun
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(sharding: str, ava, tmp_path: Path) -> None:
    """DDP and FSDP2 train what one process trains (the optimizer built after wrapping; the loss a mean over every
    rank's boxes), a stopped and resumed run included; the test, whose keyframes split unevenly over the ranks'
    videos, makes the same number of forward calls on each rank (FSDP2 would hang otherwise) and scores the same."""
    same = dict(drop_path=0.0, head_dropout=0.0, eval_every=0, max_steps=3)
    run(**tiny_options(ava, tmp_path / "one", **same))
    two = tiny_options(ava, tmp_path / "two", **same, batch_size=2, sharding=sharding)
    torchrun("detect_ava", {**two, "max_steps": 2})
    torchrun("detect_ava", {**two, "resume": True})
    one, both = final(tmp_path / "one"), final(tmp_path / "two")
    assert both["step"] == 3
    for key, value in one["model"].items():
        assert type(both["model"][key]) is torch.Tensor, key  # full tensors, not DTensor shards
        torch.testing.assert_close(both["model"][key], value, atol=1e-6, rtol=0, msg=key)
    maps = [json.loads((tmp_path / name / "test_results.json").read_text())["map"] for name in ("one", "two")]
    assert maps[0] == pytest.approx(maps[1], abs=1e-6)


@pytest.mark.slow  # two processes started by torchrun
def test_torchrun_two_processes_train_and_test(ava, tmp_path: Path) -> None:
    torchrun("detect_ava", tiny_options(ava, tmp_path / "ddp", max_steps=1, eval_every=0))
    report = json.loads((tmp_path / "ddp" / "test_results.json").read_text())
    assert 0.0 <= report["map"] <= 1.0 and final(tmp_path / "ddp")["step"] == 1


def test_a_corrupt_video_is_skipped_and_counted(ava, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(ava.video_root, videos)
    broken = sorted(videos.iterdir())[0]  # a training video (the first two thirds train)
    broken.write_bytes(broken.read_bytes()[:300])  # the header survives, the frames do not
    result = run(**tiny_options(ava, tmp_path / "run", video_dir=videos, max_steps=2, eval_every=0))
    assert result["step"] == 2 and result["bad_videos"] == 1
