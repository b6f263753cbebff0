"""Position embeddings: VideoMAE's sinusoid table against its NumPy formula, its resized form, the 3-D table, the
learned table."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.pos_embed import (
    LearnedPositionEmbedding,
    ResizedSinusoidPositionEmbedding,
    SinCos3DPositionEmbedding,
    SinusoidPositionEmbedding,
    sincos_3d_table,
    sinusoid_table,
)


def videomae_sinusoid(n_position: int, d_hid: int) -> np.ndarray:
    """VideoMAE's `get_sinusoid_encoding_table`, vectorised: float64 angles, sin on even columns, cos on odd."""
    hid_j = np.arange(d_hid)
    angles = np.arange(n_position, dtype=np.float64)[:, None] / np.power(10000, 2 * (hid_j // 2) / d_hid)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles.astype(np.float32)


@pytest.mark.parametrize(("n", "d"), [(1, 2), (5, 7), (16, 64), (1568, 384), (1568, 768)])
def test_sinusoid_matches_videomae(n, d):
    table = sinusoid_table(n, d)
    assert table.dtype == torch.float32 and table.shape == (n, d)
    np.testing.assert_allclose(table.numpy(), videomae_sinusoid(n, d), rtol=0, atol=1e-7)


def test_sinusoid_rejects_empty():
    for n, d in ((0, 4), (4, 0), (-1, 4)):
        with pytest.raises(ValueError, match="positive"):
            sinusoid_table(n, d)


def test_fixed_tables_are_not_state():
    for module in (SinusoidPositionEmbedding(8), SinCos3DPositionEmbedding(16)):
        module.full((2, 2, 2))  # fill the cache
        assert module.state_dict() == {}
        assert list(module.parameters()) == [] and list(module.buffers()) == []


def test_sinusoid_module_lookup():
    grid = (2, 3, 4)
    embed = SinusoidPositionEmbedding(16)
    ids = torch.tensor([[0, 5, 23], [23, 1, 1]])
    out = embed(ids, grid)
    assert out.shape == (2, 3, 16) and out.dtype == torch.float32
    assert torch.equal(out, sinusoid_table(24, 16)[ids])
    like = torch.zeros(1, dtype=torch.float64)
    assert embed(ids, grid, like).dtype == torch.float64
    assert torch.equal(embed.full(grid), sinusoid_table(24, 16))


@pytest.mark.parametrize(("grid", "dim"), [((2, 3, 4), 16), ((8, 14, 14), 384), ((1, 1, 5), 16), ((4, 2, 2), 768)])
def test_sincos_3d_shape_and_distinct(grid, dim):
    table = sincos_3d_table(grid, dim)
    n = grid[0] * grid[1] * grid[2]
    assert table.shape == (n, dim) and table.dtype == torch.float32
    assert torch.unique(table, dim=0).shape[0] == n, "every token gets its own embedding"
    assert bool(table.abs().le(1).all())
    # separable: the temporal columns depend only on t, the spatial ones only on (h, w)
    dim_t = (dim // 4) // 2 * 2
    by_t = table.view(grid[0], grid[1] * grid[2], dim)
    assert torch.equal(by_t[:, :, :dim_t], by_t[:, :1, :dim_t].expand_as(by_t[:, :, :dim_t]))
    assert torch.equal(by_t[:, :, dim_t:], by_t[:1, :, dim_t:].expand_as(by_t[:, :, dim_t:]))


@pytest.mark.parametrize("dim", [6, 8, 12])
def test_sincos_3d_rejects_bad_width(dim):
    with pytest.raises(ValueError, match="dim"):
        sincos_3d_table((2, 2, 2), dim)


def test_learned_embedding():
    grid = (2, 2, 3)
    embed = LearnedPositionEmbedding(8, grid)
    assert embed.weight.shape == (12, 8)
    assert list(embed.state_dict()) == ["weight"]
    assert torch.equal(embed.weight.detach(), sinusoid_table(12, 8))
    ids = torch.tensor([[0, 11], [3, 4]])
    out = embed(ids, grid)
    assert out.shape == (2, 2, 8) and torch.equal(out, embed.weight[ids])
    out.sum().backward()
    assert embed.weight.grad is not None and int((embed.weight.grad.abs().sum(1) > 0).sum()) == 4
    normal = LearnedPositionEmbedding(8, grid, init="trunc_normal")
    # as VideoMAE (timm's trunc_normal_), the bounds are absolute (+-2), so this is a plain N(0, 0.02^2) in practice
    assert float(normal.weight.detach().std()) < 0.05 and float(normal.weight.detach().abs().max()) <= 2.0
    with pytest.raises(ValueError, match="grid"):
        embed(ids, (2, 3, 2))
    with pytest.raises(ValueError, match="init"):
        LearnedPositionEmbedding(8, grid, init="zeros")


def test_resized_sinusoid_is_the_flat_sinusoid_on_its_base_grid() -> None:
    grid = (2, 4, 4)
    resized = ResizedSinusoidPositionEmbedding(32, grid)
    assert torch.equal(resized.full(grid), SinusoidPositionEmbedding(32).full(grid))


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 8), w=st.integers(2, 8), scale_h=st.sampled_from([1, 3, 5]), scale_w=st.sampled_from([1, 3]))
def test_resized_sinusoid_keeps_each_base_code_at_its_place(h: int, w: int, scale_h: int, scale_w: int) -> None:
    # upsampled by an odd factor s, the centre token of each s x s block sits exactly where base cell (y, x) sat
    # (half-pixel centres), and bicubic interpolation passes through its samples: that token carries the base code
    base = (2, h, w)
    big = ResizedSinusoidPositionEmbedding(64, base).full((2, h * scale_h, w * scale_w))
    big = big.reshape(2, h * scale_h, w * scale_w, 64)
    centres = big[:, scale_h // 2 :: scale_h, scale_w // 2 :: scale_w]
    torch.testing.assert_close(centres, sinusoid_table(2 * h * w, 64).reshape(2, h, w, 64), atol=1e-5, rtol=0)


def test_resized_sinusoid_refuses_another_clip_length() -> None:
    embed = ResizedSinusoidPositionEmbedding(16, (8, 14, 14))
    with pytest.raises(ValueError, match="4 time steps, the table is for 8"):
        embed.full((4, 16, 28))
    with pytest.raises(ValueError, match="base_grid must be 3 positive ints"):
        ResizedSinusoidPositionEmbedding(16, (8, 0, 14))


def mae_sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
    """MAE's `get_1d_sincos_pos_embed_from_grid` (He et al., arXiv 2111.06377; mae_st, arXiv 2205.09113) in float64:
    `dim / 2` frequencies `omega_i = 1 / 10000**(i / (dim / 2))`, the sines of `pos * omega` then their cosines."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.einsum("m,d->md", positions.astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def separable_sincos_3d(grid: tuple[int, int, int], dim: int) -> np.ndarray:
    """The docstring's 3-D table: `dim_t = dim // 4` rounded down to even columns for the time index, then two equal
    halves of the rest for the row and the column index, each MAE's 1-D sin-cos; tokens in raster order (t, h, w)."""
    dim_t = (dim // 4) - (dim // 4) % 2
    dim_s = (dim - dim_t) // 2
    t, h, w = (axis.reshape(-1) for axis in np.indices(grid))  # raster order: w fastest
    return np.concatenate([mae_sincos_1d(t, dim_t), mae_sincos_1d(h, dim_s), mae_sincos_1d(w, dim_s)], axis=1)


@pytest.mark.parametrize(
    ("grid", "dim"), [((2, 3, 4), 16), ((8, 14, 14), 384), ((1, 1, 5), 16), ((4, 2, 2), 768), ((3, 5, 2), 20)]
)
def test_sincos_3d_matches_the_separable_formula(grid, dim):
    table = sincos_3d_table(grid, dim)
    expected = separable_sincos_3d(grid, dim)
    assert table.shape == expected.shape
    np.testing.assert_allclose(table.numpy(), expected.astype(np.float32), rtol=0, atol=1e-7)


def test_sincos_3d_entries_by_hand():
    """Grid (2, 3, 4), width 16: 4 temporal columns (frequencies 1 and 1/100), 6 for h and 6 for w (frequencies 1,
    10000**(-1/3), 10000**(-2/3)). Token (t=1, h=2, w=3) is row 1*12 + 2*4 + 3 = 23."""
    table = sincos_3d_table((2, 3, 4), 16)
    row = table[23].double()
    by_hand = {
        0: 0.8414709848,  # sin(1 * 1)
        1: 0.0099998333,  # sin(1 / 100)
        2: 0.5403023059,  # cos(1 * 1)
        3: 0.9999500004,  # cos(1 / 100)
        4: 0.9092974268,  # sin(2 * 1)
        5: 0.0926985008,  # sin(2 * 10000**(-1/3)) = sin(0.0928318)
        7: -0.4161468365,  # cos(2 * 1)
        9: 0.9999907168,  # cos(2 * 10000**(-2/3))
        10: 0.1411200081,  # sin(3 * 1)
        11: 0.1387981011,  # sin(3 * 10000**(-1/3))
        13: -0.9899924966,  # cos(3 * 1)
    }
    for column, value in by_hand.items():
        assert float(row[column]) == pytest.approx(value, abs=1e-7), column
    # the first token sits at position 0 on every axis: sines 0, cosines 1
    zero = [0.0, 0.0, 1.0, 1.0] + ([0.0] * 3 + [1.0] * 3) * 2
    assert table[0].tolist() == zero
