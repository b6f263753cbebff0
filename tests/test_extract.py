"""Whole-video feature extraction (`tubemask.extract`): window arithmetic, features against the model run by hand on
the same windows, resume, bad files, checkpoint layouts (tubemask, official, Hugging Face) and the command line.

Videos are made here with torchcodec's encoder (lossless h264, noise frames, so every window differs); models are
tiny (width 192, 2 blocks, 8-pixel patches, 2-frame tubelets) with perturbed norms and biases, so a dropped final
norm or `fc_norm` changes the numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.classification import videomae_classifier
from tubemask.data.decoding import VideoReader
from tubemask.data.sampling import clip_span
from tubemask.extract import (
    ExtractConfig,
    extract,
    extract_video,
    list_videos,
    load_feature_model,
    num_windows,
    window_indices,
    window_starts,
)
from tubemask.extract.__main__ import main
from tubemask.interop.official import tubemask_to_official_state_dict
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.pos_embed import LearnedPositionEmbedding, sinusoid_table

TINY = ViTSize(192, 2, 3, 96, 1, 3)  # 192 wide: the official width table gives 3 heads
WINDOW = dict(window_frames=4, sampling_rate=2, window_stride=3, input_size=32)  # span 7 frames, 4x4 cube grid
FRAME_SIZE = (40, 56)  # not square: the short-side resize and the centre crop both matter


def _perturb(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name or name.endswith("bias") or "pos_embed" in name:
                param.add_(0.5 * torch.randn(param.shape, generator=g))
    return module.eval()


def _pretrained(seed: int = 0):
    torch.manual_seed(seed)
    return _perturb(videomae_pretrain(TINY, patch_size=8))


def _classifier(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return _perturb(videomae_classifier(TINY, patch_size=8, num_classes=5, **kwargs))


def _save(tmp_path: Path, name: str, state_dict: dict) -> Path:
    path = tmp_path / name
    torch.save({"model": state_dict}, path)
    return path


def _encode(path: Path, frames: torch.Tensor, **options) -> Path:
    encoders = pytest.importorskip("torchcodec.encoders", reason="making test videos needs torchcodec + FFmpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoders.VideoEncoder(frames, frame_rate=25).to_file(
        str(path), **{"codec": "libx264", "crf": 0, "preset": "ultrafast", **options}
    )
    return path


def _noise(num_frames: int, seed: int = 0, size: tuple[int, int] = FRAME_SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, 3, *size), generator=g, dtype=torch.uint8)


def _decode_all(path: Path) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(str(path))[:]  # uint8 [t c h w], every frame


def _clips_by_hand(path: Path, *, imagenet_norm: bool = True) -> torch.Tensor:
    """The windows of `WINDOW` cut out of the whole decoded video with slices, as float [w c t h w]."""
    frames = _decode_all(path)
    size = WINDOW["input_size"]
    h, w = frames.shape[-2:]
    frames = TF.resize(frames, [size, round(w * size / h)], antialias=True)  # short side (h) to `size`
    left = (frames.shape[-1] - size) // 2
    frames = frames[..., :, left : left + size].float() / 255  # centre crop (height already `size`)
    if imagenet_norm:
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        frames = (frames - mean) / std
    span = clip_span(WINDOW["window_frames"], WINDOW["sampling_rate"])
    starts = range(0, len(frames) - span + 1, WINDOW["window_stride"])
    windows = [frames[s : s + span : WINDOW["sampling_rate"]] for s in starts]  # [t c h w] each
    return torch.stack(windows).permute(0, 2, 1, 3, 4)  # [w c t h w]


# --- windows ---------------------------------------------------------------------------------------------------------


def test_number_of_windows_for_a_known_length_and_stride():
    assert num_windows(20, window_frames=4, sampling_rate=1, window_stride=2) == 9  # starts 0, 2, ..., 16
    assert num_windows(20, window_frames=4, sampling_rate=2, window_stride=3) == 5  # span 7: starts 0, 3, 6, 9, 12
    assert window_starts(20, window_frames=4, sampling_rate=2, window_stride=3) == [0, 3, 6, 9, 12]
    assert window_indices(20, window_frames=4, sampling_rate=2, window_stride=3)[-1] == [12, 14, 16, 18]
    for frames in (16, 17, 19, 20, 100, 1234):  # VideoMAE V2's THUMOS14 windows: range(0, num_frames - 15, 4)
        assert window_starts(frames, window_frames=16, window_stride=4) == list(range(0, frames - 15, 4))
    # shorter than one window: one window from frame 0, the last frame repeated
    assert window_indices(5, window_frames=4, sampling_rate=2, window_stride=3) == [[0, 2, 4, 4]]
    with pytest.raises(ValueError, match="window_stride=0"):
        num_windows(20, window_frames=4, window_stride=0)


@settings(max_examples=200, deadline=None)
@given(
    num_frames=st.integers(1, 300),
    window_frames=st.integers(1, 20),
    sampling_rate=st.integers(1, 5),
    window_stride=st.integers(1, 40),
)
def test_windows_fit_tile_at_the_stride_and_stop_at_the_last_whole_one(
    num_frames, window_frames, sampling_rate, window_stride
):
    kw = dict(window_frames=window_frames, sampling_rate=sampling_rate, window_stride=window_stride)
    windows = window_indices(num_frames, **kw)
    span = clip_span(window_frames, sampling_rate)
    assert len(windows) == num_windows(num_frames, **kw) >= 1
    for k, window in enumerate(windows):
        assert len(window) == window_frames and all(0 <= i < num_frames for i in window)
        assert window[0] == k * window_stride
    if num_frames >= span:
        assert all(w == list(range(w[0], w[0] + span, sampling_rate)) for w in windows)
        assert windows[-1][0] + span <= num_frames < windows[-1][0] + window_stride + span  # no further whole window


# --- features ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pretrained", "finetuned"])
def test_features_equal_the_model_run_by_hand_on_the_same_windows(tmp_path, kind):
    video = _encode(tmp_path / "videos" / "a.mp4", _noise(20))
    if kind == "pretrained":  # mean of the final-normed tokens
        model = _pretrained()

        def by_hand(clips):
            return model.forward_features(clips).mean(dim=1)

    else:  # the classifier's feature: fc_norm(mean(tokens)), no final encoder norm
        model = _classifier()

        def by_hand(clips):
            return model.head.fc_norm(model.forward_features(clips).mean(dim=1))

    checkpoint = _save(tmp_path, f"{kind}.pt", model.state_dict())
    cfg = ExtractConfig(
        videos=tmp_path / "videos", checkpoint=checkpoint, output_dir=tmp_path / "out", batch_size=2, **WINDOW
    )
    summary = extract(cfg)

    features = np.load(tmp_path / "out" / "a.npy")
    with torch.no_grad():
        expected = by_hand(_clips_by_hand(video))
    assert features.dtype == np.float32 and features.shape == (5, 192)  # 20 frames, span 7, stride 3: 5 windows
    np.testing.assert_allclose(features, expected.numpy(), atol=2e-5, rtol=1e-5)
    assert summary.videos["a.mp4"] == {"file": "a.npy", "windows": 5, "status": "extracted", "frames": 20}
    pooling = "mean(tokens)" if kind == "pretrained" else "fc_norm(mean(tokens))"
    assert summary.checkpoint.pooling == pooling and summary.feature_dim == 192


def test_pixels_in_unit_range_and_bf16_autocast(tmp_path):
    video = _encode(tmp_path / "a.mp4", _noise(12))
    model = _pretrained()
    fm, _ = load_feature_model(_save(tmp_path, "m.pt", model.state_dict()), window_frames=4, input_size=32)
    unit = extract_video(fm, VideoReader(video), imagenet_norm=False, **WINDOW)
    with torch.no_grad():
        expected = model.forward_features(_clips_by_hand(video, imagenet_norm=False)).mean(dim=1)
    np.testing.assert_allclose(unit, expected.numpy(), atol=2e-5, rtol=1e-5)
    bf16 = extract_video(fm, VideoReader(video), imagenet_norm=False, dtype="bf16", **WINDOW)
    assert bf16.dtype == np.float32 and np.abs(bf16 - unit).max() < 0.1 * np.abs(unit).max()


# --- resume and bad files -----------------------------------------------------------------------------------------------


def test_resume_skips_done_videos_and_leaves_their_files_untouched(tmp_path):
    videos = tmp_path / "videos"
    _encode(videos / "a.mp4", _noise(14, seed=1))
    _encode(videos / "sub" / "b.mp4", _noise(10, seed=2))
    checkpoint = _save(tmp_path, "m.pt", _pretrained().state_dict())
    cfg = ExtractConfig(videos=videos, checkpoint=checkpoint, output_dir=tmp_path / "out", **WINDOW)
    first = extract(cfg)
    assert first.count("extracted") == 2 and (tmp_path / "out" / "sub" / "b.npy").is_file()

    a = tmp_path / "out" / "a.npy"
    before = (a.read_bytes(), a.stat().st_mtime_ns)
    (videos / "a.mp4").write_bytes(b"no longer a video")  # a skipped video is not even opened
    (tmp_path / "out" / "sub" / "b.npy").unlink()  # b was lost: it is made again
    second = extract(cfg)

    assert (a.read_bytes(), a.stat().st_mtime_ns) == before
    assert second.videos["a.mp4"] == {"file": "a.npy", "windows": first.videos["a.mp4"]["windows"], "status": "skipped"}
    assert second.videos["sub/b.mp4"]["status"] == "extracted" and not second.failed
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["status"] == "finished" and written["counts"]["skipped"] == 1 and written["counts"]["extracted"] == 1
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]  # no temporary files left

    other = ExtractConfig(**{**vars(cfg), "window_stride": 2})  # other settings into the same folder: refused
    with pytest.raises(ValueError, match="window_stride: 3 before, 2 now"):
        extract(other)


def test_corrupt_and_truncated_files_are_skipped_counted_and_named(tmp_path):
    videos = tmp_path / "videos"
    _encode(videos / "good.mp4", _noise(12))
    whole = _encode(tmp_path / "whole.mp4", _noise(75, seed=3), extra_options={"movflags": "+faststart"})
    data = whole.read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 3])  # a download that stopped: header 75 frames, ~25 decode
    (videos / "random.avi").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    checkpoint = _save(tmp_path, "m.pt", _pretrained().state_dict())
    summary = extract(ExtractConfig(videos=videos, checkpoint=checkpoint, output_dir=tmp_path / "out", **WINDOW))

    assert list(summary.videos) == ["good.mp4"] and summary.videos["good.mp4"]["windows"] == 2
    reasons = {Path(f["path"]).name: f["reason"] for f in summary.failed}
    assert set(reasons) == {"cut.mp4", "random.avi"}
    assert reasons["cut.mp4"].startswith("truncated: header says 75 frames")
    assert "cannot open" in reasons["random.avi"]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["counts"] == {"videos": 3, "extracted": 1, "skipped": 0, "failed": 2, "short": 0, "windows": 2}
    assert sorted(Path(f["path"]).name for f in written["failed"]) == ["cut.mp4", "random.avi"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["good.npy"]


def test_a_video_shorter_than_a_window_gives_one_clamped_window(tmp_path):
    video = _encode(tmp_path / "videos" / "short.mp4", _noise(5))
    model = _pretrained()
    checkpoint = _save(tmp_path, "m.pt", model.state_dict())
    summary = extract(
        ExtractConfig(videos=tmp_path / "videos", checkpoint=checkpoint, output_dir=tmp_path / "o", **WINDOW)
    )
    frames = _decode_all(video)[[0, 2, 4, 4]]  # window_indices(5, ...) == [[0, 2, 4, 4]]
    frames = TF.center_crop(TF.resize(frames, [32, 45], antialias=True), [32, 32]).float() / 255
    clip = (frames - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        expected = model.forward_features(clip.permute(1, 0, 2, 3)[None]).mean(dim=1)
    np.testing.assert_allclose(np.load(tmp_path / "o" / "short.npy"), expected.numpy(), atol=2e-5, rtol=1e-5)
    assert summary.short == [{"path": str(video), "frames": 5}]


# --- inputs --------------------------------------------------------------------------------------------------------------


def test_list_files_mirror_their_paths_and_collisions_are_refused(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("class_a/x.avi 3\nclass_b/y.mp4 10 1\n")
    pairs = list_videos(listing, root=tmp_path / "data")
    assert [(p, str(r)) for p, r in pairs] == [
        (tmp_path / "data" / "class_a" / "x.avi", "class_a/x.avi"),
        (tmp_path / "data" / "class_b" / "y.mp4", "class_b/y.mp4"),
    ]
    (tmp_path / "f").mkdir()
    for name in ("v.mp4", "v.avi", "notes.txt", ".hidden.mp4"):
        (tmp_path / "f" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="would both write v.npy"):
        list_videos(tmp_path / "f")
    with pytest.raises(FileNotFoundError, match="neither a folder nor a list file"):
        list_videos(tmp_path / "missing")


# --- checkpoint layouts -------------------------------------------------------------------------------------------------


def _official_finetuned(model) -> dict[str, torch.Tensor]:
    """A tubemask classifier's weights under official fine-tuned names, with the sinusoid table they ship."""
    renames = (
        ("tokenizer.proj.", "patch_embed.proj."),
        ("encoder.", ""),
        ("head.fc_norm.", "fc_norm."),
        ("head.head.", "head."),
    )
    out = {}
    for key, value in model.state_dict().items():
        new = next((official + key[len(ours) :] for ours, official in renames if key.startswith(ours)), key)
        out[new] = value
    out["pos_embed"] = sinusoid_table(2 * 4 * 4, 192)[None]  # [1 n d]
    return out


def test_tubemask_and_official_checkpoints_give_the_same_features(tmp_path):
    clip = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    pretrained, classifier = _pretrained(), _classifier()
    with torch.no_grad():
        expected_pre = pretrained.forward_features(clip).mean(dim=1)
        expected_ft = classifier.head.fc_norm(classifier.forward_features(clip).mean(dim=1))
    cases = {
        "tubemask-pretrain": (pretrained.state_dict(), expected_pre, "tubemask"),
        "official-pretrain": (
            tubemask_to_official_state_dict(pretrained.state_dict()),
            expected_pre,
            "official-pretrain",
        ),
        "tubemask-finetune": (classifier.state_dict(), expected_ft, "tubemask"),
        "official-finetune": (_official_finetuned(classifier), expected_ft, "official-finetune"),
    }
    for name, (state_dict, expected, layout) in cases.items():
        model, info = load_feature_model(_save(tmp_path, f"{name}.pt", state_dict), window_frames=4, input_size=32)
        with torch.no_grad():
            torch.testing.assert_close(model(clip), expected, atol=1e-5, rtol=1e-5, msg=name)
        assert info.layout == layout, name

    learned = _classifier(pos_embed=LearnedPositionEmbedding(192, (2, 4, 4)))
    _perturb(learned, seed=5)  # the table now differs from the sinusoid: it must be loaded
    with torch.no_grad():
        expected = learned.head.fc_norm(learned.forward_features(clip).mean(dim=1))
        model, info = load_feature_model(
            _save(tmp_path, "learned.pt", learned.state_dict()), window_frames=4, input_size=32
        )
        torch.testing.assert_close(model(clip), expected, atol=1e-5, rtol=1e-5)

    with pytest.raises(ValueError, match="window_frames=3 must be a multiple of the tubelet size 2"):
        load_feature_model(tmp_path / "official-pretrain.pt", window_frames=3, input_size=32)
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "foo.pt")
    with pytest.raises(ValueError, match="holds no VideoMAE cube embedding"):
        load_feature_model(tmp_path / "foo.pt", window_frames=4, input_size=32)


@pytest.mark.parametrize("hf_class", ["VideoMAEModel", "VideoMAEForVideoClassification"])
def test_a_hugging_face_checkpoint_gives_the_converted_models_features(tmp_path, hf_class):
    transformers = pytest.importorskip("transformers")
    from tubemask.interop import classifier_from_hf, from_hf

    torch.manual_seed(0)
    config = transformers.VideoMAEConfig(
        image_size=32,
        num_frames=4,
        patch_size=8,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    hf = _perturb(getattr(transformers, hf_class)(config))
    hf.save_pretrained(tmp_path / "hf")
    video = _encode(tmp_path / "videos" / "a.mp4", _noise(13))
    summary = extract(
        ExtractConfig(videos=tmp_path / "videos", checkpoint=tmp_path / "hf", output_dir=tmp_path / "out", **WINDOW)
    )
    features = torch.from_numpy(np.load(tmp_path / "out" / "a.npy"))

    clips = _clips_by_hand(video)
    with torch.no_grad():
        if hf_class == "VideoMAEModel":
            tokenizer, pos_embed, encoder = from_hf(hf)
            x = tokenizer(clips)
            ids = torch.arange(x.shape[1])[None]
            converted = encoder(x + pos_embed(ids, (2, 4, 4), x)).mean(dim=1)
            reference = hf(clips.permute(0, 2, 1, 3, 4)).last_hidden_state.mean(dim=1)
        else:
            classifier = classifier_from_hf(hf)
            converted = classifier.head.fc_norm(classifier.forward_features(clips).mean(dim=1))
            reference = hf.fc_norm(hf.videomae(clips.permute(0, 2, 1, 3, 4)).last_hidden_state.mean(dim=1))
    assert features.shape == (3, 32)  # 13 frames, span 7, stride 3
    torch.testing.assert_close(features, converted, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(features, reference, atol=1e-4, rtol=1e-4)
    assert summary.checkpoint.layout == f"hf:{hf_class}"


# --- command line -------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter imports torch, tubemask and tyro: about 20 s on the shared 2-core CPU
def test_the_command_line_runs_as_a_subprocess(tmp_path):
    _encode(tmp_path / "videos" / "clip.mp4", _noise(11))
    checkpoint = _save(tmp_path, "m.pt", _pretrained().state_dict())
    args = ["--videos", tmp_path / "videos", "--checkpoint", checkpoint, "--output-dir", tmp_path / "out"]
    args += ["--window-frames", 4, "--sampling-rate", 2, "--window-stride", 3, "--input-size", 32, "--threads", 1]
    result = subprocess.run(
        [sys.executable, "-m", "tubemask.extract", *map(str, args)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 videos extracted, 0 skipped" in result.stdout
    assert np.load(tmp_path / "out" / "clip.npy").shape == (2, 192)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "finished"


def test_the_command_line_names_bad_settings(tmp_path, capsys):
    checkpoint = _save(tmp_path, "m.pt", _pretrained().state_dict())
    (tmp_path / "videos").mkdir()
    _encode(tmp_path / "videos" / "clip.mp4", _noise(8))
    code = main(
        ["--videos", str(tmp_path / "videos"), "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "o")]
        + ["--window-frames", "3", "--input-size", "32"]
    )
    assert code == 2 and "window_frames=3 must be a multiple of the tubelet size 2" in capsys.readouterr().err
