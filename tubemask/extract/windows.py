"""Windows over a whole video: where each clip starts and which frames it reads (pure functions of the frame count).

A window is a dense clip of `window_frames` frames `sampling_rate` apart, covering
[`clip_span`][tubemask.data.sampling.clip_span]`(window_frames, sampling_rate)` frames. Windows start at frame 0 and
every `window_stride` frames after it while the whole window fits, as VideoMAE V2's `extract_tad_feature.py` does for
temporal action detection (THUMOS14: 16 frames, stride 4, starts `range(0, num_frames - 15, 4)`). A video of `f >= span`
frames therefore gives `(f - span) // window_stride + 1` windows, and feature `i` describes frames
`i * window_stride` to `i * window_stride + span - 1`; the frames after the last whole window are not covered.

A video shorter than one window gives one window from frame 0 whose indices past the end repeat the last frame (the
`"clamp"` rule of [`dense_indices`][tubemask.data.sampling.dense_indices]), so every readable video gets a feature;
the extraction names such videos in its summary.
"""

from tubemask.data.sampling import clip_span, dense_indices
from tubemask.shapes import typechecked

__all__ = ["num_windows", "window_indices", "window_starts"]


def _check(num_frames: int, window_frames: int, sampling_rate: int, window_stride: int) -> None:
    for name, value, minimum in (
        ("num_frames", num_frames, 1),
        ("window_frames", window_frames, 1),
        ("sampling_rate", sampling_rate, 1),
        ("window_stride", window_stride, 1),
    ):
        if value < minimum:
            raise ValueError(f"{name}={value} must be >= {minimum}")


@typechecked
def num_windows(num_frames: int, *, window_frames: int, sampling_rate: int = 1, window_stride: int) -> int:
    """How many windows a video of `num_frames` frames gives: `(num_frames - span) // window_stride + 1`, and 1 when
    the video is shorter than one window's span.

    Args:
        num_frames: Decodable frames of the video (>= 1).
        window_frames: Frames per window (the model's clip length, e.g. 16).
        sampling_rate: Step between the frames of a window (1: consecutive frames).
        window_stride: Frames between the starts of two windows.

    Raises:
        ValueError: An argument is below 1.
    """
    _check(num_frames, window_frames, sampling_rate, window_stride)
    room = num_frames - clip_span(window_frames, sampling_rate)
    return room // window_stride + 1 if room >= 0 else 1


@typechecked
def window_starts(num_frames: int, *, window_frames: int, sampling_rate: int = 1, window_stride: int) -> list[int]:
    """The first frame of every window: `0, window_stride, 2 * window_stride, ...` while the window fits (`[0]` for a
    video shorter than one window). Arguments as for [`num_windows`][tubemask.extract.windows.num_windows]."""
    count = num_windows(
        num_frames, window_frames=window_frames, sampling_rate=sampling_rate, window_stride=window_stride
    )
    return [k * window_stride for k in range(count)]


@typechecked
def window_indices(
    num_frames: int, *, window_frames: int, sampling_rate: int = 1, window_stride: int
) -> list[list[int]]:
    """The frame indices of every window, `window_frames` each, in `[0, num_frames - 1]`.

    Arguments as for [`num_windows`][tubemask.extract.windows.num_windows].

    Returns:
        One list per window, in time order: `[start, start + sampling_rate, ...]`; for a video shorter than one window,
        the single clamped window of [`dense_indices`][tubemask.data.sampling.dense_indices].
    """
    starts = window_starts(
        num_frames, window_frames=window_frames, sampling_rate=sampling_rate, window_stride=window_stride
    )
    if clip_span(window_frames, sampling_rate) > num_frames:
        return [dense_indices(num_frames, clip_len=window_frames, stride=sampling_rate, short="clamp")]
    return [[start + j * sampling_rate for j in range(window_frames)] for start in starts]
