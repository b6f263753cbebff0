"""Decoding real files by index: containers, seek modes, lying headers, bad files, missing torchcodec."""

import subprocess
import sys

import pytest
import torch

from tubemask.data import DecodeError, DecodeOptions, MissingDecoderError, VideoReader, make_synthetic_ucf101, read_clip
from tubemask.data.decoding import HEADER_SLACK, require_torchcodec
from tubemask.data.sampling import dense_indices


def frame_ids(frames: torch.Tensor) -> list[int]:
    """Recover the index written by conftest.numbered_frames (brightness 4 * i + 8, within codec rounding)."""
    return [round((float(m) - 8) / 4) for m in frames.float().mean(dim=(1, 2, 3))]


@pytest.mark.parametrize("kind", ["mp4", "avi", "webm"])
@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_reads_frames_by_index_in_each_container(videos, kind, seek_mode):
    reader = VideoReader(videos[kind], seek_mode=seek_mode)
    wanted = [0, 3, 3, 7, 20, reader.num_frames - 1]
    frames = reader.get_frames(wanted)
    assert frames.dtype == torch.uint8 and frames.shape == (6, 3, 48, 64)
    assert frame_ids(frames) == wanted


def test_real_h264_clip_and_threads(videos):
    reader = VideoReader(videos["bikes"], num_ffmpeg_threads=0)
    assert reader.num_frames == 250 and reader.fps == pytest.approx(25)
    frames = reader.get_frames(dense_indices(reader.num_frames, generator=torch.Generator().manual_seed(0)))
    assert frames.shape == (16, 3, 272, 640)
    assert frames.float().std() > 10  # real content, not a blank frame


def test_indices_are_clamped(videos):
    reader = VideoReader(videos["avi"])
    assert frame_ids(reader.get_frames([-5, 1000])) == [0, 39]


def test_lying_header_shrinks_to_decodable_frames(bad_files):
    reader = VideoReader(bad_files["truncated_avi"], seek_mode="approximate")
    assert reader.num_frames == 40  # the header's claim
    frames, indices = read_clip(reader, lambda n: list(range(n - 16, n)))
    assert 0 < reader.num_frames < 40
    assert max(indices) == reader.num_frames - 1
    # The cut-off last packet decodes to a concealed copy of its predecessor; the frames before it are exact.
    assert frame_ids(frames)[:-1] == indices[:-1]


def test_shrink_by_decoding_when_exact_count_lies(bad_files):
    reader = VideoReader(bad_files["truncated_avi"], seek_mode="exact")
    decodable = reader.num_frames
    reader.num_frames = 40  # pretend the container over-counts even after a scan
    assert reader.shrink() and reader.num_frames == decodable
    assert not reader.shrink()  # nothing more to learn


@pytest.mark.parametrize("kind", ["avi", "mp4"])
@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_a_file_cut_short_is_told_truncated_by_header_vs_decodable_frames(truncated_videos, kind, seek_mode):
    # an XviD AVI / an h264 MP4 with its index in front, cut to a third of its bytes: the header still says 75 frames
    reader = VideoReader(truncated_videos[kind], seek_mode=seek_mode)
    assert reader.header_frames == 75
    if seek_mode == "approximate":  # trusts the header until a clip reaches past what decodes
        assert reader.num_frames == 75 and not reader.truncated
    frames, indices = read_clip(reader, lambda n: list(range(n - 16, n)))
    assert reader.truncated and 10 <= reader.num_frames <= 30  # about a third
    assert reader.header_frames == 75 and max(indices) == reader.num_frames - 1 and frames.shape[0] == 16
    whole = VideoReader(truncated_videos["whole_avi"], seek_mode=seek_mode)
    assert whole.header_frames == whole.num_frames == 75 and not whole.truncated


def test_truncation_needs_a_header_count_and_more_than_one_lost_frame(videos, truncated_videos):
    webm = VideoReader(videos["webm"])  # Matroska/WebM headers state no frame count: never called truncated
    assert webm.header_frames is None and not webm.truncated
    webm.num_frames = 1
    assert not webm.truncated
    reader = VideoReader(truncated_videos["whole_avi"])
    reader.num_frames = 75 - HEADER_SLACK  # a last frame that fails: common in real files, not a truncation
    assert not reader.truncated
    reader.num_frames -= 1
    assert reader.truncated


def test_an_mp4_cut_short_with_its_index_at_the_end_does_not_open(truncated_videos):
    # the moov atom is written last: cut, the file has no index and is unreadable (a failed load, not a truncation)
    with pytest.raises(DecodeError, match="FFmpeg cannot open it as a video"):
        VideoReader(truncated_videos["mp4_index_at_end"])


@pytest.mark.parametrize("kind", ["zero", "random", "text", "truncated_mp4", "directory", "missing"])
def test_unopenable_files_raise_decode_error_naming_the_file(bad_files, kind):
    with pytest.raises(DecodeError) as info:
        VideoReader(bad_files[kind])
    assert str(bad_files[kind]) in str(info.value) and info.value.path == str(bad_files[kind])


def test_bad_arguments_name_the_allowed_values(videos):
    with pytest.raises(ValueError, match="approximate"):
        VideoReader(videos["avi"], seek_mode="fast")
    with pytest.raises(ValueError, match="num_ffmpeg_threads"):
        VideoReader(videos["avi"], num_ffmpeg_threads=-1)
    with pytest.raises(ValueError, match="max_attempts=0 must be >= 1"):  # was an AssertionError
        read_clip(VideoReader(videos["avi"]), lambda n: [0], max_attempts=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seek_mode": "fast"}, r"DecodeOptions.seek_mode='fast'; allowed: 'exact', 'approximate'"),
        ({"num_ffmpeg_threads": -1}, r"DecodeOptions.num_ffmpeg_threads=-1 must be an int >= 0"),
        ({"max_attempts": 0}, r"DecodeOptions.max_attempts=0 must be an int >= 1"),
        ({"max_attempts": True}, r"DecodeOptions.max_attempts=True must be an int >= 1"),
    ],
)
def test_decode_options_are_checked_when_built(options, message):
    # a dataset's decoding settings fail where they are written, not at the first sample inside a DataLoader worker
    with pytest.raises(ValueError, match=message):
        DecodeOptions(**options)


def test_missing_torchcodec_gives_clear_error(monkeypatch, videos, tmp_path):
    for name in ("torchcodec", "torchcodec.decoders", "torchcodec.encoders"):  # as if never installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDecoderError, match="pip install torchcodec"):
        require_torchcodec()
    with pytest.raises(MissingDecoderError, match="ffmpeg"):
        VideoReader(videos["avi"])
    with pytest.raises(MissingDecoderError, match="Encoding video needs"):
        require_torchcodec("encoders")
    with pytest.raises(MissingDecoderError, match="pip install torchcodec"):
        make_synthetic_ucf101(tmp_path / "synthetic")
    assert not (tmp_path / "synthetic").exists()
    with pytest.raises(ValueError, match="'decoders', 'encoders'"):
        require_torchcodec("encoder")


def test_package_imports_without_torchcodec():
    code = (
        "import sys; sys.modules['torchcodec'] = None\n"
        "import tubemask.data as d\n"
        "assert 'torchcodec' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n    d.VideoReader('x.mp4')\nexcept d.MissingDecoderError as e:\n    print('ok', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok") and "pip install torchcodec" in result.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_decoding(videos):
    reader = VideoReader(videos["mp4"], device="cuda")
    frames = reader.get_frames([0, 5, 9])
    assert frames.is_cuda and frame_ids(frames.cpu()) == [0, 5, 9]


@pytest.mark.parametrize("kind", ["mp4", "avi", "webm", "bikes"])
@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_dense_clips_read_in_one_pass_match_frame_by_frame(videos, kind, seek_mode):
    """Evenly spaced indices go through get_frames_in_range; the frames equal torchcodec's get_frames_at."""
    reader = VideoReader(videos[kind], seek_mode=seek_mode)
    for indices in ([1, 3, 5, 7, 9], [2, 6, 10, 14], list(range(4, 12)), [0, 4, 8, 8, 8]):
        expected = reader._decoder.get_frames_at([min(i, reader.num_frames - 1) for i in indices]).data
        assert torch.equal(reader.get_frames(indices), expected)
