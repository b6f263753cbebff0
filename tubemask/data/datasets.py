"""Map-style datasets of video clips: pretraining, fine-tuning and multi-view testing.

All three share one loading path ([`RecordClips`][tubemask.data.loading.RecordClips], in [tubemask.data.loading][]):

- **Decoding**: each sample opens its file once ([`VideoReader`][tubemask.data.decoding.VideoReader]); indices come
  from a frame sampler over the frames that really decode (the reader shrinks its count and the sampler draws again
  when the tail fails).
- **Determinism**: all randomness of sample `i` comes from a generator seeded by `(seed, epoch, i)`
  ([`sample_generator`][tubemask.data.loading.sample_generator]); call `set_epoch(epoch)` before each epoch and a
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
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from tubemask.data.annotations import VideoRecord
from tubemask.data.failures import FailureLog
from tubemask.data.loading import DecodeOptions, RecordClips, SampleKey
from tubemask.data.model_input import stack_clips
from tubemask.data.sampling import DenseSampler, FrameSampler

__all__ = ["FinetuneDataset", "MultiViewDataset", "PretrainDataset", "collate_repeated"]

ClipPipeline = Callable[..., Any]
"""`pipeline(frames uint8 [t c h w], generator=g) -> [c t h w]` (a list of views for testing): float normalized, or
uint8 for a pipeline with `normalize=False` (normalize the batch with `normalize_batch` after the DataLoader)."""


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
    """Shared plumbing (composition: holds a [`RecordClips`][tubemask.data.loading.RecordClips] as `clips`)."""

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
