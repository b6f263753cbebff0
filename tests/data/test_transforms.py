"""Transforms: shapes, identical parameters across frames, determinism, ImageNet normalization."""

import pytest
import torch

from tubemask.data import (
    EvalPipeline,
    FinetunePipeline,
    PretrainPipeline,
    center_crop,
    horizontal_flip,
    multi_scale_crop,
    normalize,
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
