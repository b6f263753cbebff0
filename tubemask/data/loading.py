"""Loading one sample: its key and generator, how its file is decoded, and what replaces a bad file.

[`RecordClips`][tubemask.data.loading.RecordClips] is the loading path that the pretraining, fine-tuning and test
datasets ([tubemask.data.datasets][]) share; the AVA dataset uses its pieces for keyframes:

- **Decoding**: each sample opens its file once ([`VideoReader`][tubemask.data.decoding.VideoReader]); indices come
  from a frame sampler over the frames that really decode (the reader shrinks its count and the sampler draws again
  when the tail fails).
- **Determinism**: all randomness of sample `i` comes from a generator seeded by `(seed, epoch, i)`
  ([`sample_generator`][tubemask.data.loading.sample_generator]); a key can carry its epoch, `(epoch, i)`
  ([`split_key`][tubemask.data.loading.split_key]).
- **Bad files**: [`load_with_substitutes`][tubemask.data.loading.load_with_substitutes] replaces a file that cannot be
  opened or decoded by another sample drawn from the same generator (deterministic) and counts it in a
  [`FailureLog`][tubemask.data.failures.FailureLog]; `strict=True` raises instead. A truncated file is used for the
  frames that decode and named in the log too, once per file.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from tubemask.data.annotations import VideoRecord
from tubemask.data.decoding import DecodeError, SeekMode, VideoReader, read_clip
from tubemask.data.failures import FailureLog
from tubemask.data.sampling import FrameSampler, check_int_fields

__all__ = [
    "DecodeOptions",
    "RecordClips",
    "SampleKey",
    "load_with_substitutes",
    "sample_generator",
    "split_key",
]

T = TypeVar("T")


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from `(seed, epoch, index)` through numpy's SeedSequence (well mixed, collision-free
    in practice)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


SampleKey = int | tuple[int, int]
"""A dataset key: a record index (drawn with the dataset's current epoch), or an `(epoch, index)` pair."""


def split_key(key: SampleKey, epoch: int) -> tuple[int, int]:
    """`(epoch, index)` of a dataset key; a plain index takes `epoch`.

    Raises:
        TypeError: for anything but an int or a pair of ints.
    """
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, int) for k in key):
        return key[0], key[1]
    if isinstance(key, int) and not isinstance(key, bool):
        return epoch, key
    if hasattr(key, "__index__") and not isinstance(key, bool):  # numpy and 0-d torch integers
        return epoch, int(key)
    raise TypeError(f"dataset key {key!r}: expected an int index or an (epoch, index) pair of ints")


@dataclass(frozen=True)
class DecodeOptions:
    """How files are decoded.

    Attributes:
        seek_mode: `"exact"` (default; exact indices and the faster one for short videos) or `"approximate"`
            (no packet scan at open, for long videos); see [`SeekMode`][tubemask.data.decoding.SeekMode].
        num_ffmpeg_threads: FFmpeg threads per reader; keep 1 with several DataLoader workers.
        device: `"cpu"` or `"cuda"` (NVDEC decoding; use with `num_workers=0`).
        max_attempts: Decode tries per file before it counts as failed.
    """

    seek_mode: SeekMode = "exact"
    num_ffmpeg_threads: int = 1
    device: str = "cpu"
    max_attempts: int = 3

    def __post_init__(self) -> None:
        # checked here, when a dataset is configured: the readers would raise only at the first sample, in a worker
        if self.seek_mode not in ("exact", "approximate"):
            raise ValueError(f"DecodeOptions.seek_mode={self.seek_mode!r}; allowed: 'exact', 'approximate'")
        check_int_fields(self, "num_ffmpeg_threads", minimum=0)
        check_int_fields(self, "max_attempts")


@dataclass
class RecordClips:
    """The clips of a list of records, one record per call: `load(i)` opens record `i`, samples and decodes its clip
    (or test views), substituting another record for a bad file and reporting it.

    Attributes:
        records: The videos.
        sampler: Frame sampler (`span`, `__call__(num_frames, generator)`, `views(num_frames, num_clips)`).
        seed: Base seed.
        decode: Decoding options.
        strict: Raise on the first bad file instead of substituting.
        max_substitutions: Consecutive bad files tolerated for one sample before raising.
        epoch: Current epoch (set through the dataset's `set_epoch`).
        failures: What went wrong in this process.
    """

    records: Sequence[VideoRecord]
    sampler: FrameSampler
    seed: int = 0
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    strict: bool = False
    max_substitutions: int = 20
    epoch: int = 0
    failures: FailureLog = field(default_factory=FailureLog)

    def __post_init__(self) -> None:
        if len(self.records) == 0:
            raise ValueError("a dataset needs at least one video record")

    def load(self, index: SampleKey, num_views: int | None = None) -> tuple[Tensor, int, torch.Generator]:
        """Decode a clip (or `num_views` test clips) of record `index`, or of a substitute if it is bad.

        Args:
            index: A record index (drawn with the current `epoch`) or an `(epoch, index)` pair.
            num_views: Test views to decode instead of one training clip.

        Returns:
            `(frames, used_index, generator)`: uint8 frames `[t c h w]` (`[v*t c h w]` for views, clip-major), the
            record index they came from, and the sample's generator for the augmentations.
        """
        epoch, index = split_key(index, self.epoch)
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} videos")
        generator = sample_generator(self.seed, epoch, index)

        def decode(candidate: int) -> Tensor:
            path = self.records[candidate].path
            reader = VideoReader(
                path,
                seek_mode=self.decode.seek_mode,
                num_ffmpeg_threads=self.decode.num_ffmpeg_threads,
                device=self.decode.device,
            )
            if num_views is None:
                frames, _ = read_clip(
                    reader, lambda n: self.sampler(n, generator), max_attempts=self.decode.max_attempts
                )
            else:
                frames, _ = read_clip(
                    reader,
                    lambda n: [i for view in self.sampler.views(n, num_views) for i in view],
                    max_attempts=self.decode.max_attempts,
                )
            if reader.truncated:
                self.failures.record_truncated(str(path), reader.header_frames, reader.num_frames)
            if reader.num_frames < self.sampler.span:
                self.failures.record_short(str(path), reader.num_frames, self.sampler.span)
            return frames

        frames, used = load_with_substitutes(
            decode,
            index,
            count=len(self.records),
            generator=generator,
            failures=self.failures,
            strict=self.strict,
            max_substitutions=self.max_substitutions,
            what="videos",
            name=lambda i: self.records[i].path,
            hint="most of the dataset may be unreadable",
        )
        return frames, used, generator


def load_with_substitutes(
    load: Callable[[int], T],
    index: int,
    *,
    count: int,
    generator: torch.Generator,
    failures: FailureLog,
    strict: bool,
    max_substitutions: int,
    what: str,
    name: Callable[[int], object],
    hint: str,
) -> tuple[T, int]:
    """`load(index)`; while it raises [DecodeError][tubemask.data.decoding.DecodeError], count the bad file in
    `failures` and `load` a substitute drawn uniformly from `range(count)` with `generator` (the datasets' policy:
    a bad video costs a sample's identity, never the run).

    Args:
        load: Decodes item `i`, raising `DecodeError` for a bad file.
        index: The item asked for.
        count: Items to draw substitutes from.
        generator: The sample's generator (substitutes are reproducible).
        failures: Where bad files are counted and logged.
        strict: Raise the first `DecodeError` instead.
        max_substitutions: Consecutive failures tolerated before giving up.
        what: The items in the give-up message (`"videos"`, `"keyframes"`).
        name: How the message names item `i` (the last that failed).
        hint: The likely cause, in the message.

    Returns:
        `(load's result, the index it came from)`.

    Raises:
        DecodeError: in strict mode.
        RuntimeError: after `max_substitutions + 1` failures in a row, with the failure summary.
    """
    candidate = index
    for _ in range(max_substitutions + 1):
        try:
            return load(candidate), candidate
        except DecodeError as error:
            if strict:
                raise
            failed, candidate = candidate, int(torch.randint(count, (), generator=generator))
            failures.record(error.path, str(error).removeprefix(f"{error.path}: "), substitute=candidate)
    raise RuntimeError(
        f"{max_substitutions + 1} {what} in a row failed to load while fetching sample {index} "
        f"(last: {name(failed)}); {hint}:\n" + failures.summary()
    )
