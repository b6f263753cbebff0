"""Frame samplers: property tests of the invariants and the documented short-video rules."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.data import DenseSampler, SegmentSampler
from tubemask.data.sampling import (
    clip_span,
    dense_indices,
    multiview_indices,
    multiview_segment_indices,
    segment_indices,
)

frames = st.integers(1, 400)
lengths = st.integers(1, 32)
strides = st.integers(1, 8)
seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=150, deadline=None)
@given(num_frames=frames, clip_len=lengths, stride=strides, seed=seeds, short=st.sampled_from(["clamp", "shrink"]))
def test_dense_in_range_sorted_and_strided(num_frames, clip_len, stride, seed, short):
    g = torch.Generator().manual_seed(seed)
    idx = dense_indices(num_frames, clip_len=clip_len, stride=stride, generator=g, short=short)
    assert len(idx) == clip_len
    assert all(0 <= i < num_frames for i in idx)
    assert idx == sorted(idx)
    if clip_span(clip_len, stride) <= num_frames:
        assert all(b - a == stride for a, b in zip(idx, idx[1:], strict=False))


@settings(max_examples=100, deadline=None)
@given(num_frames=frames, clip_len=lengths, stride=strides)
def test_dense_loop_rule_wraps(num_frames, clip_len, stride):
    idx = dense_indices(num_frames, clip_len=clip_len, stride=stride, short="loop")
    assert len(idx) == clip_len and all(0 <= i < num_frames for i in idx)
    if clip_span(clip_len, stride) > num_frames:
        assert idx == [(k * stride) % num_frames for k in range(clip_len)]


def test_dense_start_is_random_and_reproducible():
    starts = {dense_indices(200, generator=torch.Generator().manual_seed(s))[0] for s in range(30)}
    assert len(starts) > 10 and max(starts) <= 200 - 61
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert dense_indices(200, generator=g1) == dense_indices(200, generator=g2)


def test_short_video_rules():
    assert dense_indices(10, clip_len=4, stride=4) == [0, 4, 8, 9]
    assert dense_indices(10, clip_len=4, stride=4, short="loop") == [0, 4, 8, 2]
    assert dense_indices(10, clip_len=4, stride=4, short="shrink") == [0, 3, 6, 9]
    with pytest.raises((ValueError, TypeError), match="clamp"):  # the type checker names the allowed values
        dense_indices(10, clip_len=4, stride=4, short="pad")
    with pytest.raises(ValueError, match="num_frames=0"):
        dense_indices(0)


@settings(max_examples=150, deadline=None)
@given(num_frames=frames, segments=lengths, seed=st.one_of(st.none(), seeds))
def test_segments_one_per_segment(num_frames, segments, seed):
    g = None if seed is None else torch.Generator().manual_seed(seed)
    idx = segment_indices(num_frames, num_segments=segments, generator=g)
    assert len(idx) == segments and idx == sorted(idx)
    assert all(0 <= i < num_frames for i in idx)
    if num_frames >= segments:  # each index lies in its own segment
        for k, i in enumerate(idx):
            assert int(k * num_frames / segments) <= i <= int((k + 1) * num_frames / segments)


@settings(max_examples=100, deadline=None)
@given(num_frames=frames, clip_len=lengths, stride=strides, clips=st.integers(1, 7))
def test_multiview_evenly_spaced(num_frames, clip_len, stride, clips):
    views = multiview_indices(num_frames, clip_len=clip_len, stride=stride, num_clips=clips)
    assert len(views) == clips
    starts = [v[0] for v in views]
    assert starts == sorted(starts)
    for v in views:
        assert len(v) == clip_len and v == sorted(v) and all(0 <= i < num_frames for i in v)
    if clips > 1 and clip_span(clip_len, stride) <= num_frames:
        assert starts[0] == 0 and views[-1][-1] == num_frames - 1


def test_multiview_segments_and_sampler_objects():
    views = multiview_segment_indices(32, num_segments=4, num_clips=2)
    assert views == [[2, 10, 18, 26], [6, 14, 22, 30]]
    dense, seg = DenseSampler(clip_len=8, stride=2), SegmentSampler(num_segments=8)
    assert dense.span == 15 and seg.span == 8
    assert len(dense(100, torch.Generator().manual_seed(0))) == 8 and len(dense.views(100, 3)) == 3
    assert seg(16) == list(range(0, 16, 2)) or seg(16) == [1, 3, 5, 7, 9, 11, 13, 15]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: dense_indices(10, clip_len=0), r"clip_len=0 must be >= 1"),
        (lambda: dense_indices(10, stride=0), r"stride=0 must be >= 1"),
        (lambda: segment_indices(0), r"num_frames=0"),
        (lambda: segment_indices(10, num_segments=4, position=1.0), r"position=1.0 must be in \[0, 1\)"),
        (lambda: multiview_indices(100, num_clips=0), r"num_clips=0 must be >= 1"),
        (lambda: multiview_segment_indices(100, num_clips=0), r"num_clips=0 must be >= 1"),
        # the sampler objects check their settings when built (a config error), not at the first sample in a worker
        (lambda: DenseSampler(clip_len=0), r"DenseSampler.clip_len=0 must be an int >= 1"),
        (lambda: DenseSampler(stride=2.5), r"DenseSampler.stride=2.5 must be an int >= 1"),
        (lambda: DenseSampler(short="pad"), r"DenseSampler.short='pad'; allowed: 'clamp', 'loop', 'shrink'"),
        (lambda: SegmentSampler(num_segments=0), r"SegmentSampler.num_segments=0 must be an int >= 1"),
    ],
)
def test_bad_sampling_arguments_name_the_value_and_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()
