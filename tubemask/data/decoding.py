"""Reading frames of a video file by index, with torchcodec.

One [`VideoReader`][tubemask.data.decoding.VideoReader] opens a file once and returns frames as `uint8 [t c h w]`.
Real files lie about their length (a header frame count larger than what decodes, a last frame that fails, variable
frame rate), so the reader can *shrink* its frame count to the frames that really decode, and
[`read_clip`][tubemask.data.decoding.read_clip] re-samples indices inside that count and retries. A file cut short
(a copy or download that stopped early) keeps the header of the whole video: the reader tells it by
[`truncated`][tubemask.data.decoding.VideoReader.truncated], so the datasets can name it instead of training on it as
a short video in silence.

torchcodec is imported lazily: `import tubemask.data` works without it (for example on a GPU machine that only
trains from pre-decoded tensors); asking for decoding raises
[`MissingDecoderError`][tubemask.data.decoding.MissingDecoderError] naming what to install.
"""

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = [
    "HEADER_SLACK",
    "DecodeError",
    "MissingDecoderError",
    "SeekMode",
    "VideoReader",
    "read_clip",
    "require_torchcodec",
]

SeekMode = Literal["exact", "approximate"]
"""torchcodec seek mode: `"exact"` scans the file's packets once at open (no decoding) and guarantees frame `i` is
frame `i`; `"approximate"` trusts the header (skips the scan, may be off on variable-frame-rate files).

`"exact"` is the default because it is also the faster one for training clips from short videos: the scan costs a
fraction of a millisecond on a 10 s file, and with it torchcodec knows the keyframes and never seeks needlessly. In
approximate mode torchcodec 0.17 takes keyframe positions from FFmpeg's index, which can be wrong for h264 with
B-frames, and then seeks backwards and decodes the same frames twice (torchcodec issue #1077): 16 x 4 clips of
h264 mp4s decode 10 to 25% slower there (mpeg4 avi and vp9 webm: no difference; docs/data.md). Prefer approximate
for long videos (minutes) read a few clips at a time, where the scan is the larger cost."""

HEADER_SLACK = 1
"""Frames a header may over-count before [`VideoReader.truncated`][tubemask.data.decoding.VideoReader.truncated] calls
the file truncated: a last frame that does not decode is common in real files and costs nothing; a file cut short
loses far more (an XviD AVI cut to a third of its bytes: the header says 75 frames, 13 to 25 decode)."""


class MissingDecoderError(ImportError):
    """torchcodec (or the FFmpeg libraries it loads) is not available."""


class DecodeError(RuntimeError):
    """A video file could not be opened or its frames could not be decoded.

    Attributes:
        path: The file that failed.
    """

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


def require_torchcodec(part: Literal["decoders", "encoders"] = "decoders") -> Any:
    """Import and return `torchcodec.decoders` (or `torchcodec.encoders`), or raise a clear error.

    Args:
        part: `"decoders"` for reading video, `"encoders"` for writing it (the synthetic dataset, videos of
            reconstructions).

    Returns:
        The `torchcodec.decoders` or `torchcodec.encoders` module.

    Raises:
        MissingDecoderError: torchcodec is not installed or cannot load FFmpeg.
        ValueError: `part` is neither.
    """
    if part not in ("decoders", "encoders"):
        raise ValueError(f"part={part!r}; allowed: 'decoders', 'encoders'")
    try:
        module = importlib.import_module(f"torchcodec.{part}")
    except (ImportError, OSError, RuntimeError) as error:  # RuntimeError: FFmpeg shared libraries not found
        verb = "Decoding" if part == "decoders" else "Encoding"
        raise MissingDecoderError(
            f"{verb} video needs the `torchcodec` package and FFmpeg's shared libraries: "
            "`pip install torchcodec` and install FFmpeg (Debian/Ubuntu: `apt-get install ffmpeg`). "
            f"The import failed with: {type(error).__name__}: {error}"
        ) from error
    return module


class VideoReader:
    """One open video file; frames by index as `uint8 [t c h w]`.

    Args:
        path: The video file (mp4/h264, avi/mpeg4, webm/vp9, anything FFmpeg reads).
        seek_mode: `"exact"` (default: scans the packets at open, exact indices, fastest for short videos) or
            `"approximate"` (trusts the header; no scan); see [`SeekMode`][tubemask.data.decoding.SeekMode].
        num_ffmpeg_threads: FFmpeg decoding threads. 1 is best when many readers run in parallel (DataLoader
            workers); 0 lets FFmpeg decide.
        device: `"cpu"` or a CUDA device (`"cuda"`, `"cuda:1"`) to decode on the GPU with NVDEC; frames then come
            back on that device.

    Attributes:
        path: The file, as given.
        num_frames: Frames believed decodable. Starts from the container's count and only ever decreases, see
            [`shrink`][tubemask.data.decoding.VideoReader.shrink].
        header_frames: The frame count the container's header states (AVI, MP4), kept when `num_frames` goes down;
            None where the header states none (Matroska, WebM).
        fps: Average frame rate from the header (may be `None`).

    Raises:
        DecodeError: The file is missing, is a directory, or FFmpeg cannot open it as a video.
        MissingDecoderError: torchcodec is not installed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        seek_mode: SeekMode = "exact",
        num_ffmpeg_threads: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if seek_mode not in ("exact", "approximate"):
            raise ValueError(f"seek_mode={seek_mode!r}; allowed: 'exact', 'approximate'")
        if num_ffmpeg_threads < 0:
            raise ValueError(f"num_ffmpeg_threads={num_ffmpeg_threads} must be >= 0 (0 lets FFmpeg decide)")
        self.path = Path(path)
        self._decoders = require_torchcodec()
        self._threads = num_ffmpeg_threads
        self._device = str(device)
        self._seek_mode: SeekMode = seek_mode
        self._scanned = False  # True once the decodable count was established by decoding
        if not self.path.is_file():
            what = "is a directory" if self.path.is_dir() else "does not exist"
            raise DecodeError(self.path, f"cannot open: the path {what}")
        self._decoder = self._open(seek_mode)
        self.num_frames = len(self._decoder)
        self.fps = self._decoder.metadata.average_fps
        header = getattr(self._decoder.metadata, "num_frames_from_header", None)
        self.header_frames: int | None = int(header) if header is not None and header > 0 else None
        if self.num_frames <= 0:
            self.shrink()

    def _open(self, seek_mode: SeekMode) -> Any:
        try:
            return self._decoders.VideoDecoder(
                str(self.path), seek_mode=seek_mode, num_ffmpeg_threads=self._threads, device=self._device
            )
        except (RuntimeError, ValueError) as error:
            reason = _short(error).replace(f"{self.path} ", "")
            raise DecodeError(self.path, f"FFmpeg cannot open it as a video ({reason})") from error

    def __len__(self) -> int:
        return self.num_frames

    @property
    def truncated(self) -> bool:
        """True when the header states more frames than decode, by more than
        [`HEADER_SLACK`][tubemask.data.decoding.HEADER_SLACK]: a file cut short.

        In exact seek mode this is known at open (the packet scan finds only the packets the file still holds); in
        approximate mode once [`shrink`][tubemask.data.decoding.VideoReader.shrink] has lowered `num_frames` (a clip
        reached past the frames that decode). A file whose header states no frame count is never called truncated.
        """
        return self.header_frames is not None and self.header_frames - self.num_frames > HEADER_SLACK

    def get_frames(self, indices: Sequence[int]) -> Tensor:
        """Decode the frames at `indices` (any order, repeats allowed), clamped to `[0, num_frames - 1]`.

        Args:
            indices: Frame indices.

        Returns:
            `uint8 [t c h w]` frames in the order of `indices`, on the reader's device.

        Raises:
            DecodeError: A frame could not be decoded (often the tail of a file whose header over-counts); call
                [`shrink`][tubemask.data.decoding.VideoReader.shrink] and sample again.
        """
        if self.num_frames <= 0:
            raise DecodeError(self.path, "no decodable frames")
        clamped = [min(max(int(i), 0), self.num_frames - 1) for i in indices]
        try:
            step = _arithmetic_step(clamped)
            if step is not None:  # a dense clip: one forward pass, no per-frame seek decisions
                return self._decoder.get_frames_in_range(clamped[0], clamped[-1] + 1, step).data
            return self._decoder.get_frames_at(clamped).data
        except (RuntimeError, IndexError, ValueError) as error:
            raise DecodeError(
                self.path, f"decoding frames {min(clamped)}..{max(clamped)} failed ({_short(error)})"
            ) from error

    def shrink(self) -> bool:
        """Lower `num_frames` to the frames that really decode.

        First re-opens the file in exact mode (a scan of the packets, no decoding), which fixes headers that
        over-count. If that does not lower the count, decodes the file once from the start and keeps the number of
        frames that decoded.

        Returns:
            True if `num_frames` went down (sampling again may succeed), False if nothing changed.

        Raises:
            DecodeError: Not a single frame decodes.
        """
        before = self.num_frames
        if self._seek_mode == "approximate":
            self._seek_mode = "exact"
            self._decoder = self._open("exact")
            self.num_frames = min(self.num_frames, len(self._decoder)) if self.num_frames > 0 else len(self._decoder)
            if 0 < self.num_frames < before:
                return True
        if not self._scanned:
            self._scanned = True
            self.num_frames = self._count_decodable(self.num_frames if self.num_frames > 0 else None)
        if self.num_frames <= 0:
            raise DecodeError(self.path, "no frame decodes")
        return self.num_frames < before

    def _count_decodable(self, limit: int | None) -> int:
        count = 0
        try:
            for count_so_far in range(limit if limit is not None else 1 << 30):
                self._decoder.get_frame_at(count_so_far)
                count = count_so_far + 1
        except (RuntimeError, IndexError, ValueError):
            pass
        return count


def _arithmetic_step(indices: Sequence[int]) -> int | None:
    """The common difference of `indices` if they are at least two, increasing and evenly spaced, else None."""
    if len(indices) < 2:
        return None
    step = indices[1] - indices[0]
    if step < 1 or any(b - a != step for a, b in zip(indices, indices[1:], strict=False)):
        return None
    return step


def _short(error: BaseException) -> str:
    """The last line of a torchcodec error without the C++ source location."""
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.rsplit(".cpp:", 1)[-1].split(", ", 1)[-1] if ".cpp:" in text else text


@typechecked
def read_clip(
    reader: VideoReader,
    sample_indices: Callable[[int], Sequence[int]],
    *,
    max_attempts: int = 3,
) -> tuple[Tensor, list[int]]:
    """Sample frame indices for the reader's frame count, decode them, and retry with fewer frames on failure.

    Args:
        reader: An open [`VideoReader`][tubemask.data.decoding.VideoReader].
        sample_indices: Maps a frame count to the indices to read (a frame sampler with its other arguments bound;
            it must be deterministic for a given count, e.g. draw from a generator it was given).
        max_attempts: Decoding tries; between tries the reader shrinks its frame count to the frames that decode.

    Returns:
        `(frames, indices)`: `uint8 [t c h w]` frames and the indices they came from.

    Raises:
        DecodeError: Still failing after `max_attempts`, or nothing decodes.
        ValueError: `max_attempts < 1`.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts={max_attempts} must be >= 1")
    last: DecodeError | None = None
    for _ in range(max_attempts):
        indices = [int(i) for i in sample_indices(reader.num_frames)]
        try:
            return reader.get_frames(indices), indices
        except DecodeError as error:
            last = error
            if not reader.shrink():
                break
    assert last is not None
    raise last
