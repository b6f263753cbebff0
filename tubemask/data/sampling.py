"""Frame samplers: which frame indices of a video make a clip.

Pure functions of the video's frame count (and an explicit `torch.Generator` where they are random). Every sampler
returns a sorted (non-decreasing) list of `clip_len` indices inside `[0, num_frames - 1]`.

Short videos (fewer frames than a clip spans) follow one documented rule, chosen with `short=`:

- `"clamp"` (default, as VideoMAE V1): start at 0, keep the stride, and repeat the last frame for the indices
  past the end. The clip then ends on a still tail.
- `"loop"`: start at 0 and wrap around (`index % num_frames`); the clip stays moving but jumps back in time. Indices
  are then *not* sorted.
- `"shrink"`: lower the stride until the clip fits (down to 1), then clamp; sorted, no jump back.

| sampler | used for |
|---|---|
| [`dense_indices`][tubemask.data.sampling.dense_indices] | K400 / UCF101 / HMDB51 training: 16 frames, stride 4, random start |
| [`segment_indices`][tubemask.data.sampling.segment_indices] | SSv2 (TSN): one frame per equal segment |
| [`multiview_indices`][tubemask.data.sampling.multiview_indices] | testing: N evenly spaced dense clips |
| [`multiview_segment_indices`][tubemask.data.sampling.multiview_segment_indices] | SSv2 testing: N offset TSN views |
"""

from dataclasses import dataclass
from typing import Literal

import torch

from tubemask.shapes import typechecked

__all__ = [
    "DenseSampler",
    "FrameSampler",
    "SegmentSampler",
    "ShortVideoRule",
    "check_int_fields",
    "clip_span",
    "dense_indices",
    "multiview_indices",
    "multiview_segment_indices",
    "segment_indices",
]

ShortVideoRule = Literal["clamp", "loop", "shrink"]
"""How a video shorter than a clip's span is sampled; see the module docstring."""


def _check(num_frames: int, clip_len: int, stride: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: a video needs at least 1 decodable frame")
    if clip_len < 1:
        raise ValueError(f"clip_len={clip_len} must be >= 1")
    if stride < 1:
        raise ValueError(f"stride={stride} must be >= 1")


def clip_span(clip_len: int, stride: int) -> int:
    """Frames covered by a dense clip: `(clip_len - 1) * stride + 1` (61 for 16 x 4)."""
    return (clip_len - 1) * stride + 1


def _dense_from(start: int, num_frames: int, clip_len: int, stride: int, short: ShortVideoRule) -> list[int]:
    if clip_span(clip_len, stride) > num_frames:
        if short == "shrink":
            stride = max(1, min(stride, (num_frames - 1) // max(clip_len - 1, 1)))
        elif short == "loop":
            return [(i * stride) % num_frames for i in range(clip_len)]
        elif short != "clamp":
            raise ValueError(f"short={short!r}; allowed: 'clamp', 'loop', 'shrink'")
        start = 0
    return [min(start + i * stride, num_frames - 1) for i in range(clip_len)]


@typechecked
def dense_indices(
    num_frames: int,
    *,
    clip_len: int = 16,
    stride: int = 4,
    generator: torch.Generator | None = None,
    short: ShortVideoRule = "clamp",
) -> list[int]:
    """A clip of `clip_len` frames `stride` apart from a uniformly random start.

    Args:
        num_frames: Decodable frames in the video.
        clip_len: Frames in the clip.
        stride: Step between frames (the "sampling rate"; 4 for VideoMAE K400/UCF101 pretraining).
        generator: Source of the random start; None means start at 0 (deterministic).
        short: Rule for videos shorter than [`clip_span`][tubemask.data.sampling.clip_span]; see the module docs.

    Returns:
        `clip_len` indices in `[0, num_frames - 1]`.
    """
    _check(num_frames, clip_len, stride)
    room = num_frames - clip_span(clip_len, stride)
    start = 0
    if room > 0 and generator is not None:
        start = int(torch.randint(room + 1, (1,), generator=generator))
    return _dense_from(start, num_frames, clip_len, stride, short)


@typechecked
def segment_indices(
    num_frames: int,
    *,
    num_segments: int = 16,
    generator: torch.Generator | None = None,
    position: float = 0.5,
) -> list[int]:
    """TSN sampling: split the video into `num_segments` equal segments and take one frame from each.

    With a generator (training) the frame within each segment is uniformly random; without one it sits at
    `position` (a fraction of the segment, 0.5 = middle). Videos with fewer frames than segments repeat frames.

    Args:
        num_frames: Decodable frames in the video.
        num_segments: Frames in the clip (16 for VideoMAE SSv2).
        generator: Source of the offsets within segments; None for fixed offsets.
        position: Offset within a segment, in `[0, 1)`, when `generator` is None.

    Returns:
        `num_segments` sorted indices in `[0, num_frames - 1]`.
    """
    _check(num_frames, num_segments)
    if not 0.0 <= position < 1.0:
        raise ValueError(f"position={position} must be in [0, 1)")
    length = num_frames / num_segments
    if generator is not None:
        offsets = torch.rand(num_segments, generator=generator, dtype=torch.float64).tolist()
    else:
        offsets = [position] * num_segments
    return [min(int((k + offsets[k]) * length), num_frames - 1) for k in range(num_segments)]


@typechecked
def multiview_indices(
    num_frames: int,
    *,
    clip_len: int = 16,
    stride: int = 4,
    num_clips: int = 5,
    short: ShortVideoRule = "clamp",
) -> list[list[int]]:
    """`num_clips` dense clips with evenly spaced starts from the first to the last possible (VideoMAE testing).

    One clip starts in the middle. Deterministic.

    Args:
        num_frames: Decodable frames in the video.
        clip_len: Frames per clip.
        stride: Step between frames.
        num_clips: Temporal views (5 for UCF101, 2 for SSv2, 5 or 7 for K400 in the papers).
        short: Rule for videos shorter than a clip.

    Returns:
        `num_clips` lists of `clip_len` indices.
    """
    _check(num_frames, clip_len, stride)
    if num_clips < 1:
        raise ValueError(f"num_clips={num_clips} must be >= 1")
    room = max(num_frames - clip_span(clip_len, stride), 0)
    if num_clips == 1:
        starts = [room // 2]
    else:
        starts = [int(k * room / (num_clips - 1)) for k in range(num_clips)]
    return [_dense_from(s, num_frames, clip_len, stride, short) for s in starts]


@typechecked
def multiview_segment_indices(num_frames: int, *, num_segments: int = 16, num_clips: int = 2) -> list[list[int]]:
    """`num_clips` TSN views whose frames sit at offsets `(k + 0.5) / num_clips` within each segment (SSv2 testing).

    Args:
        num_frames: Decodable frames in the video.
        num_segments: Frames per view.
        num_clips: Temporal views.

    Returns:
        `num_clips` lists of `num_segments` sorted indices.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips={num_clips} must be >= 1")
    return [
        segment_indices(num_frames, num_segments=num_segments, position=(k + 0.5) / num_clips) for k in range(num_clips)
    ]


def check_int_fields(settings: object, *names: str, minimum: int = 1) -> None:
    """Raise a ValueError naming the first field of `names` that is not an int >= `minimum` (a config error caught
    when the settings object is built, not at the first sample in a DataLoader worker). Shared by the samplers and
    [`DecodeOptions`][tubemask.data.loading.DecodeOptions]."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{type(settings).__name__}.{name}={value!r} must be an int >= {minimum}")


@dataclass(frozen=True)
class DenseSampler:
    """[`dense_indices`][tubemask.data.sampling.dense_indices] with its settings bound, for the datasets.

    Attributes:
        clip_len: Frames per clip.
        stride: Step between frames.
        short: Rule for videos shorter than `span`.
    """

    clip_len: int = 16
    stride: int = 4
    short: ShortVideoRule = "clamp"

    def __post_init__(self) -> None:
        check_int_fields(self, "clip_len", "stride")
        if self.short not in ("clamp", "loop", "shrink"):
            raise ValueError(f"DenseSampler.short={self.short!r}; allowed: 'clamp', 'loop', 'shrink'")

    @property
    def span(self) -> int:
        """Frames one clip covers; shorter videos are sampled by the `short` rule."""
        return clip_span(self.clip_len, self.stride)

    def __call__(self, num_frames: int, generator: torch.Generator | None = None) -> list[int]:
        """One training clip (random start when a generator is given)."""
        return dense_indices(
            num_frames, clip_len=self.clip_len, stride=self.stride, generator=generator, short=self.short
        )

    def views(self, num_frames: int, num_clips: int) -> list[list[int]]:
        """`num_clips` evenly spaced test clips."""
        return multiview_indices(
            num_frames, clip_len=self.clip_len, stride=self.stride, num_clips=num_clips, short=self.short
        )


@dataclass(frozen=True)
class SegmentSampler:
    """[`segment_indices`][tubemask.data.sampling.segment_indices] (TSN, SSv2) with its settings bound.

    Attributes:
        num_segments: Frames per clip.
    """

    num_segments: int = 16

    def __post_init__(self) -> None:
        check_int_fields(self, "num_segments")

    @property
    def span(self) -> int:
        """Frames needed to avoid repeats: one per segment."""
        return self.num_segments

    def __call__(self, num_frames: int, generator: torch.Generator | None = None) -> list[int]:
        """One clip (random offsets within segments when a generator is given, else the middles)."""
        return segment_indices(num_frames, num_segments=self.num_segments, generator=generator)

    def views(self, num_frames: int, num_clips: int) -> list[list[int]]:
        """`num_clips` test views at staggered offsets."""
        return multiview_segment_indices(num_frames, num_segments=self.num_segments, num_clips=num_clips)


FrameSampler = DenseSampler | SegmentSampler
"""The samplers the datasets accept (anything with `span`, `__call__(num_frames, generator)` and `views` works)."""
