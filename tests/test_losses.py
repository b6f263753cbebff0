"""Reconstruction targets against direct re-implementations of VideoMAE's and mae_st's formulas; the reconstruction MSE."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.losses import reconstruction_mse
from tubemask.targets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
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
