"""RandAugment spec parsing and per-clip consistency; mixup/cutmix with label smoothing."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.data import Mixup, RandAugment, parse_randaugment
from tubemask.data.mixup import smooth_one_hot
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


# --- against timm's published definitions (timm.data.auto_augment, as `rand-m7-n4-mstd0.5-inc1` builds them) ---

# tubemask's sign +1 draws timm's negated argument for these ops: torchvision's `F.affine` angle turns clockwise where
# PIL's `rotate` turns counter-clockwise, and a positive shift moves the content right/down where PIL's affine
# translation moves it left/up. The sign is a fair coin in both, so the ops' distributions are the same.
_MIRRORED_SIGN = {"Rotate", "TranslateXRel", "TranslateYRel"}
TIMM_MAGNITUDES = (0.0, 0.4, 1.0, 2.5, 3.3, 5.0, 6.5, 7.0, 7.49, 8.0, 9.99, 10.0)


def timm_argument(aa, name: str, magnitude: float, negate: bool) -> tuple:
    """timm's level-to-argument function for `name`, its coin (`_randomly_negate`) forced to `negate`."""
    level_fn = aa.LEVEL_TO_ARG[name]
    if level_fn is None:
        return ()
    with pytest.MonkeyPatch.context() as mp:  # timm negates when random.random() > 0.5
        mp.setattr(aa.random, "random", lambda: 1.0 if negate else 0.0)
        return level_fn(magnitude, dict(aa._HPARAMS_DEFAULT))


def library_argument(monkeypatch, name: str, magnitude: float, sign: float, height: int = 20, width: int = 24):
    """The argument tubemask's op passes on, read off the calls it makes, in timm's terms: the rotation in PIL's
    counter-clockwise degrees, the shear factor, the translation as a fraction of the frame, the enhance factor, the
    posterize bits, the solarize threshold, the solarize-add increment; `()` for the ops without one."""
    from tubemask.data import randaugment

    calls = []
    functional = randaugment.F

    class Recording:
        def __getattr__(self, attr):
            real = getattr(functional, attr)

            def record(*args, **kwargs):
                calls.append((attr, args[1:], kwargs))
                return real(*args, **kwargs)

            return record

    def recorded(module_name):
        real = getattr(randaugment, module_name)

        def record(*args, **kwargs):
            calls.append((module_name, args[1:], kwargs))
            return real(*args, **kwargs)

        return record

    with monkeypatch.context() as mp:
        mp.setattr(randaugment, "F", Recording())
        for helper in ("_solarize", "_solarize_add", "_shifted"):
            mp.setattr(randaugment, helper, recorded(helper))
        frames = torch.zeros(1, 3, height, width, dtype=torch.uint8)
        RANDAUGMENT_OPS[name](frames, magnitude, sign)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    first, args, kwargs = calls[0]
    if name == "Rotate":
        return (-kwargs["angle"],)
    if name in ("ShearX", "ShearY"):
        shear = kwargs["shear"][0 if name == "ShearX" else 1]
        return (math.tan(math.radians(shear)),)
    if name in ("TranslateXRel", "TranslateYRel"):
        assert first == "_shifted"
        return (-args[0] / (width if name == "TranslateXRel" else height),)
    return (args[0],)  # posterize bits, solarize threshold, solarize-add increment, enhance factor


def test_the_op_set_is_timms_increasing_set():
    aa = pytest.importorskip("timm.data.auto_augment")
    assert list(RANDAUGMENT_OPS) == list(aa._RAND_INCREASING_TRANSFORMS)
    assert aa._LEVEL_DENOM == 10.0
    ra, timm_ra = parse_randaugment("rand-m7-n4-mstd0.5-inc1"), aa.rand_augment_transform("rand-m7-n4-mstd0.5-inc1")
    assert [op.name for op in timm_ra.ops] == list(ra.ops) and timm_ra.num_layers == ra.num_ops
    assert {(op.magnitude, op.prob, op.magnitude_std) for op in timm_ra.ops} == {(ra.magnitude, ra.prob, 0.5)}


@pytest.mark.parametrize("name", sorted(RANDAUGMENT_OPS))
def test_op_arguments_equal_timms(name, monkeypatch):
    """For each magnitude and sign, the argument tubemask passes on equals the one timm's level-to-argument function
    computes (`_rotate_level_to_arg`, `_enhance_increasing_level_to_arg`, `_translate_rel_level_to_arg`, ...).

    Exact for the integer arguments; the float ones to 1e-12 (tubemask carries the shear as an angle, timm clamps the
    enhance factor at 0.1, which `1 - 0.9` misses by one rounding). The translation is a whole number of pixels in
    tubemask (nearest sampling moves whole pixels): timm's fraction of the frame rounded to the pixel.
    """
    aa = pytest.importorskip("timm.data.auto_augment")
    width, height = 24, 20
    for magnitude in TIMM_MAGNITUDES:
        for sign in (1.0, -1.0):
            negate = (sign < 0) != (name in _MIRRORED_SIGN)
            expected = timm_argument(aa, name, magnitude, negate)
            got = library_argument(monkeypatch, name, magnitude, sign, height, width)
            where = f"{name} at magnitude {magnitude}, sign {sign}"
            assert len(got) == len(expected), where
            if name in ("TranslateXRel", "TranslateYRel"):
                size = width if name == "TranslateXRel" else height
                assert got[0] * size == round(expected[0] * size), where
            elif name in ("PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd"):
                assert got == expected and all(type(v) is int for v in got), where
            else:
                assert got == pytest.approx(expected, rel=0, abs=1e-12), where


# PIL's ImageEnhance blends with the degenerate image (grey image, mean grey, smoothed image) in 8-bit fixed point,
# Contrast from the rounded integer mean; torchvision blends in float32 and rounds once. The same formula either way,
# so they may differ by the rounding of one blend: one level of 255. The value ops are exact.
_ONE_LEVEL = {"ColorIncreasing", "ContrastIncreasing", "SharpnessIncreasing"}


_GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def pil_inverse_affine(name: str, arg: float, height: int, width: int) -> tuple[float, ...]:
    """The output-to-input matrix `(a, b, c, d, e, f)` PIL samples with for timm's geometric op: `Image.rotate`'s (about `(w/2, h/2)`, cosines rounded to 15 digits) or timm's `img.transform` tuple."""
    if name == "Rotate":
        angle = -math.radians(arg % 360.0)
        a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
        d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
        cx, cy = width / 2, height / 2
        return (a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy)
    return {
        "ShearX": (1, arg, 0, 0, 1, 0),
        "ShearY": (1, 0, 0, arg, 1, 0),
        "TranslateXRel": (1, 0, arg * width, 0, 1, 0),
        "TranslateYRel": (1, 0, 0, 0, 1, arg * height),
    }[name]


def nearest_ties(matrix: tuple[float, ...], height: int, width: int, within: float = 1e-4) -> torch.Tensor:
    """Output pixels whose sample point (the pixel centre mapped by `matrix`) lies within `within` of a pixel
    boundary: there PIL's nearest (truncation, float64 steps) and torchvision's (grid_sample on a float32 grid, round
    half to even) may pick either neighbour. Bool `[h w]`."""
    a, b, c, d, e, f = matrix
    y, x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    xin, yin = a * x + b * y + c, d * x + e * y + f
    tie = (np.abs(xin - np.round(xin)) < within) | (np.abs(yin - np.round(yin)) < within)
    return torch.from_numpy(tie)


@pytest.mark.parametrize("name", sorted(RANDAUGMENT_OPS))
@pytest.mark.parametrize(("height", "width"), [(20, 24), (23, 31)])
def test_op_outputs_equal_timms_pil_ops(name, height, width):
    """On a fixed uint8 frame, each op's output equals timm's PIL op given the same magnitude and sign.

    timm is built with `interpolation=NEAREST`, the sampling tubemask uses, so that it is deterministic given its
    argument (its default draws bilinear or bicubic per call; VideoMAE passes bicubic), and fills with 128 as timm's
    `_FILL`. Exact, except: the enhance blends within one level (`_ONE_LEVEL`), and the geometric ops at the pixels
    whose sample point falls on a pixel boundary (`nearest_ties`), where the two nearest samplers break ties
    differently. PosterizeIncreasing at magnitude 10 keeps 0 bits, which PIL >= 9 refuses: not compared.
    """
    aa = pytest.importorskip("timm.data.auto_augment")
    from PIL import Image

    frame = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    image = Image.fromarray(frame[0].permute(1, 2, 0).numpy())
    hparams = dict(aa._HPARAMS_DEFAULT, interpolation=Image.NEAREST)
    tolerance = 1 if name in _ONE_LEVEL else 0
    for magnitude in TIMM_MAGNITUDES:
        if name == "PosterizeIncreasing" and magnitude == 10.0:
            continue
        for sign in (1.0, -1.0):
            negate = (sign < 0) != (name in _MIRRORED_SIGN)
            op = aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(aa.random, "random", lambda negate=negate: 1.0 if negate else 0.0)
                expected = torch.from_numpy(np.asarray(op(image)).copy()).permute(2, 0, 1)
            got = RANDAUGMENT_OPS[name](frame, magnitude, sign)[0]
            wrong = (got.int() - expected.int()).abs().gt(tolerance).any(0)
            if name in _GEOMETRIC:
                (arg,) = timm_argument(aa, name, magnitude, negate)
                wrong &= ~nearest_ties(pil_inverse_affine(name, arg, height, width), height, width)
            assert not bool(wrong.any()), (
                f"{name} at magnitude {magnitude}, sign {sign}: {int(wrong.sum())} of {height * width} pixels differ "
                f"from timm's (beyond {tolerance} and off the sampling ties)"
            )
