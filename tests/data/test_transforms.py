"""Transforms: shapes, identical parameters across frames, determinism, ImageNet normalization."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms.v2 import functional as F

from tubemask.data import EvalPipeline, FinetunePipeline, PretrainPipeline, normalize_batch
from tubemask.data.model_input import channels_first, normalize, stack_clips
from tubemask.data.transforms import (
    center_crop,
    horizontal_flip,
    multi_scale_crop,
    random_erasing,
    random_resized_crop,
    resize_short_side,
    three_crop,
)


def same_frames(t: int = 4, h: int = 40, w: int = 56) -> torch.Tensor:
    """A clip whose frames are all the same image: any per-clip transform must keep them identical."""
    image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return image.expand(t, -1, -1, -1).contiguous()


def assert_frames_identical(x: torch.Tensor, time_dim: int = 0) -> None:
    first = x.select(time_dim, 0).unsqueeze(time_dim)
    assert torch.equal(x, first.expand_as(x))


@pytest.mark.parametrize("seed", range(5))
def test_random_spatial_transforms_are_per_clip(seed):
    clip = same_frames()
    g = torch.Generator().manual_seed(seed)
    for out in (
        multi_scale_crop(clip, size=32, generator=g),
        random_resized_crop(clip, size=(24, 32), generator=g),
        horizontal_flip(clip, p=0.5, generator=g),
    ):
        assert out.dtype == torch.uint8 and out.shape[:2] == (4, 3)
        assert_frames_identical(out)
    erased = random_erasing(normalize(clip), p=1.0, generator=g)
    assert_frames_identical(erased, time_dim=1)
    assert not torch.equal(erased, normalize(clip))


def test_multi_scale_crop_matches_v1_geometry():
    clip = torch.arange(100 * 100, dtype=torch.float32).view(1, 1, 100, 100)
    seen = set()
    for seed in range(200):
        crop = multi_scale_crop(
            clip, size=100, scales=(1.0, 0.5), max_distort=0, generator=torch.Generator().manual_seed(seed)
        )
        seen.add(float(crop[0, 0, 0, 0]))
    # scale 1: offset (0,0) only; scale 0.5 (50 px): 13 fixed offsets on a 12-pixel step grid
    step = 50 // 4
    expected = {0.0} | {
        float(y * step * 100 + x * step)
        for x, y in [
            (0, 0),
            (4, 0),
            (0, 4),
            (4, 4),
            (2, 2),
            (0, 2),
            (4, 2),
            (2, 4),
            (2, 0),
            (1, 1),
            (3, 1),
            (1, 3),
            (3, 3),
        ]
    }
    assert seen == expected


def test_deterministic_given_generator():
    clip = same_frames()
    pipe = FinetunePipeline(input_size=24)
    a = pipe(clip, generator=torch.Generator().manual_seed(3))
    b = pipe(clip, generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, 4, 24, 24) and torch.equal(a, b)
    assert PretrainPipeline(input_size=32)(clip).shape == (3, 4, 32, 32)


def test_flip_off_by_default_for_pretraining():
    clip = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    pipe = PretrainPipeline(input_size=4, scales=(1.0,))
    assert all(torch.equal(pipe(clip, generator=torch.Generator().manual_seed(s)), normalize(clip)) for s in range(8))


def test_resize_crops_and_three_crop():
    clip = same_frames(h=40, w=60)
    resized = resize_short_side(clip, 20)
    assert resized.shape[-2:] == (20, 30)
    assert center_crop(resized, 20).shape[-2:] == (20, 20)
    left, mid, right = three_crop(resized, 20)
    assert torch.equal(left, resized[..., :20]) and torch.equal(right, resized[..., 10:])
    assert torch.equal(mid, resized[..., 5:25])
    with pytest.raises(ValueError, match="resize"):
        center_crop(resized, 32)
    views = EvalPipeline(crop_size=20)(clip)
    assert len(views) == 3 and views[0].shape == (3, 4, 20, 20)


def test_normalize_imagenet():
    mean = torch.tensor([0.485, 0.456, 0.406])
    clip = (mean * 255).round().to(torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalize(clip)
    assert out.shape == (3, 2, 2, 2) and out.abs().max() < 0.02
    assert torch.allclose(normalize(clip.float() / 255), out, atol=1e-6)


def test_uint8_pipelines_then_normalize_batch_match_float_pipelines():
    clip = torch.randint(0, 256, (4, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    clip = clip.contiguous(memory_format=torch.channels_last)  # the layout torchcodec decodes to
    for seed in range(4):
        for float_pipe, uint8_pipe in [
            (PretrainPipeline(input_size=32, flip_p=0.5), PretrainPipeline(input_size=32, flip_p=0.5, normalize=False)),
            (
                FinetunePipeline(input_size=24, erase_p=0.0),
                FinetunePipeline(input_size=24, erase_p=0.0, normalize=False),
            ),
        ]:
            ref = float_pipe(clip, generator=torch.Generator().manual_seed(seed))
            raw = uint8_pipe(clip, generator=torch.Generator().manual_seed(seed))
            assert raw.dtype == torch.uint8 and raw.shape == ref.shape
            assert torch.allclose(normalize_batch(raw), ref, atol=1e-6)
            batch = torch.stack([raw, raw])
            assert torch.allclose(normalize_batch(batch)[1], ref, atol=1e-6)
    views = EvalPipeline(crop_size=20, normalize=False)(clip)
    assert all(v.dtype == torch.uint8 for v in views)
    assert torch.allclose(normalize_batch(views[1]), EvalPipeline(crop_size=20)(clip)[1], atol=1e-6)
    assert normalize_batch(clip.permute(1, 0, 2, 3), dtype=torch.bfloat16).dtype == torch.bfloat16
    assert torch.equal(channels_first(clip), clip.permute(1, 0, 2, 3))
    with pytest.raises(ValueError, match="erase_p"):
        FinetunePipeline(normalize=False)
    with pytest.raises(ValueError, match="channels"):
        normalize_batch(torch.zeros(2, 4, 1, 2, 2, dtype=torch.uint8))


def test_stack_clips_copies_in_memory_order_and_normalize_batch_makes_it_contiguous():
    frames = torch.randint(0, 256, (4, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    frames = frames.contiguous(memory_format=torch.channels_last)  # the layout torchcodec decodes to
    pipe = PretrainPipeline(input_size=32, normalize=False)
    clips = [pipe(frames, generator=torch.Generator().manual_seed(seed)) for seed in range(3)]
    stacked = stack_clips(clips)
    assert torch.equal(stacked, torch.stack(clips)) and stacked.shape == (3, 3, 4, 32, 32)
    assert stacked.permute(0, 2, 3, 4, 1).is_contiguous()  # [n t h w c] memory: a copy, no transposition
    nested = stack_clips([stacked, stacked])  # repeats [r c t h w] of two samples
    assert torch.equal(nested, torch.stack([stacked, stacked])) and nested.permute(0, 1, 3, 4, 5, 2).is_contiguous()
    batch = normalize_batch(stacked)
    assert batch.is_contiguous() and torch.equal(batch, normalize_batch(stacked.contiguous()))
    assert torch.equal(batch[1], PretrainPipeline(input_size=32)(frames, generator=torch.Generator().manual_seed(1)))
    # Clips in another layout (contiguous float, slices) are stacked as torch.stack does.
    floats = [normalize(frames), normalize(frames)]
    assert stack_clips(floats).is_contiguous() and torch.equal(stack_clips(floats), torch.stack(floats))
    views = [channels_first(frames[..., :20, :20])] * 2  # a crop that needed no resize: still channels-last
    assert torch.equal(stack_clips(views), torch.stack(views)) and stack_clips(views).stride(1) == 1


def test_normalize_writes_into_out():
    clip = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out = torch.empty(2, 3, 3, 8, 8)
    assert normalize(clip, out=out[1]).data_ptr() == out[1].data_ptr()
    assert torch.equal(out[1], normalize(clip))
    with pytest.raises(ValueError, match="expected"):
        normalize(clip, out=torch.empty(3, 3, 8, 8, dtype=torch.float64))


def test_resize_antialiases_when_shrinking_like_pil():
    """A 1-pixel checkerboard shrunk 4x averages to grey (PIL bilinear, VideoMAE V1); without antialiasing it aliases."""
    board = ((torch.arange(64).view(8, 8) + torch.arange(64).view(8, 8).T) % 2 * 255).to(torch.uint8)
    clip = board.expand(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    small = resize_short_side(clip, 2)
    assert (small.float() - 127.5).abs().max() < 16


@settings(max_examples=40, deadline=None)
@given(
    num_frames=st.integers(1, 3),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    size=st.integers(4, 32),
    repeats=st.integers(1, 4),
    flip_p=st.sampled_from([0.0, 0.5, 1.0]),
    normalize=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pretrain_pipeline_repeat_equals_stacked_calls(
    num_frames, height, width, size, repeats, flip_p, normalize, channels_last, seed
):
    """`repeat` writes each crop straight into its batch slot; values, random draws and memory layout must be those
    of stacking separate calls (uint8: `[r t h w c]` memory as stack_clips keeps it; float: contiguous)."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (num_frames, 3, height, width), dtype=torch.uint8, generator=gen)
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)  # torchcodec's layout
    pipe = PretrainPipeline(input_size=size, flip_p=flip_p, normalize=normalize)
    g_ref, g_rep = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    expected = stack_clips([pipe(frames, generator=g_ref) for _ in range(repeats)])
    batch = pipe.repeat(frames, repeats, generator=g_rep)
    assert batch.shape == expected.shape and batch.dtype == expected.dtype
    assert torch.equal(batch, expected)
    if num_frames > 1:  # (one frame: torch's resize picks its output layout by its own rules; values still equal)
        assert batch.stride() == expected.stride()
    assert torch.equal(torch.rand(4, generator=g_rep), torch.rand(4, generator=g_ref))  # same draws consumed


@settings(max_examples=30, deadline=None)
@given(
    num_frames=st.integers(1, 3),
    height=st.integers(8, 32),
    width=st.integers(8, 32),
    size=st.integers(4, 24),
    repeats=st.integers(1, 3),
    randaugment=st.sampled_from([None, "rand-m7-n4-mstd0.5-inc1", "rand-m9-n2-mstd0-inc1"]),
    erase_p=st.sampled_from([0.0, 0.5, 1.0]),
    normalize=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_finetune_pipeline_repeat_equals_stacked_calls(
    num_frames, height, width, size, repeats, randaugment, erase_p, normalize, channels_last, seed
):
    """`repeat` normalizes and erases each clip in its batch slot; values and random draws must be those of stacking
    separate calls (the erasing now writes into a clip the pipeline owns instead of a copy: same values)."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (num_frames, 3, height, width), dtype=torch.uint8, generator=gen)
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)
    before = frames.clone()
    pipe = FinetunePipeline(
        input_size=size, randaugment=randaugment, erase_p=erase_p if normalize else 0.0, normalize=normalize
    )
    g_ref, g_rep = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    expected = stack_clips([pipe(frames, generator=g_ref) for _ in range(repeats)])
    batch = pipe.repeat(frames, repeats, generator=g_rep)
    assert batch.shape == expected.shape == (repeats, 3, num_frames, size, size) and batch.dtype == expected.dtype
    assert torch.equal(batch, expected)
    assert torch.equal(torch.rand(4, generator=g_rep), torch.rand(4, generator=g_ref))  # same draws consumed
    assert torch.equal(frames, before)  # the decoded frames are never written to


def test_random_erasing_inplace_writes_into_the_clip_and_erases_the_same_box():
    clip = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    copy = random_erasing(clip, p=1.0, generator=torch.Generator().manual_seed(1))
    assert copy.data_ptr() != clip.data_ptr() and not torch.equal(copy, clip)
    same = random_erasing(clip, p=1.0, generator=torch.Generator().manual_seed(1), inplace=True)
    assert same.data_ptr() == clip.data_ptr() and torch.equal(same, copy)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [True, False])
def test_multi_scale_crop_into_out_equals_the_returned_frames(dtype, channels_last):
    frames = torch.randint(0, 256, (3, 3, 30, 44), generator=torch.Generator().manual_seed(0)).to(dtype)
    if channels_last:
        frames = frames.contiguous(memory_format=torch.channels_last)
    for seed in range(12):  # every scale pair and offset kind, enlarging and shrinking
        expected = multi_scale_crop(frames, size=24, generator=torch.Generator().manual_seed(seed))
        out = torch.full((3, 24, 24, 3), 7, dtype=dtype).permute(0, 3, 1, 2)  # a channels-last slot
        got = multi_scale_crop(frames, size=24, generator=torch.Generator().manual_seed(seed), out=out)
        assert got.data_ptr() == out.data_ptr() and torch.equal(got, expected), seed


def test_pretrain_pipeline_repeat_and_multi_scale_crop_out_reject_bad_arguments():
    frames = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="repeats=0"):
        PretrainPipeline(input_size=8).repeat(frames, 0)
    with pytest.raises(ValueError, match="repeats=0"):
        FinetunePipeline(input_size=8).repeat(frames, 0)
    with pytest.raises(ValueError, match=r"expected torch.uint8 \(2, 3, 8, 8\)"):
        multi_scale_crop(frames, size=8, out=torch.zeros(2, 3, 8, 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out is torch.float32"):
        multi_scale_crop(frames, size=8, out=torch.zeros(2, 3, 8, 8))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(8, 96), w=st.integers(8, 96), size=st.integers(4, 24))
def test_short_side_resize_and_three_crop_in_either_orientation(h, w, size):
    clip = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))
    resized = resize_short_side(clip, size)
    rh, rw = resized.shape[-2:]
    assert min(rh, rw) == size and (h > w or rh <= rw) and (h < w or rh >= rw)  # orientation kept (or square)
    assert abs(max(rh, rw) - max(h, w) * size / min(h, w)) <= 0.5 + 1e-9  # aspect kept, rounded
    views = three_crop(resized, size)
    long = max(rh, rw)
    starts = (0, (long - size) // 2, long - size)  # start, middle, end of the long side
    if rw >= rh:
        expected = [resized[..., s : s + size] for s in starts]
    else:
        expected = [resized[..., s : s + size, :] for s in starts]
    assert all(v.shape[-2:] == (size, size) and torch.equal(v, e) for v, e in zip(views, expected, strict=True))


def test_random_resized_crop_falls_back_to_the_largest_centred_crop_in_the_ratio_range():
    # a full-area crop of a square frame with width / height in [2, 3] cannot exist: after its draws the crop
    # falls back to the widest centred box within the ratio range (the full width, half the height)
    clip = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_resized_crop(
        clip, size=16, generator=torch.Generator().manual_seed(1), scale=(1.0, 1.0), ratio=(2.0, 3.0)
    )
    assert torch.equal(out, F.resized_crop(clip, 10, 0, 20, 40, [16, 16], antialias=True))
    tall = random_resized_crop(
        clip, size=16, generator=torch.Generator().manual_seed(1), scale=(1.0, 1.0), ratio=(0.25, 0.5)
    )
    assert torch.equal(tall, F.resized_crop(clip, 0, 10, 40, 20, [16, 16], antialias=True))
    with pytest.raises(ValueError, match="resize the short side first"):
        three_crop(clip, 41)


def test_normalize_batch_builds_no_host_tensor_after_the_first_call(monkeypatch):
    """`normalize_batch` makes its per-channel scale and shift once per device (on CUDA a `torch.tensor(...)` per batch
    is a blocking host-to-device copy) and reuses them: same values, first call or not, uint8 or float input."""
    batch = torch.randint(0, 256, (2, 3, 2, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    with torch.inference_mode():  # an evaluation pass may fill the cache; training batches still work after it
        normalize_batch(batch, list(mean), list(std))
    first = [normalize_batch(batch, mean, std), normalize_batch(batch.float() / 255, mean, std)]
    m, s = torch.tensor(mean).view(3, 1, 1, 1), torch.tensor(std).view(3, 1, 1, 1)
    assert torch.allclose(first[0], (batch.float() / 255 - m) / s, atol=1e-6)

    def no_host_tensor(*args, **kwargs):
        raise AssertionError("normalize_batch built a tensor from Python values")

    monkeypatch.setattr(torch, "tensor", no_host_tensor)
    again = [normalize_batch(batch, list(mean), list(std)), normalize_batch(batch.float() / 255, mean, std)]
    assert all(torch.equal(a, b) and not a.is_inference() for a, b in zip(again, first, strict=True))
