"""RandAugment spec parsing and per-clip consistency; mixup/cutmix with label smoothing."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.data import Mixup, RandAugment, parse_randaugment, smooth_one_hot
from tubemask.data.randaugment import RANDAUGMENT_OPS, TORCHVISION_OPS

# timm's definitions written plainly with torchvision, one call on the whole clip each
REFERENCE_OPS = TORCHVISION_OPS


@settings(max_examples=150, deadline=None)
@given(
    op=st.sampled_from(sorted(REFERENCE_OPS)),
    frames=st.integers(1, 3),
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    magnitude=st.floats(0.0, 10.0),
    sign=st.sampled_from([1.0, -1.0]),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shortcut_ops_equal_torchvision(op, frames, height, width, magnitude, sign, channels_last, seed):
    """Translations by a shifted copy, rotations and shears by a gather, solarize, brightness, autocontrast and
    equalize by lookup tables (the other ops are torchvision's own): the same values as torchvision's ops, and the
    frames' memory layout kept."""
    x = torch.randint(
        0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = RANDAUGMENT_OPS[op](x, magnitude, sign)
    assert got.dtype == torch.uint8 and torch.equal(got, REFERENCE_OPS[op](x, magnitude, sign))
    if channels_last and frames > 1 and height * width > 1:
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_parse_videomae_spec():
    ra = parse_randaugment("rand-m7-n4-mstd0.5-inc1")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.prob) == (7.0, 4, 0.5, 0.5)
    assert len(ra.ops) == 15
    for bad in ("m7-n4", "rand-m7-x3", "rand-m7-inc0"):
        with pytest.raises(ValueError, match="RandAugment spec"):
            parse_randaugment(bad)


@pytest.mark.parametrize("op", sorted(RANDAUGMENT_OPS))
def test_every_op_is_identical_across_frames(op):
    image = torch.randint(0, 256, (1, 3, 20, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    clip = image.expand(3, -1, -1, -1).contiguous()
    ra = RandAugment(magnitude=9, num_ops=1, magnitude_std=0.0, prob=1.0, ops=(op,))
    out = ra(clip, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == clip.shape
    assert torch.equal(out, out[:1].expand_as(out))


def test_randaugment_deterministic():
    clip = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    ra = parse_randaugment("rand-m7-n4-mstd0.5-inc1")
    outs = [ra(clip, generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(*outs)


def test_smooth_one_hot():
    t = smooth_one_hot(torch.tensor([0, 2]), 4, 0.1)
    assert (
        torch.allclose(t.sum(1), torch.ones(2)) and t[0, 0] == pytest.approx(0.925) and t[0, 1] == pytest.approx(0.025)
    )
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        smooth_one_hot(torch.tensor([4]), 4)


@pytest.mark.parametrize("seed", range(6))
def test_mixup_cutmix_targets_match_pixels(seed):
    b = 4
    clips = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1, 1).expand(b, 3, 2, 8, 8).contiguous()
    labels = torch.tensor([0, 1, 2, 3])
    mixed, targets = Mixup(num_classes=5, label_smoothing=0.0)(
        clips, labels, generator=torch.Generator().manual_seed(seed)
    )
    assert mixed.shape == clips.shape and torch.allclose(targets.sum(1), torch.ones(b))
    # Pixel mass tells how much of each clip is its own: matches the target weight of its own label.
    own = (mixed[0] - clips[3, 0, 0, 0, 0]) / (clips[0, 0, 0, 0, 0] - clips[3, 0, 0, 0, 0])
    assert float(own.mean()) == pytest.approx(float(targets[0, 0]), abs=1e-5)
    assert torch.equal(mixed[:, :, 0], mixed[:, :, 1])  # the cutmix box is the same in every frame


def test_mixup_off_returns_smoothed_targets():
    clips, labels = torch.randn(2, 3, 2, 4, 4), torch.tensor([1, 0])
    out, targets = Mixup(num_classes=2, prob=0.0, label_smoothing=0.1)(clips, labels)
    assert out is clips and torch.allclose(targets, smooth_one_hot(labels, 2, 0.1))


def test_randaugment_clips_equal_the_torchvision_ops(monkeypatch):
    """Whole clips (channels-last, as decoded) through the VideoMAE spec: the shortcuts give torchvision's clips."""
    clip = torch.randint(0, 256, (4, 3, 36, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    clip = clip.contiguous(memory_format=torch.channels_last)
    ra = parse_randaugment("rand-m7-n4-mstd0.5-inc1")
    fast = [ra(clip, generator=torch.Generator().manual_seed(seed)) for seed in range(40)]
    for name, op in REFERENCE_OPS.items():
        monkeypatch.setitem(RANDAUGMENT_OPS, name, op)
    for seed, got in enumerate(fast):
        assert torch.equal(got, ra(clip, generator=torch.Generator().manual_seed(seed))), seed


def test_solarize_at_magnitude_zero_is_the_identity():
    """Threshold 256 (magnitude 0, e.g. `rand-m0-...`): PIL/timm invert nothing; torchvision alone would raise."""
    clip = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ra = RandAugment(magnitude=0, num_ops=1, magnitude_std=0.0, prob=1.0, ops=("SolarizeIncreasing",))
    assert torch.equal(ra(clip, generator=torch.Generator().manual_seed(0)), clip)
