"""Map-style datasets of video clips: pretraining, fine-tuning and multi-view testing.

All three share one loading path ([`RecordClips`][tubemask.data.datasets.RecordClips]):

- **Decoding**: each sample opens its file once ([`VideoReader`][tubemask.data.decoding.VideoReader]); indices come
  from a frame sampler over the frames that really decode (the reader shrinks its count and the sampler draws again
  when the tail fails).
- **Determinism**: all randomness of sample `i` comes from a generator seeded by `(seed, epoch, i)`
  ([`sample_generator`][tubemask.data.datasets.sample_generator]); call `set_epoch(epoch)` before each epoch and a
  resumed run sees exactly the same clips. A key can also carry its epoch: `dataset[(epoch, i)]`, which is what
  [`ResumableDistributedSampler(with_epoch=True)`][tubemask.train.sampler.ResumableDistributedSampler] yields. Use
  that with `persistent_workers=True`: workers that live across epochs keep the epoch they started with, so plain
  integer keys would repeat epoch 0's clips, while keyed samples stay exact (and the loader no longer re-forks its
  workers each epoch: about 0.3 s per epoch measured on the synthetic set with 2 workers).
- **Bad files**: a file that cannot be opened or decoded is replaced by another sample drawn from the same
  generator (deterministic), counted in `dataset.failures` and logged as a warning; `strict=True` raises instead.
  A truncated file (its header states more frames than decode) is used for the frames that decode, and named in
  `dataset.failures` too ([`record_truncated`][tubemask.data.failures.FailureLog.record_truncated]), once per file.
- **Repeated sampling** (`repeats=r > 1`): one decode, `r` independent augmentations, stacked on a new leading dim:
  a sample is `[r c t h w]` (labels `[r]`). The default collate then gives `[b r c t h w]`;
  [`collate_repeated`][tubemask.data.datasets.collate_repeated] flattens to `[(b r) c t h w]`, which is what a model
  takes. An epoch then yields `r` times more clips per decoded video.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from tubemask.data.annotations import VideoRecord
from tubemask.data.decoding import DecodeError, SeekMode, VideoReader, read_clip
from tubemask.data.failures import FailureLog
from tubemask.data.model_input import stack_clips
from tubemask.data.sampling import DenseSampler, FrameSampler, check_int_fields

__all__ = [
    "RecordClips",
    "DecodeOptions",
    "FinetuneDataset",
    "MultiViewDataset",
    "PretrainDataset",
    "SampleKey",
    "collate_repeated",
    "load_with_substitutes",
    "sample_generator",
    "split_key",
]

T = TypeVar("T")

ClipPipeline = Callable[..., Any]
"""`pipeline(frames uint8 [t c h w], generator=g) -> [c t h w]` (a list of views for testing): float normalized, or
uint8 for a pipeline with `normalize=False` (normalize the batch with `normalize_batch` after the DataLoader)."""


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


def _augmented(pipeline: ClipPipeline, frames: Tensor, repeats: int, generator: torch.Generator) -> Tensor:
    """One augmented clip (`repeats == 1`), or `[r ...]` repeats: the pipeline's own `repeat(frames, r,
    generator=g)` when it has one (e.g. `PretrainPipeline`, `FinetunePipeline`: written into one batch), else `r`
    calls stacked."""
    if repeats == 1:
        return pipeline(frames, generator=generator)
    repeat = getattr(pipeline, "repeat", None)
    if callable(repeat):
        return repeat(frames, repeats, generator=generator)
    return stack_clips([pipeline(frames, generator=generator) for _ in range(repeats)])


class _ClipDataset(Dataset):
    """Shared plumbing (composition: holds a [`RecordClips`][tubemask.data.datasets.RecordClips] as `clips`)."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        sampler: FrameSampler,
        pipeline: ClipPipeline,
        seed: int,
        decode: DecodeOptions | None,
        strict: bool,
    ) -> None:
        self.clips = RecordClips(records, sampler, seed=seed, decode=decode or DecodeOptions(), strict=strict)
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.clips.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` makes (call before iterating each epoch)."""
        self.clips.epoch = epoch

    @property
    def failures(self) -> FailureLog:
        """Bad videos seen in this process (in worker processes when `num_workers > 0`; their log lines name them)."""
        return self.clips.failures

    def summary(self) -> str:
        """Human-readable failure report of this process."""
        return self.clips.failures.summary()


def _check_repeats(repeats: int) -> int:
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    return repeats


class PretrainDataset(_ClipDataset):
    """Unlabelled clips for masked-autoencoder pretraining.

    `dataset[i]` is a normalized float clip `[c t h w]`, or `[r c t h w]` with `repeats=r > 1`; uint8 with a
    `normalize=False` pipeline (then apply [`normalize_batch`][tubemask.data.model_input.normalize_batch] to each
    batch on the training device: 4x less memory and DataLoader IPC, and a repeat costs about 2-3 ms on one core
    (crop and resize in uint8, written channels-last into its slot of the batch) instead of about 8 ms as float).
    A pipeline with a `repeat(frames, r, generator=g) -> [r c t h w]` method (as
    [`PretrainPipeline.repeat`][tubemask.data.pipelines.PretrainPipeline.repeat]) builds the repeats itself; other
    pipelines are called `r` times and their clips stacked.

    Args:
        records: Videos (labels ignored).
        sampler: Frame sampler; default 16 frames stride 4 with a random start.
        pipeline: `pipeline(frames, generator=g) -> [c t h w]`, e.g.
            [`PretrainPipeline`][tubemask.data.pipelines.PretrainPipeline].
        repeats: Augmented clips per decoded video (repeated sampling).
        seed: Base seed; sample `i` of epoch `e` depends only on `(seed, e, i)`.
        decode: Decoding options.
        strict: Raise on a bad file instead of substituting.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        pipeline: ClipPipeline,
        sampler: FrameSampler | None = None,
        repeats: int = 1,
        seed: int = 0,
        decode: DecodeOptions | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(
            records, sampler=sampler or DenseSampler(), pipeline=pipeline, seed=seed, decode=decode, strict=strict
        )
        self.repeats = _check_repeats(repeats)

    def __getitem__(self, index: SampleKey) -> Float[Tensor, "..."]:
        frames, _, generator = self.clips.load(index)
        return _augmented(self.pipeline, frames, self.repeats, generator)


class FinetuneDataset(_ClipDataset):
    """Labelled clips for fine-tuning: `dataset[i] = (clip [c t h w], label)`.

    With `repeats=r > 1`: `(clips [r c t h w], labels [r])`. A substituted bad video brings its own label.

    Args:
        records: Videos with labels.
        sampler: Frame sampler; default 16 frames stride 4 with a random start.
        pipeline: e.g. [`FinetunePipeline`][tubemask.data.pipelines.FinetunePipeline].
        repeats: Augmented clips per decoded video (2 in VideoMAE fine-tuning).
        seed: Base seed.
        decode: Decoding options.
        strict: Raise on a bad file instead of substituting.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        pipeline: ClipPipeline,
        sampler: FrameSampler | None = None,
        repeats: int = 1,
        seed: int = 0,
        decode: DecodeOptions | None = None,
        strict: bool = False,
    ) -> None:
        missing = [r.path for r in records if r.label is None]
        if missing:
            raise ValueError(f"{len(missing)} records have no label (first: {missing[0]}); fine-tuning needs labels")
        super().__init__(
            records, sampler=sampler or DenseSampler(), pipeline=pipeline, seed=seed, decode=decode, strict=strict
        )
        self.repeats = _check_repeats(repeats)

    def __getitem__(self, index: SampleKey) -> tuple[Tensor, Any]:
        frames, used, generator = self.clips.load(index)
        label = self.clips.records[used].label
        clips = _augmented(self.pipeline, frames, self.repeats, generator)
        if self.repeats == 1:
            return clips, label
        return clips, torch.full((self.repeats,), label, dtype=torch.long)


class MultiViewDataset(_ClipDataset):
    """Test-time views: `dataset[i] = (views [v c t h w], label, index)` with `v = num_clips * crops`, clip-major.

    `index` is the record whose views these are (a substitute's index if record `i` was bad), for aggregating
    per-video scores.

    Args:
        records: Videos with labels (None is passed through as -1).
        pipeline: Returns a list of spatial views, e.g. [`EvalPipeline`][tubemask.data.pipelines.EvalPipeline].
        sampler: Frame sampler whose `views` gives the temporal clips; default dense 16 x 4.
        num_clips: Temporal views (5 for UCF101, 2 for SSv2).
        decode: Decoding options (`"exact"` seeking is a good choice for evaluation).
        strict: Raise on a bad file instead of substituting.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        pipeline: ClipPipeline,
        sampler: FrameSampler | None = None,
        num_clips: int = 5,
        decode: DecodeOptions | None = None,
        strict: bool = False,
    ) -> None:
        if num_clips < 1:
            raise ValueError(f"num_clips={num_clips} must be >= 1")
        super().__init__(
            records, sampler=sampler or DenseSampler(), pipeline=pipeline, seed=0, decode=decode, strict=strict
        )
        self.num_clips = num_clips

    def __getitem__(self, index: SampleKey) -> tuple[Tensor, int, int]:
        frames, used, generator = self.clips.load(index, num_views=self.num_clips)
        per_clip = frames.shape[0] // self.num_clips
        views = []
        for k in range(self.num_clips):
            views += self.pipeline(frames[k * per_clip : (k + 1) * per_clip], generator=generator)
        label = self.clips.records[used].label
        return torch.stack(views), -1 if label is None else label, used


def collate_repeated(batch: list[Any]) -> Any:
    """Collate samples of a repeated-sampling dataset, flattening the repeats into the batch.

    Items `[r c t h w]` become a batch `[(b r) c t h w]`; `(clips [r ...], labels [r])` items become
    `(clips [(b r) ...], labels [(b r)])`. Works for `repeats=1` items too (then it gives the default collate's
    values). Clips are stacked in their own memory order ([`stack_clips`][tubemask.data.model_input.stack_clips]):
    uint8 clips of a `normalize=False` pipeline stay channels-last, a plain copy instead of a transposition per clip,
    and [`normalize_batch`][tubemask.data.model_input.normalize_batch] on the training device makes them contiguous.
    """
    if isinstance(batch[0], Tensor):
        clips = stack_clips(batch, stack=default_collate)
        return clips.flatten(0, 1) if clips.ndim == 6 else clips
    clips = stack_clips([item[0] for item in batch], stack=default_collate)
    rest = [default_collate([item[k] for item in batch]) for k in range(1, len(batch[0]))]
    if clips.ndim == 6:
        return (clips.flatten(0, 1), rest[0].flatten(0, 1), *rest[1:])
    return [clips, *rest]
