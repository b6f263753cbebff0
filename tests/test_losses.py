"""Reconstruction targets against direct re-implementations of VideoMAE's and mae_st's formulas; the reconstruction MSE."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.losses import reconstruction_mse, reconstruction_smooth_l1
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.targets import (
    norm_pix_joint,
    norm_pix_per_channel,
    reconstruction_targets,
    unnormalize_cubes,
)
from tubemask.tokenizers import gather_cubes, patchify

SETTINGS = settings(max_examples=30, deadline=None)
TS, PS = 2, 4  # tiny cubes: 2 x 4 x 4


def clip(seed: int, b: int = 2, t: int = 4, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.randn(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed))


def cube_pixels(video: np.ndarray, ts: int, ps: int) -> np.ndarray:
    """`b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c` with NumPy."""
    b, c, t, h, w = video.shape
    x = video.reshape(b, c, t // ts, ts, h // ps, ps, w // ps, ps).transpose(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, -1, ts * ps * ps, c)


def reference_norm_pix(video: torch.Tensor, mean, std, ts: int = TS, ps: int = PS) -> np.ndarray:
    """REFERENCE.md's loss target in float64: un-normalise, per token and channel (x - mean) / (sqrt(unbiased var)
    + 1e-6) over the cube's pixels, flattened (p0 p1 p2 c) with channel fastest."""
    x = video.double().numpy() * np.array(std)[None, :, None, None, None] + np.array(mean)[None, :, None, None, None]
    cubes = cube_pixels(x, ts, ps)  # b n (p0 p1 p2) c
    mu = cubes.mean(axis=2, keepdims=True)
    var = cubes.var(axis=2, ddof=1, keepdims=True)
    out = (cubes - mu) / (np.sqrt(var) + 1e-6)
    return out.reshape(out.shape[0], out.shape[1], -1)


def reference_norm_pix_joint(video: torch.Tensor, ts: int = TS, ps: int = PS) -> np.ndarray:
    """mae_st: per cube over all its values, (x - mean) / (unbiased var + 1e-6) ** 0.5."""
    cubes = cube_pixels(video.double().numpy(), ts, ps)
    flat = cubes.reshape(cubes.shape[0], cubes.shape[1], -1)
    mu = flat.mean(axis=-1, keepdims=True)
    var = flat.var(axis=-1, ddof=1, keepdims=True)
    return (flat - mu) / (var + 1e-6) ** 0.5


def all_ids(video: torch.Tensor) -> torch.Tensor:
    b, _, t, h, w = video.shape
    return torch.arange((t // TS) * (h // PS) * (w // PS)).expand(b, -1)


@SETTINGS
@given(seed=st.integers(0, 2**16))
def test_norm_pix_matches_reference(seed):
    video = clip(seed)
    ref = reference_norm_pix(video, IMAGENET_MEAN, IMAGENET_STD)
    target = reconstruction_targets(video, all_ids(video), tubelet_size=TS, patch_size=PS)
    assert target.dtype == torch.float32 and target.shape == ref.shape
    np.testing.assert_allclose(target.numpy(), ref, rtol=1e-4, atol=1e-4)
    # the pure function on the un-normalised patchified clip gives the same numbers
    raw = video * torch.tensor(IMAGENET_STD)[:, None, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None, None]
    direct = norm_pix_per_channel(patchify(raw, tubelet_size=TS, patch_size=PS), channels=3)
    np.testing.assert_allclose(direct.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_norm_pix_is_per_channel():
    """Each channel of each cube has mean 0 and unbiased std ~1 (channel is the fastest axis of k)."""
    target = reconstruction_targets(clip(0), all_ids(clip(0)), tubelet_size=TS, patch_size=PS)
    per_channel = target.view(2, -1, TS * PS * PS, 3)
    torch.testing.assert_close(per_channel.mean(dim=2), torch.zeros(2, 8, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=2), torch.ones(2, 8, 3), atol=1e-4, rtol=0)


@SETTINGS
@given(seed=st.integers(0, 2**16))
def test_norm_pix_joint_matches_mae_st(seed):
    video = clip(seed)
    target = reconstruction_targets(
        video, all_ids(video), tubelet_size=TS, patch_size=PS, kind="norm_pix_joint", mean=None, std=None
    )
    np.testing.assert_allclose(target.numpy(), reference_norm_pix_joint(video), rtol=1e-4, atol=1e-4)
    direct = norm_pix_joint(patchify(video, tubelet_size=TS, patch_size=PS))
    np.testing.assert_allclose(direct.numpy(), reference_norm_pix_joint(video), rtol=1e-4, atol=1e-4)


def test_pixels_target_unnormalises():
    video = clip(1)
    target = reconstruction_targets(video, all_ids(video), tubelet_size=TS, patch_size=PS, kind="pixels")
    raw = video * torch.tensor(IMAGENET_STD)[:, None, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None, None]
    torch.testing.assert_close(target, patchify(raw, tubelet_size=TS, patch_size=PS))
    same = reconstruction_targets(
        video, all_ids(video), tubelet_size=TS, patch_size=PS, kind="pixels", mean=None, std=None
    )
    assert torch.equal(same, patchify(video, tubelet_size=TS, patch_size=PS))


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["norm_pix", "norm_pix_joint", "pixels"]),
    m=st.integers(1, 8),
)
def test_targets_at_ids_equal_full_targets_gathered(seed, kind, m):
    video = clip(seed)
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(8, generator=g)[:m] for _ in range(2)])
    full = reconstruction_targets(video, all_ids(video), tubelet_size=TS, patch_size=PS, kind=kind)
    part = reconstruction_targets(video, ids, tubelet_size=TS, patch_size=PS, kind=kind)
    expected = torch.stack([full[i, ids[i]] for i in range(2)])
    torch.testing.assert_close(part, expected, atol=1e-6, rtol=1e-6)


def test_targets_have_no_grad_and_are_float32_under_autocast():
    video = clip(2).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        target = reconstruction_targets(video, all_ids(video), tubelet_size=TS, patch_size=PS)
    assert target.dtype == torch.float32 and not target.requires_grad
    half = reconstruction_targets(clip(2).double(), all_ids(video), tubelet_size=TS, patch_size=PS)
    assert half.dtype == torch.float32


def test_target_errors():
    video = clip(3)
    with pytest.raises(TypeError, match="kind"):  # the Literal annotation is checked at run time
        reconstruction_targets(video, all_ids(video), tubelet_size=TS, patch_size=PS, kind="edges")
    with pytest.raises(ValueError, match="mean and std"):
        unnormalize_cubes(torch.zeros(1, 2, 6), channels=3, mean=(0.5, 0.5), std=(1.0, 1.0))
    with pytest.raises(ValueError, match="mean and std"):
        unnormalize_cubes(torch.zeros(1, 2, 6), channels=3, mean=None, std=(1.0, 1.0, 1.0))


def test_reconstruction_mse():
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 6, generator=g)
    loss = reconstruction_mse(pred, target)
    assert loss.shape == () and loss.dtype == torch.float32
    torch.testing.assert_close(loss, ((pred - target) ** 2).mean())
    assert reconstruction_mse(target, target) == 0
    assert reconstruction_mse(pred.bfloat16(), target).dtype == torch.float32
    p = pred.clone().requires_grad_(True)
    reconstruction_mse(p, target).backward()
    torch.testing.assert_close(p.grad, 2 * (pred - target) / pred.numel())


@SETTINGS
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 1e-3, 30.0]))
def test_norm_pix_fast_path_equals_unnormalise_first(seed, scale):
    """The folded per-channel norm-pix equals un-normalise, then norm_pix_per_channel (in float64), to float32 rounding.

    The reference runs in float64: with a small std and a large mean, un-normalising first loses digits in float32
    (the folded form does not).
    """
    video = clip(seed) * scale
    ids = all_ids(video)
    cubes = gather_cubes(video.double(), ids, tubelet_size=TS, patch_size=PS)
    for mean, std in ((IMAGENET_MEAN, IMAGENET_STD), (None, None), ((0.5, 0.1, -2.0), (0.5, 2.0, 1e-3))):
        exact = norm_pix_per_channel(unnormalize_cubes(cubes, channels=3, mean=mean, std=std), channels=3)
        fast = reconstruction_targets(video, ids, tubelet_size=TS, patch_size=PS, mean=mean, std=std)
        torch.testing.assert_close(fast, exact.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["norm_pix", "pixels"])
def test_targets_build_no_host_tensor_after_the_first_call(kind, monkeypatch) -> None:
    """The per-channel std/mean tensors are made once per device and reused: on CUDA a `torch.tensor(...)` per call is
    a blocking host-to-device copy (a device sync every step). The values stay those of the first call."""
    video, ids = clip(3), torch.tensor([[0, 3], [1, 2]])
    first = reconstruction_targets(video, ids, tubelet_size=TS, patch_size=PS, kind=kind)

    def no_host_tensor(*args, **kwargs):
        raise AssertionError("reconstruction_targets built a tensor from Python values")

    monkeypatch.setattr(torch, "tensor", no_host_tensor)
    again = reconstruction_targets(video, ids, tubelet_size=TS, patch_size=PS, kind=kind)
    assert torch.equal(again, first)


def test_targets_first_made_in_inference_mode_still_serve_a_training_step() -> None:
    video, ids = clip(4), torch.tensor([[1, 2], [0, 3]])
    with torch.inference_mode():  # an evaluation pass fills the cache first
        reconstruction_targets(video, ids, tubelet_size=TS, patch_size=PS, kind="pixels", std=(0.3, 0.2, 0.1))
    pred = torch.zeros(2, 2, TS * PS * PS * 3, requires_grad=True)
    target = reconstruction_targets(video, ids, tubelet_size=TS, patch_size=PS, kind="pixels", std=(0.3, 0.2, 0.1))
    reconstruction_mse(pred, target).backward()
    assert pred.grad is not None and not target.is_inference()


# --- varied geometry: tubelet, patch, channels, batch, and near-constant cubes where the epsilon decides ---

F32_ULP = 2.0**-23


def reference_norm_pix_any(video: np.ndarray, mean, std, ts: int, ps: int, eps: float = 1e-6):
    """VideoMAE's norm-pix for any channel count, in float64: `(y - mean) / (sqrt(unbiased var) + eps)` per cube and
    channel of the un-normalised clip `y`. Returns the targets `[b n (p0 p1 p2 c)]` and the denominators per cube and
    channel `[b n 1 c]`."""
    c = video.shape[1]
    x = video.astype(np.float64)
    if mean is not None:
        x = x * np.array(std)[None, :, None, None, None] + np.array(mean)[None, :, None, None, None]
    cubes = cube_pixels(x, ts, ps)  # b n (p0 p1 p2) c
    denom = np.sqrt(cubes.var(axis=2, ddof=1, keepdims=True)) + eps
    out = (cubes - cubes.mean(axis=2, keepdims=True)) / denom
    return out.reshape(out.shape[0], out.shape[1], -1), denom.reshape(out.shape[0], out.shape[1], 1, c)


def reference_norm_pix_joint_any(video: np.ndarray, ts: int, ps: int, eps: float = 1e-6):
    """mae_st's per-cube target over all values, float64; also the denominators `[b n 1]`."""
    cubes = cube_pixels(video.astype(np.float64), ts, ps)
    flat = cubes.reshape(cubes.shape[0], cubes.shape[1], -1)
    denom = np.sqrt(flat.var(axis=-1, ddof=1, keepdims=True) + eps)
    return (flat - flat.mean(axis=-1, keepdims=True)) / denom, denom


@st.composite
def geometries(draw, *, min_values: int = 2):
    """A clip geometry and its normalisation: tubelet 1-3, patch 1-4, 1-4 channels (3 with ImageNet statistics or
    none, others with drawn statistics or none, 1 channel always without), 1-3 clips, 1-2 x 1-3 x 1-3 cubes; each cube
    holds at least `min_values` values per channel (the unbiased variance needs two)."""
    ts, ps = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    if ts * ps * ps < min_values:
        ps = 2
    c = draw(st.integers(1, 4))
    if c == 1:
        stats = None
    elif c == 3:
        stats = draw(st.sampled_from([None, "imagenet", "drawn"]))
    else:
        stats = draw(st.sampled_from([None, "drawn"]))
    if stats == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif stats == "drawn":
        mean = tuple(draw(st.lists(st.floats(-1, 1), min_size=c, max_size=c)))
        std = tuple(draw(st.lists(st.floats(0.05, 3), min_size=c, max_size=c)))
    else:
        mean = std = None
    b, gt, gh, gw = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return dict(b=b, c=c, t=gt * ts, h=gh * ps, w=gw * ps, ts=ts, ps=ps, mean=mean, std=std)


def near_constant_clip(geo: dict, seed: int, spread: float) -> torch.Tensor:
    """A float32 clip whose cubes are each a drawn constant plus `spread` times noise, or (about half of them) exactly
    the constant: for a small `spread`, cubes where `eps` is the denominator or most of it."""
    g = torch.Generator().manual_seed(seed)
    b, c, ts, ps = geo["b"], geo["c"], geo["ts"], geo["ps"]
    gt, gh, gw = geo["t"] // ts, geo["h"] // ps, geo["w"] // ps
    levels = torch.randn(b, c, gt, 1, gh, 1, gw, 1, generator=g, dtype=torch.float64)
    scales = spread * torch.randint(0, 2, (b, 1, gt, 1, gh, 1, gw, 1), generator=g).double()  # some cubes constant
    noise = torch.randn(b, c, gt, ts, gh, ps, gw, ps, generator=g, dtype=torch.float64)
    return (levels + scales * noise).reshape(b, c, geo["t"], geo["h"], geo["w"]).float()


def float32_slack(video: torch.Tensor, geo: dict, denom: np.ndarray) -> np.ndarray:
    """What float32 may legitimately add to a target, per cube and channel: the library centres the normalised cube
    values in float32, which is exact to a few ulps of the cube's largest value (`8 ulp`, the mean's rounding included);
    divided by the denominator (in the normalised scale: times the channel's std), that is the error of the target.
    The epsilon keeps the denominator, and so this bound, finite; for ordinary cubes it is far below 1e-4."""
    sd = np.ones(geo["c"]) if geo["std"] is None else np.array(geo["std"], dtype=np.float64)
    largest = np.abs(cube_pixels(video.double().numpy(), geo["ts"], geo["ps"])).max(axis=2, keepdims=True)
    return 8 * F32_ULP * largest * sd / denom  # [b n 1 c]


@settings(max_examples=60, deadline=None)
@given(geo=geometries(), seed=st.integers(0, 2**16), spread=st.sampled_from([1.0, 1e-3, 1e-5, 1e-6, 1e-7, 0.0]))
def test_norm_pix_matches_reference_for_any_geometry(geo, seed, spread):
    """reconstruction_targets' norm-pix, for any tubelet, patch, channel count, batch and normalisation, equals
    VideoMAE's formula in float64, also on cubes whose spread is at or below the epsilon (pixels 1e-7 apart, or
    equal): there the target stays finite and is the formula with `+ eps`, within float32 rounding over that
    denominator."""
    video = near_constant_clip(geo, seed, spread)
    ts, ps, c = geo["ts"], geo["ps"], geo["c"]
    ids = torch.arange((geo["t"] // ts) * (geo["h"] // ps) * (geo["w"] // ps)).expand(geo["b"], -1)
    ref, denom = reference_norm_pix_any(video.numpy(), geo["mean"], geo["std"], ts, ps)
    target = reconstruction_targets(video, ids, tubelet_size=ts, patch_size=ps, mean=geo["mean"], std=geo["std"])
    assert target.dtype == torch.float32 and target.shape == ref.shape == (geo["b"], ids.shape[1], ts * ps * ps * c)
    assert bool(torch.isfinite(target).all())
    slack = float32_slack(video, geo, denom)  # b n 1 c
    err = np.abs(target.double().numpy() - ref).reshape(slack.shape[:2] + (-1, c))
    assert bool((err <= 1e-4 + 1e-5 * np.abs(ref).reshape(err.shape) + slack).all()), float(err.max())


@settings(max_examples=60, deadline=None)
@given(geo=geometries(), seed=st.integers(0, 2**16), spread=st.sampled_from([1.0, 1e-5, 1e-6, 1e-7, 0.0]))
def test_norm_pix_functions_are_the_formulas_with_eps_in_float64(geo, seed, spread):
    """The pure functions, given float64 cubes, are VideoMAE's `(x - mean) / (std + eps)` and mae_st's
    `(x - mean) / sqrt(var + eps)` to float64 rounding, for any geometry: on near-constant cubes `eps` decides the
    value (a cube 1e-7 apart maps to about 0.1, not to +-1 as without it; an equal cube maps to 0, not NaN)."""
    video = near_constant_clip(geo, seed, spread).double()
    ts, ps, c = geo["ts"], geo["ps"], geo["c"]
    cubes = patchify(video, tubelet_size=ts, patch_size=ps)
    per_channel = norm_pix_per_channel(cubes, channels=c)
    np.testing.assert_allclose(
        per_channel.numpy(), reference_norm_pix_any(video.numpy(), None, None, ts, ps)[0], rtol=1e-9, atol=1e-9
    )
    joint = norm_pix_joint(cubes)
    np.testing.assert_allclose(
        joint.numpy(), reference_norm_pix_joint_any(video.numpy(), ts, ps)[0], rtol=1e-9, atol=1e-9
    )
    assert bool(torch.isfinite(per_channel).all()) and bool(torch.isfinite(joint).all())


@settings(max_examples=40, deadline=None)
@given(geo=geometries(), seed=st.integers(0, 2**16), spread=st.sampled_from([1.0, 1e-6, 1e-7, 0.0]))
def test_norm_pix_joint_and_pixels_match_reference_for_any_geometry(geo, seed, spread):
    """The mae_st target and the plain pixels, for any geometry, from the normalised clip: the un-normalised cubes
    (channel fastest) and mae_st's formula in float64."""
    video = near_constant_clip(geo, seed, spread)
    ts, ps, mean, std = geo["ts"], geo["ps"], geo["mean"], geo["std"]
    ids = torch.arange((geo["t"] // ts) * (geo["h"] // ps) * (geo["w"] // ps)).expand(geo["b"], -1)
    raw = video.double().numpy()
    if mean is not None:
        raw = raw * np.array(std)[None, :, None, None, None] + np.array(mean)[None, :, None, None, None]
    pixels = reconstruction_targets(video, ids, tubelet_size=ts, patch_size=ps, kind="pixels", mean=mean, std=std)
    expected = cube_pixels(raw, ts, ps).reshape(geo["b"], ids.shape[1], -1)
    np.testing.assert_allclose(pixels.numpy(), expected, rtol=1e-6, atol=1e-6)
    joint = reconstruction_targets(
        video, ids, tubelet_size=ts, patch_size=ps, kind="norm_pix_joint", mean=mean, std=std
    )
    ref, denom = reference_norm_pix_joint_any(raw, ts, ps)
    assert bool(torch.isfinite(joint).all())
    # float32 un-normalising and centring: a few ulps of the cube's largest raw value, over sqrt(var + eps) >= 1e-3
    largest = np.abs(cube_pixels(raw, ts, ps)).reshape(ref.shape).max(axis=-1, keepdims=True)
    slack = 8 * F32_ULP * largest / denom
    assert bool((np.abs(joint.double().numpy() - ref) <= 1e-4 + 1e-5 * np.abs(ref) + slack).all())


@pytest.mark.parametrize(("mean", "std", "atol"), [(None, None, 1e-6), (IMAGENET_MEAN, IMAGENET_STD, 0.02)])
def test_norm_pix_of_constant_and_nearly_constant_cubes_by_hand(mean, std, atol):
    """Hand-computed: an equal cube maps to 0 (not NaN); a cube whose raw pixels alternate +-d around 0.5 has unbiased
    std `d * sqrt(q / (q - 1))`, so its targets are `+-d / (d * sqrt(q / (q - 1)) + 1e-6)`: +-0.1064 for d = 2**-23
    (1.2e-7: the epsilon dominates; without it +-0.98) and +-0.9833 for d = 2**-10 (it does not matter).

    d is a power of two, so the raw clip is exact in float32. Normalised with ImageNet's statistics, the values
    (about 0.07) are rounded to float32 with an ulp of 7e-9 against deviations of 5e-7, so the target can move by
    about 1% of the deviation's 0.1: atol 0.02 there.
    """
    q = TS * PS * PS  # 32 pixels per cube and channel
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(q // 2).view(TS, PS, PS)
    for d, value in ((0.0, 0.0), (2.0**-23, 0.1064), (2.0**-10, 0.9833)):
        assert d / (d * (q / (q - 1)) ** 0.5 + 1e-6) == pytest.approx(value, abs=1e-4)
        raw = torch.full((1, 3, TS, PS, PS), 0.5, dtype=torch.float64) + d * sign  # one cube
        video = raw
        if mean is not None:
            video = (raw - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
        target = reconstruction_targets(
            video.float(), torch.zeros(1, 1, dtype=torch.long), tubelet_size=TS, patch_size=PS, mean=mean, std=std
        )
        expected = (d / (d * (q / (q - 1)) ** 0.5 + 1e-6) * sign).reshape(q, 1).expand(q, 3).reshape(1, 1, -1)
        assert bool(torch.isfinite(target).all())
        torch.testing.assert_close(target, expected.float(), atol=atol, rtol=1e-5)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 10.0))
def test_smooth_l1_is_squared_below_one_and_absolute_above(seed, scale):
    """MVD's loss, written out: per value 0.5 d^2 where |d| < 1, else |d| - 0.5, averaged over every value."""
    g = torch.Generator().manual_seed(seed)
    pred, target = scale * torch.randn(2, 5, 7, generator=g), scale * torch.randn(2, 5, 7, generator=g)
    d = (pred - target).double().abs().numpy()
    want = np.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    assert reconstruction_smooth_l1(pred.bfloat16(), target).dtype == torch.float32
    np.testing.assert_allclose(reconstruction_smooth_l1(pred, target).item(), want, rtol=1e-5)
