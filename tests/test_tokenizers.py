"""patchify / unpatchify round trip and layout, gather_cubes, and the cube embedding on a subset of cubes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.grid import CubeGeometry, token_grid
from tubemask.tokenizers import CubeEmbedding, gather_cube_planes, gather_cubes, patchify, unpatchify

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def clips(draw, max_batch: int = 2):
    """A random clip with a valid cube geometry: `(video, tubelet_size, patch_size, grid)`."""
    b = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, 3))
    ts = draw(st.integers(1, 2))
    ps = draw(st.integers(1, 3))
    grid = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    seed = draw(st.integers(0, 2**16))
    shape = (b, c, grid[0] * ts, grid[1] * ps, grid[2] * ps)
    video = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return video, ts, ps, grid


@st.composite
def clips_and_ids(draw):
    """A clip plus `[b, v]` token ids: each row a random subset in random order."""
    video, ts, ps, grid = draw(clips())
    n = grid[0] * grid[1] * grid[2]
    v = draw(st.integers(1, n))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    ids = torch.stack([torch.randperm(n, generator=g)[:v] for _ in range(video.shape[0])])
    return video, ts, ps, grid, ids


def reference_patchify(video: torch.Tensor, ts: int, ps: int) -> np.ndarray:
    """`b c (T p0) (H p1) (W p2) -> b (T H W) (p0 p1 p2 c)` written with NumPy reshapes."""
    b, c, t, h, w = video.shape
    x = video.numpy().reshape(b, c, t // ts, ts, h // ps, ps, w // ps, ps)
    x = x.transpose(0, 2, 4, 6, 3, 5, 7, 1)  # b T H W p0 p1 p2 c
    return x.reshape(b, (t // ts) * (h // ps) * (w // ps), ts * ps * ps * c)


@SETTINGS
@given(clips())
def test_round_trip(sample):
    video, ts, ps, grid = sample
    tokens = patchify(video, tubelet_size=ts, patch_size=ps)
    b, c = video.shape[:2]
    assert tokens.shape == (b, grid[0] * grid[1] * grid[2], ts * ps * ps * c)
    back = unpatchify(tokens, grid, tubelet_size=ts, patch_size=ps, channels=c)
    assert torch.equal(back, video)
    assert torch.equal(patchify(back, tubelet_size=ts, patch_size=ps), tokens)


@SETTINGS
@given(clips())
def test_layout_raster_and_channel_fastest(sample):
    video, ts, ps, grid = sample
    tokens = patchify(video, tubelet_size=ts, patch_size=ps)
    np.testing.assert_array_equal(tokens.numpy(), reference_patchify(video, ts, ps))
    # one value by index arithmetic: token (ti, hi, wi) raster, value (p0, p1, p2, ch) channel fastest
    b, c = video.shape[:2]
    T, H, W = grid
    ti, hi, wi, p0, p1, p2, ch = T - 1, H // 2, W - 1, ts - 1, 0, ps - 1, c - 1
    token = (ti * H + hi) * W + wi
    value = ((p0 * ps + p1) * ps + p2) * c + ch
    assert tokens[b - 1, token, value] == video[b - 1, ch, ti * ts + p0, hi * ps + p1, wi * ps + p2]


def test_patchify_rejects_partial_cubes():
    with pytest.raises(ValueError, match="height"):
        patchify(torch.zeros(1, 3, 4, 10, 8), tubelet_size=2, patch_size=4)
    with pytest.raises(ValueError, match="frames"):
        patchify(torch.zeros(1, 3, 3, 8, 8), tubelet_size=2, patch_size=4)


def test_unpatchify_rejects_wrong_sizes():
    tokens = torch.zeros(1, 8, 2 * 4 * 4 * 3)
    with pytest.raises(ValueError, match="tokens"):
        unpatchify(tokens, (2, 2, 3), tubelet_size=2, patch_size=4)
    with pytest.raises(ValueError, match="values"):
        unpatchify(tokens, (2, 2, 2), tubelet_size=2, patch_size=4, channels=1)
    with pytest.raises(ValueError, match="values"):
        unpatchify(tokens, (2, 2, 2), tubelet_size=1, patch_size=4)
    assert unpatchify(tokens, (2, 2, 2), tubelet_size=2, patch_size=4).shape == (1, 3, 4, 8, 8)


@SETTINGS
@given(clips_and_ids())
def test_gather_cubes_equals_patchify_gathered(sample):
    video, ts, ps, _, ids = sample
    full = patchify(video, tubelet_size=ts, patch_size=ps)
    expected = torch.stack([full[i, ids[i]] for i in range(video.shape[0])])
    assert torch.equal(gather_cubes(video, ids, tubelet_size=ts, patch_size=ps), expected)


@SETTINGS
@given(clips_and_ids())
def test_gather_cube_planes_is_gather_cubes_channel_major(sample):
    video, ts, ps, _, ids = sample
    b, c = video.shape[:2]
    cubes = gather_cubes(video, ids, tubelet_size=ts, patch_size=ps)  # (p0 p1 p2 c)
    planes = gather_cube_planes(video, ids, tubelet_size=ts, patch_size=ps)
    assert planes.shape == (b, ids.shape[1], c, ts * ps * ps)
    assert torch.equal(planes, cubes.view(b, ids.shape[1], -1, c).transpose(-1, -2))


@SETTINGS
@given(clips_and_ids(), st.integers(1, 8))
def test_cube_embedding_on_ids_equals_full_conv(sample, dim):
    video, ts, ps, _, ids = sample
    torch.manual_seed(0)
    embed = CubeEmbedding(dim, tubelet_size=ts, patch_size=ps, in_channels=video.shape[1])
    with torch.no_grad():
        conv = embed.proj(video).flatten(2).transpose(1, 2)  # [b n d] in raster order
        full = embed(video)
        part = embed(video, ids)
    assert full.shape == conv.shape and torch.allclose(full, conv, atol=1e-5)
    expected = torch.stack([conv[i, ids[i]] for i in range(video.shape[0])])
    assert part.shape == (video.shape[0], ids.shape[1], dim)
    torch.testing.assert_close(part, expected, atol=1e-5, rtol=1e-5)


def test_cube_embedding_geometry_and_errors():
    embed = CubeEmbedding(8, tubelet_size=2, patch_size=4, in_channels=3)
    assert embed.grid((1, 3, 8, 12, 16)) == (4, 3, 4)
    assert embed.flat_weight().shape == (8, 2 * 4 * 4 * 3)
    assert set(embed.state_dict()) == {"proj.weight", "proj.bias"}
    with pytest.raises(ValueError, match="channels"):
        embed(torch.zeros(1, 1, 4, 8, 8))
    with pytest.raises(ValueError, match="width"):
        embed.grid((1, 3, 4, 8, 10))


def test_cube_embedding_gradients_match_full_conv():
    """Embedding only the visible cubes gives the kernel the same gradient as the full conv restricted to them."""
    torch.manual_seed(0)
    embed = CubeEmbedding(4, tubelet_size=2, patch_size=2, in_channels=3)
    video = torch.randn(2, 3, 4, 4, 4)
    ids = torch.tensor([[0, 3, 5], [7, 1, 2]])
    weight = torch.randn(2, 3, 4)
    (embed(video, ids) * weight).sum().backward()
    grad_part = embed.proj.weight.grad.clone()
    embed.zero_grad()
    conv = embed.proj(video).flatten(2).transpose(1, 2)
    (torch.stack([conv[i, ids[i]] for i in range(2)]) * weight).sum().backward()
    torch.testing.assert_close(grad_part, embed.proj.weight.grad, atol=1e-5, rtol=1e-5)


@SETTINGS
@given(clip=clips())
def test_cube_geometry_agrees_with_the_tokenizer_and_patchify(clip):
    video, ts, ps, grid = clip
    c = video.shape[1]
    geometry = CubeGeometry(tubelet_size=ts, patch_size=ps, channels=c)
    embed = CubeEmbedding(4, tubelet_size=ts, patch_size=ps, in_channels=c)
    assert geometry.grid(*video.shape[2:]) == embed.grid(video.shape) == grid
    cubes = patchify(video, tubelet_size=ts, patch_size=ps)
    assert cubes.shape[1:] == (geometry.num_tokens(*video.shape[2:]), geometry.values_per_cube)
    assert embed.flat_weight().shape == (4, geometry.values_per_cube)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: token_grid(16, 224, 224, tubelet_size=0, patch_size=16), r"cube side for frames must be positive"),
        (lambda: token_grid(16, 225, 224, tubelet_size=2, patch_size=16), r"clip height=225 must be a positive mult"),
        (lambda: token_grid(0, 224, 224, tubelet_size=2, patch_size=16), r"clip frames=0 must be a positive multiple"),
        (lambda: CubeGeometry(patch_size=0), r"CubeGeometry.patch_size must be a positive int, got 0"),
        (lambda: CubeGeometry(channels=3.0), r"CubeGeometry.channels must be a positive int, got 3.0"),
        (lambda: CubeGeometry(tubelet_size=True), r"CubeGeometry.tubelet_size must be a positive int, got True"),
        (lambda: CubeGeometry().grid(15, 224, 224), r"clip frames=15 must be a positive multiple of 2"),
    ],
)
def test_bad_geometry_names_the_size_and_the_cube_side(call, message):
    with pytest.raises(ValueError, match=message):
        call()
