"""The AVA detection recipe on a generated synthetic AVA: a smoke run writing every output (its results CSV read back
by the evaluator CLI), loading a pretraining checkpoint, exact resume, the evaluation wiring, an evaluation of an
official-layout AVA checkpoint, and two processes under torchrun."""

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from recipe_helpers import load_recipe, read_metrics, torchrun

from tubemask import videomae_pretrain
from tubemask.data import make_synthetic_ava, read_ava_boxes, read_ava_exclusions, read_ava_label_map
from tubemask.data.ava_dataset import KeyframeOutsideVideo
from tubemask.eval.ava import main as ava_cli
from tubemask.eval.ava_files import read_official_ground_truth, read_official_results
from tubemask.eval.ava_protocol import evaluate_official


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
        total_batch=4,  # the --data-root preset's 128 would accumulate 32 micro-steps
        eval_every=1,
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
    # the official ViT-B AVA scripts: 5 warmup epochs, 128 clips per step, base lr 5e-4, evaluation every 10 epochs
    assert (full.warmup_epochs, full.total_batch, full.base_lr, full.eval_every) == (5.0, 128, 5e-4, 10)
    assert full.head_dropout == 0.0 and full.time_offset == 900 and full.roi_aligned
    assert module.accumulation(full, world_size=1) == 16 and module.accumulation(full, world_size=8) == 2
    assert full.peak_lr(128)[0] == pytest.approx(2.5e-4)  # 5e-4 x 128 / 256, the official scripts' lr
    with pytest.raises(SystemExit, match=r"--total-batch 128 must be a multiple of .* = 8 x 3 = 24"):
        module.accumulation(full, world_size=3)
    explicit = module.resolve(module.DetectConfig(data_root=Path("/data"), accum_steps=4))
    assert explicit.total_batch is None and module.accumulation(explicit, world_size=3) == 4  # not the preset's 128
    with pytest.raises(SystemExit, match=r"without --accum-steps \(4\)"):  # both given: which one is meant?
        module.accumulation(dataclasses.replace(explicit, total_batch=128), world_size=1)
    synthetic = module.resolve(module.DetectConfig(model="small"))
    assert synthetic.model == "small" and synthetic.patch_size == 8  # given options win over the preset
    assert synthetic.flip == 0.0  # the synthetic actions are directions: a flip would swap left and right


def test_missing_annotation_file_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    with pytest.raises(SystemExit, match="--train-csv: .*ava_train_v2.2.csv does not exist"):
        run(data_root=tmp_path, output_dir=tmp_path / "out", device="cpu")


def test_ground_truth_as_detections_scores_one(ava) -> None:
    truth = read_ava_boxes(ava.val_csv, kind="ground_truth")
    detections = {key: (frame.boxes, frame.labels.float()) for key, frame in truth.items()}
    classes = sorted(read_ava_label_map(ava.label_map))
    excluded = read_ava_exclusions(ava.exclusions)
    result = evaluate_official(
        detections, read_official_ground_truth(ava.val_csv), class_ids=classes, excluded=excluded
    )
    assert result.map == result.map_top50 == 1.0 and result.every_detection.num_frames == len(truth) - len(excluded)


def cli_map(ava, csv: Path, capsys, *cap: str) -> float:
    """The mAP `python -m tubemask.eval.ava` prints for a results file against the synthetic ground truth."""
    capsys.readouterr()
    args = ["--groundtruth", str(ava.val_csv), "--detections", str(csv), "--labelmap", str(ava.label_map)]
    assert ava_cli([*args, "--exclusions", str(ava.exclusions), *cap]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mAP"]


def test_smoke_writes_every_output(ava, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    result = run(**tiny_options(ava, out))
    train_frames = read_ava_boxes(ava.train_csv, kind="ground_truth")
    steps = 2 * (len(train_frames) // 4)
    assert result["step"] == steps and result["bad_videos"] == 0
    names = (
        "final.pt",
        f"checkpoint-{steps:08d}.pt",
        "metrics.jsonl",
        "loss.png",
        "test_results.json",
        "detections.csv",
    )
    for name in names:
        assert (out / name).is_file(), name
    # the official results format, read back by the evaluator CLI: the recipe's own figures, with and without the cap
    listed = read_official_results(out / "detections.csv")
    classes = sorted(read_ava_label_map(ava.label_map))
    detected = read_ava_boxes(ava.val_detections_csv, kind="detections", min_score=0.8)
    assert sorted(listed) == sorted(detected)  # every keyframe with a person detection >= 0.8
    assert all(len(listed[k]) == len(frame.boxes) * len(classes) for k, frame in detected.items())  # box x action
    assert cli_map(ava, out / "detections.csv", capsys) == result["map"]
    assert cli_map(ava, out / "detections.csv", capsys, "--max-detections-per-frame", "50") == result["map_top50"]
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
    assert rows[-1]["test_map"] == report["map"] and rows[-1]["test_map_top50"] == report["map_top50"]
    assert report["map"] == result["map"] and "paper's table" in report["protocol"]["map"]


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


def test_training_fits_the_training_keyframes(ava, tmp_path: Path) -> None:
    """The loop learns: 24 steps fit the training keyframes. Tested on those keyframes with their own boxes as the
    person detections (score 1), through the recipe's test path, the frame mAP rises far above the untrained model's
    (~0.86 against ~0.48 at seeds 0-2) and the BCE falls to a fraction of its start (0.69, log 2). A step that trains
    nothing (no parameters in the optimizer, a zero lr, labels that do not follow the boxes, scores written to the
    wrong boxes) fails it. The synthetic default's held-out figure cannot tell this: see docs/detection.md."""
    boxes = sorted({tuple(line.split(",")[:6]) for line in ava.train_csv.read_text().splitlines()})
    detections = tmp_path / "train_boxes_as_detections.csv"
    detections.write_text("".join(",".join(box) + ",,1.0\n" for box in boxes))
    fit = dict(val_csv=ava.train_csv, val_detections=detections, scale_jitter=(48, 48), box_jitter=0.0, lr=1e-3)
    fit.update(warmup_epochs=0.0, drop_path=0.0, head_dropout=0.0, layer_decay=1.0, eval_every=0)
    untrained = run(**tiny_options(ava, tmp_path / "untrained", **fit, max_steps=0))
    trained = run(**tiny_options(ava, tmp_path / "trained", **fit, epochs=8))
    losses = [r["loss"] for r in read_metrics(tmp_path / "trained") if "loss" in r]
    assert trained["step"] == len(losses) == 24
    assert sum(losses[-3:]) / 3 < 0.3 * losses[0], losses
    assert trained["map"] > untrained["map"] + 0.25, (trained["map"], untrained["map"])


def test_total_batch_divides_each_micro_step(ava, tmp_path: Path) -> None:
    """--total-batch 8 at batch 4 accumulates 2 micro-steps, each loss divided by 2: the logged loss is their mean,
    the BCE of a fresh head near log 2 (not their sum, near 2 log 2)."""
    out = tmp_path / "run"
    run(**tiny_options(ava, out, total_batch=8, max_steps=1, eval_every=0, drop_path=0.0, head_dropout=0.0))
    (first,) = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert 0.5 < first < 0.9, first


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
    torchrun("detect_ava", tiny_options(ava, tmp_path / "ddp", max_steps=1, eval_every=0, total_batch=8))
    report = json.loads((tmp_path / "ddp" / "test_results.json").read_text())
    assert 0.0 <= report["map"] <= 1.0 and final(tmp_path / "ddp")["step"] == 1


def test_a_corrupt_video_is_skipped_and_counted(ava, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(ava.video_root, videos)
    broken = sorted(videos.iterdir())[0]  # a training video (the first two thirds train)
    broken.write_bytes(broken.read_bytes()[:300])  # the header survives, the frames do not
    result = run(**tiny_options(ava, tmp_path / "run", video_dir=videos, max_steps=2, eval_every=0))
    assert result["step"] == 2 and result["bad_videos"] == 1


# --- evaluation only: an official-layout AVA checkpoint --------------------------------------------------------------


def official_ava_checkpoint(path: Path, *, embed_dim=192, depth=4, patch=8, classes=80, seed=0) -> dict:
    """A checkpoint as VideoMAE's AVA code saves one (`checkpoint-29.pth`: model, optimizer, epoch, scaler, args), its
    model in the official layout (patch_embed, blocks with q_bias / v_bias, the final norm, head), random weights."""
    g = torch.Generator().manual_seed(seed)
    d = embed_dim

    def rand(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    model = {"patch_embed.proj.weight": rand(d, 3, 2, patch, patch), "patch_embed.proj.bias": rand(d)}
    for i in range(depth):
        block = {
            "norm1.weight": 1 + rand(d),
            "norm1.bias": rand(d),
            "attn.qkv.weight": rand(3 * d, d),
            "attn.q_bias": rand(d),
            "attn.v_bias": rand(d),
            "attn.proj.weight": rand(d, d),
            "attn.proj.bias": rand(d),
            "norm2.weight": 1 + rand(d),
            "norm2.bias": rand(d),
            "mlp.fc1.weight": rand(4 * d, d),
            "mlp.fc1.bias": rand(4 * d),
            "mlp.fc2.weight": rand(d, 4 * d),
            "mlp.fc2.bias": rand(d),
        }
        model.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    model.update({"norm.weight": 1 + rand(d), "norm.bias": rand(d), "head.weight": rand(classes, d, std=1.0)})
    model["head.bias"] = rand(classes)
    args = argparse.Namespace(model="vit_base_patch16_224", lr=5e-4, batch_size=4, data_set="ava", drop_path=0.2)
    optimizer = {"state": {}, "param_groups": [{"lr": 2.5e-4, "weight_decay": 0.05, "params": [0, 1]}]}
    scaler = {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 0,
    }
    torch.save({"model": model, "optimizer": optimizer, "epoch": 29, "scaler": scaler, "args": args}, path)
    return model


def official_scores(model: dict, clip: torch.Tensor, rois: torch.Tensor, *, heads: int, patch: int, crop: int):
    """sigmoid(logits) of VideoMAE's AVA model, written out here from its layout: patch embedding, the sinusoid of
    the crop's grid resized bicubically per time step, pre-norm blocks with q / v biases, final norm, temporal mean,
    torchvision RoIAlign with its default aligned=False, max over the 7 x 7 bins, linear head."""
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    x = F.conv3d(clip[None], model["patch_embed.proj.weight"], model["patch_embed.proj.bias"], stride=(2, patch, patch))
    _, d, t, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)  # [1 n d]
    g = crop // patch
    pos = torch.arange(t * g * g, dtype=torch.float64)[:, None] / 10000 ** (2 * (torch.arange(d) // 2) / d)
    pos[:, 0::2], pos[:, 1::2] = pos[:, 0::2].sin(), pos[:, 1::2].cos()
    planes = pos.reshape(t, g, g, d).permute(0, 3, 1, 2).float()
    pos = F.interpolate(planes, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, d)
    x = x + pos
    blocks = 1 + max(int(k.split(".")[1]) for k in model if k.startswith("blocks."))
    for i in range(blocks):
        p = {k[len(f"blocks.{i}.") :]: v for k, v in model.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(x, (d,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        bias = torch.cat([p["attn.q_bias"], torch.zeros(d), p["attn.v_bias"]])
        q, k, v = F.linear(y, p["attn.qkv.weight"], bias).reshape(1, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(1, -1, d), p["attn.proj.weight"], p["attn.proj.bias"])
        y = F.layer_norm(x, (d,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        x = x + F.linear(
            F.gelu(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"], p["mlp.fc2.bias"]
        )
    x = F.layer_norm(x, (d,), model["norm.weight"], model["norm.bias"], eps=1e-6)
    features = x.reshape(1, t, h, w, d).permute(0, 4, 1, 2, 3).mean(2)
    pooled = roi_align(features, rois, (7, 7), 1 / patch, 0).amax(dim=(2, 3))  # aligned=False: torchvision's default
    return torch.sigmoid(F.linear(pooled, model["head.weight"], model["head.bias"]))


def test_eval_only_scores_an_official_ava_checkpoint_as_it_was_trained(ava, tmp_path: Path, capsys) -> None:
    model = official_ava_checkpoint(tmp_path / "checkpoint-29.pth")
    out = tmp_path / "eval"
    official = dict(roi_aligned=False, test_box_extension=(0.1, 0.05))  # the official test protocol
    options = tiny_options(ava, out, finetune=tmp_path / "checkpoint-29.pth", eval_only=True, **official)
    options["train_csv"] = tmp_path / "absent.csv"  # no training set is read
    result = run(**options)
    log = capsys.readouterr().out
    assert "(official-finetune layout)" in log and "missing (0): []" in log and "unexpected (0): []" in log
    assert result["step"] == 0 and not (out / "final.pt").exists()
    report = json.loads((out / "test_results.json").read_text())
    assert report["eval_only"] and report["map"] == result["map"] and 0.0 <= result["map"] <= 1.0
    assert cli_map(ava, out / "detections.csv", capsys) == result["map"]
    # the written scores are the official model's, computed independently here from the checkpoint's tensors
    module = load_recipe("detect_ava")
    cfg = module.resolve(module.DetectConfig(**options))
    files = module.ava_files(cfg, None)
    test_set = module.build_dataset(
        cfg, read_ava_boxes(ava.val_detections_csv, kind="detections", min_score=0.8), files, train=False
    )
    listed = read_official_results(out / "detections.csv")
    classes = sorted(read_ava_label_map(ava.label_map))
    for i in (0, len(test_set) - 1):
        sample = test_set[i]
        rois = torch.cat([torch.zeros(len(sample.boxes), 1), sample.boxes], dim=1)  # extended boxes, in pixels
        want = official_scores(model, sample.clip, rois, heads=3, patch=8, crop=cfg.crop_size) * sample.scores[:, None]
        got = torch.tensor([r.score for r in listed[sample.key]]).view(len(sample.boxes), len(classes))
        torch.testing.assert_close(got, want[:, [c - 1 for c in classes]], atol=2e-5, rtol=1e-4)


def test_eval_only_reads_alphaction_person_boxes(ava, tmp_path: Path) -> None:
    from data.test_ava import alphaction_files

    official_ava_checkpoint(tmp_path / "checkpoint.pth")
    boxes, image_map = alphaction_files(read_ava_boxes(ava.val_detections_csv, kind="detections"), tmp_path)
    common = dict(finetune=tmp_path / "checkpoint.pth", eval_only=True)
    from_csv = run(**tiny_options(ava, tmp_path / "csv", **common))
    from_json = run(**tiny_options(ava, tmp_path / "json", val_detections=boxes, val_image_map=image_map, **common))
    assert from_json["map"] == pytest.approx(from_csv["map"], abs=1e-3)
    a, b = (read_official_results(tmp_path / name / "detections.csv") for name in ("csv", "json"))
    assert sorted(a) == sorted(b)
    for key in a:
        for x, y in zip(a[key], b[key], strict=True):
            assert x.box == pytest.approx(y.box, abs=2e-5) and x.action_id == y.action_id


def test_eval_only_needs_a_checkpoint_with_a_head(ava, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--eval-only needs --finetune"):
        run(**tiny_options(ava, tmp_path / "a", eval_only=True))
    torch.save({"model": videomae_pretrain("tiny", patch_size=8).state_dict()}, tmp_path / "pretrain.pt")
    with pytest.raises(SystemExit, match="pretrain.pt has no detection head of 80 classes"):
        run(**tiny_options(ava, tmp_path / "b", eval_only=True, finetune=tmp_path / "pretrain.pt"))


def test_a_wrong_time_offset_is_an_error_naming_the_keyframe(ava, tmp_path: Path) -> None:
    official_ava_checkpoint(tmp_path / "checkpoint.pth")
    options = tiny_options(ava, tmp_path / "run", time_offset=0.0, eval_only=True, finetune=tmp_path / "checkpoint.pth")
    with pytest.raises(
        KeyframeOutsideVideo, match=r"\.mp4: keyframe synth\w+,90\d is at 90\d s of the file under time offset 0"
    ):
        run(**options)


def test_a_pickled_proposals_file_is_refused(ava, tmp_path: Path) -> None:
    (tmp_path / "proposals.pkl").write_bytes(b"\x80\x04not read")
    with pytest.raises(ValueError, match="proposals.pkl: a pickle is not read"):
        run(**tiny_options(ava, tmp_path / "run", val_detections=tmp_path / "proposals.pkl", max_steps=1))
