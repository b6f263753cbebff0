"""tubemask.hog against a plain NumPy reference written from the definition (loops, np.arctan2), and as a target
piece inside a pretraining model."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tubemask
from tubemask.hog import HOGTarget, hog_cells


def numpy_hog(image: np.ndarray, nbins: int, cell: int, window: int | None) -> np.ndarray:
    """One `[c h w]` image -> `[c nbins h/cell w/cell]`, pixel by pixel."""
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
                gx = (p[0, 2] + 2 * p[1, 2] + p[2, 2]) - (p[0, 0] + 2 * p[1, 0] + p[2, 0])
                gy = (p[2, 0] + 2 * p[2, 1] + p[2, 2]) - (p[0, 0] + 2 * p[0, 1] + p[0, 2])
                magnitude = math.hypot(gx, gy)
                if window:
                    magnitude *= gauss[y % window, x % window]
                angle = math.atan2(gy, gx) % math.pi
                b = min(int(angle / math.pi * nbins), nbins - 1)
                out[ch, b, y // cell, x // cell] += magnitude
    norms = np.sqrt((out**2).sum(axis=1, keepdims=True))
    return out / np.maximum(norms, 1e-12)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    nbins=st.integers(2, 12),
    cell=st.sampled_from([2, 4]),
    gaussian=st.booleans(),
)
def test_hog_cells_match_the_numpy_reference(seed, nbins, cell, gaussian):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (2, 3, 8, 8))
    window = 2 * cell if gaussian else None
    got = hog_cells(torch.tensor(image, dtype=torch.float32), nbins=nbins, cell_size=cell, window=window)
    for i in range(2):
        want = numpy_hog(image[i], nbins, cell, window)
        np.testing.assert_allclose(got[i].numpy(), want, atol=1e-5)


def test_an_edge_votes_in_its_orientation():
    image = torch.zeros(1, 1, 8, 8)
    image[..., :, 4:] = 1.0  # a vertical edge: horizontal gradient, angle 0
    cells = hog_cells(image, nbins=4, cell_size=8)
    assert cells[0, 0, :, 0, 0].argmax() == 0 and cells[0, 0, 0, 0, 0] == pytest.approx(1.0)
    cells = hog_cells(image.transpose(-1, -2), nbins=4, cell_size=8)  # a horizontal edge: angle pi/2
    assert cells[0, 0, :, 0, 0].argmax() == 2


def test_target_layout_and_ids():
    """The target of cube (t, y, x) is the HOG of the first frame of its tubelet, cells (cy cx c bin)."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 4, 16, 16, generator=g)
    target = HOGTarget(nbins=5, cells_per_side=2, gaussian=False)
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


def test_target_undoes_the_input_normalisation():
    g = torch.Generator().manual_seed(1)
    pixels = torch.rand(1, 3, 2, 8, 8, generator=g)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)
    ids = torch.arange(1).view(1, 1)
    target = HOGTarget(nbins=6, cells_per_side=2)
    a = target(normalised, ids, tubelet_size=2, patch_size=8, mean=mean, std=std)
    b = target(pixels, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


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
        assert out.target.shape == (2, 6, 2 * 2 * 3 * 9)  # 3 of 4 cells masked in each of 2 time slots
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="nbins=0"):
        HOGTarget(nbins=0)
    with pytest.raises(ValueError, match="multiple of cells_per_side"):
        HOGTarget(cells_per_side=3).width(tubelet_size=2, patch_size=8, channels=3)
    with pytest.raises(ValueError, match="multiples of 8"):
        hog_cells(torch.zeros(1, 1, 12, 12), cell_size=8)
