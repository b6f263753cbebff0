"""tubemask.hog against plain NumPy references of MaskFeat's official HOG (one pixel by pixel from the definition,
one re-stating SlowFast's `HOGLayerC` array-wise), its defaults against MaskFeat's, and as a target piece inside a
pretraining model."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tubemask
from tubemask.hog import HOGTarget, hog_cells


def numpy_hog(image: np.ndarray, nbins: int, cell: int, window: int | None) -> np.ndarray:
    """One `[c h w]` image -> `[c nbins h/cell w/cell]`, pixel by pixel, from MaskFeat's definition: Sobel `gx` left
    minus right, `gy` top minus bottom (mirrored borders), angle `atan2(gx, gy)`, bin `floor(angle/pi*nbins) mod
    nbins`, magnitude votes (times the tiled Gaussian if `window`) summed per cell, each cell L2-normalised."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    out = np.zeros((c, nbins, h // cell, w // cell))
    if window:
        n = np.arange(window) - (window - 1) / 2
        g = np.exp(-0.5 * (n / (window / 2)) ** 2)
        gauss = np.outer(g, g) / np.outer(g, g).sum()
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                p = padded[ch, y : y + 3, x : x + 3]  # centred on (y, x)
                gx = (p[0, 0] + 2 * p[1, 0] + p[2, 0]) - (p[0, 2] + 2 * p[1, 2] + p[2, 2])
                gy = (p[0, 0] + 2 * p[0, 1] + p[0, 2]) - (p[2, 0] + 2 * p[2, 1] + p[2, 2])
                magnitude = math.hypot(gx, gy)
                if window:
                    magnitude *= gauss[y % window, x % window]
                angle = math.atan2(gx, gy)  # from the y axis, in (-pi, pi]
                b = math.floor(angle / math.pi * nbins) % nbins
                out[ch, b, y // cell, x // cell] += magnitude
    norms = np.sqrt((out**2).sum(axis=1, keepdims=True))
    return out / np.maximum(norms, 1e-12)


def numpy_hog_layer_c(images: np.ndarray, nbins: int = 9, pool: int = 8) -> np.ndarray:
    """`[b c h w]` -> `[b c nbins h/pool w/pool]`: a second statement, array-wise, of the computation of SlowFast's
    `HOGLayerC` (slowfast/models/operators.py) as MaskFeat's video model builds it (no Gaussian): reflect-pad 1,
    cross-correlate each channel with the kernel `kx` and its transpose, magnitude the norm of `(gx, gy)`, phase
    `atan2(gx, gy) / pi * nbins`, one vote in bin `floor(phase) mod nbins`, sum-pool `pool x pool`, L2 per cell."""
    b, c, h, w = images.shape
    kx = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    ky = kx.T
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # [b c h w 3 3]
    gx = np.einsum("bchwij,ij->bchw", patches, kx)
    gy = np.einsum("bchwij,ij->bchw", patches, ky)
    norm = np.linalg.norm(np.stack([gx, gy], axis=-1), axis=-1)
    phase = np.arctan2(gx, gy) / np.pi * nbins
    index = np.mod(np.floor(phase).astype(np.int64), nbins)
    votes = np.zeros((b, c, nbins, h, w))
    bb, cc, yy, xx = np.indices((b, c, h, w))
    np.add.at(votes, (bb, cc, index, yy, xx), norm)
    cells = votes.reshape(b, c, nbins, h // pool, pool, w // pool, pool).sum(axis=(4, 6))
    return cells / np.maximum(np.linalg.norm(cells, axis=2, keepdims=True), 1e-12)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    nbins=st.integers(2, 12),
    cell=st.sampled_from([2, 4]),
    gaussian=st.booleans(),
)
def test_hog_cells_match_the_numpy_reference(seed, nbins, cell, gaussian):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    window = 2 * cell if gaussian else None
    got = hog_cells(torch.from_numpy(image), nbins=nbins, cell_size=cell, window=window)
    for i in range(2):
        want = numpy_hog(image[i].astype(np.float64), nbins, cell, window)
        np.testing.assert_allclose(got[i].numpy(), want, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 4), cols=st.integers(1, 4))
def test_hog_cells_defaults_match_maskfeats_hog_layer(seed, rows, cols):
    """Defaults (9 bins, 8-pixel cells, no window) against the re-statement of `HOGLayerC`, on random images."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (2, 3, 8 * rows, 8 * cols)).astype(np.float32)
    got = hog_cells(torch.from_numpy(images))
    np.testing.assert_allclose(got.numpy(), numpy_hog_layer_c(images.astype(np.float64)), atol=1e-5)


def test_an_edge_votes_in_maskfeats_bin():
    """The angle is measured from the y axis, `atan2(gx, gy)`: with 9 bins of 20 degrees a vertical edge (gradient
    along x, 90 degrees) votes in bin 4 and a horizontal edge (gradient along y, 0 degrees) in bin 0."""
    image = torch.zeros(1, 1, 8, 8)
    image[..., :, 4:] = 1.0  # a vertical edge
    cells = hog_cells(image)
    assert cells[0, 0, :, 0, 0].argmax() == 4 and cells[0, 0, 4, 0, 0] == pytest.approx(1.0)
    cells = hog_cells(image.transpose(-1, -2))  # a horizontal edge
    assert cells[0, 0, :, 0, 0].argmax() == 0 and cells[0, 0, 0, 0, 0] == pytest.approx(1.0)
    # a ramp whose gradient points 15 degrees off the x axis: 75 degrees from the y axis, bin 3 (not 0) of 9
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = (x * math.cos(math.radians(15)) + y * math.sin(math.radians(15))) / 32
    cells = hog_cells(ramp.view(1, 1, 16, 16), cell_size=16)
    assert cells[0, 0, :, 0, 0].argmax() == 3


def test_defaults_are_maskfeats():
    """9 bins, cells of a fixed 8 pixels (one per cube at 8-pixel patches, 2 x 2 at 16), no Gaussian window."""
    target = HOGTarget()
    assert (target.nbins, target.cell_size, target.gaussian) == (9, 8, False)
    assert target.width(tubelet_size=2, patch_size=8, channels=3) == 3 * 9
    assert target.width(tubelet_size=2, patch_size=16, channels=3) == 2 * 2 * 3 * 9


def test_default_target_is_the_unweighted_hog_of_8_pixel_cells():
    """At 8-pixel patches each cube's target is the HOG of its one 8-pixel cell, with no Gaussian weighting."""
    g = torch.Generator().manual_seed(2)
    video = torch.rand(1, 3, 2, 16, 16, generator=g)
    ids = torch.arange(4).view(1, 4)
    out = HOGTarget()(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    cells = torch.from_numpy(numpy_hog_layer_c(video[:, :, 0].double().numpy())).float()  # [1 3 9 2 2]
    torch.testing.assert_close(out[0], cells[0].permute(2, 3, 0, 1).reshape(4, 27), atol=1e-5, rtol=1e-5)
    weighted = HOGTarget(gaussian=True)(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    assert not torch.allclose(weighted, out, atol=1e-3)


def test_the_default_has_no_gaussian_window():
    """MaskFeat's video model never passes `HOGLayerC` a `gaussian_window`; the default target is unweighted."""
    g = torch.Generator().manual_seed(3)
    video = torch.rand(1, 3, 2, 16, 16, generator=g)
    ids = torch.zeros(1, 1, dtype=torch.long)  # the one cube of a 16-pixel patch
    kwargs = dict(tubelet_size=2, patch_size=16, mean=None, std=None)
    torch.testing.assert_close(HOGTarget()(video, ids, **kwargs), HOGTarget(gaussian=False)(video, ids, **kwargs))


def test_target_layout_and_ids():
    """The target of cube (t, y, x) is the HOG of the first frame of its tubelet, cells (cy cx c bin)."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 4, 16, 16, generator=g)
    target = HOGTarget(nbins=5, cell_size=4)
    k = target.width(tubelet_size=2, patch_size=8, channels=3)
    assert k == 2 * 2 * 3 * 5
    ids = torch.tensor([[0, 5, 7], [3, 4, 6]])
    out = target(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    assert out.shape == (2, 3, k)
    for b in range(2):
        for j, cube in enumerate(ids[b].tolist()):
            t, y, x = cube // 4, (cube % 4) // 2, cube % 2
            cells = hog_cells(video[b : b + 1, :, 2 * t], nbins=5, cell_size=4)[0]  # [c bins 4 4]
            block = cells[:, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].permute(2, 3, 0, 1).reshape(-1)
            torch.testing.assert_close(out[b, j], block)


@pytest.mark.parametrize("gaussian", [False, True])
def test_target_undoes_the_input_normalisation(gaussian):
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(1, 3, 2, 8, 8, generator=g)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)
    ids = torch.arange(1).view(1, 1)
    target = HOGTarget(nbins=6, cell_size=4, gaussian=gaussian)
    a = target(normalised, ids, tubelet_size=2, patch_size=8, mean=mean, std=std)
    b = target(pixels, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and the official code's choice, HOG of the normalised clip, gives the same histograms (per-channel scale)
    window = 8 if gaussian else None
    raw, norm = (hog_cells(v[:, :, 0], nbins=6, cell_size=4, window=window) for v in (pixels, normalised))
    torch.testing.assert_close(norm, raw, atol=1e-5, rtol=1e-5)


def test_a_pretraining_model_learns_with_hog_targets():
    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=8, target=HOGTarget())
    video = torch.randn(2, 3, 4, 16, 16)
    masker = tubemask.TubeMasker(0.75)
    mask = masker(2, model.grid(video.shape), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        out = model(video, mask)
        assert out.target.shape == (2, 6, 3 * 9)  # 3 of 4 cubes masked in each of 2 time slots; one 8-px cell each
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="nbins=0"):
        HOGTarget(nbins=0)
    with pytest.raises(ValueError, match="patch_size=12 is not a multiple of cell_size=8"):
        HOGTarget().width(tubelet_size=2, patch_size=12, channels=3)
    with pytest.raises(ValueError, match="cell_size=0"):
        HOGTarget(cell_size=0)
    with pytest.raises(ValueError, match="multiples of 8"):
        hog_cells(torch.zeros(1, 1, 12, 12), cell_size=8)
