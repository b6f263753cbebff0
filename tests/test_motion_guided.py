"""tubemask.motion_guided: the masker contract, the mask following the motion (oracle and block-matching flow),
sub-cell motion accumulating, the base slot, fixed counts per slot, and the pure pieces (the Gaussian base map,
the bilinear warp, the top-k with generator tie-breaks)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from test_masking import SETTINGS, MaskerConformance, gen, ratios

from tubemask.masking import choose_k, draw_mask
from tubemask.motion_guided import (
    BlockMatchingFlow,
    ConstantFlow,
    MotionGuidedMasker,
    carry_visibility,
    gaussian_visibility,
    top_cells,
    warp_map,
)


class TestMotionGuidedMasker(MaskerConformance):
    masker_cls = MotionGuidedMasker

    def expected_count(self, r, grid):
        t, h, w = grid
        return int(r * h * w) * t


class TestMotionGuidedMaskerFirstSlot(TestMotionGuidedMasker):
    def make_masker(self, mask_ratio):
        return MotionGuidedMasker(mask_ratio, base_slot="first")


def translating_clip(batch=2, slots=4, cells=8, patch=4, step=1, seed=0):
    """A smooth random texture that moves right by `step` cells per time slot (tubelet 2), edges replicated."""
    g = torch.Generator().manual_seed(seed)
    size = cells * patch
    base = torch.nn.functional.interpolate(
        torch.rand(batch, 3, 8, 8 + slots * step * 2, generator=g),
        size=(size, size + slots * step * patch),
        mode="bilinear",
    )
    frames = []
    for k in range(slots):
        shift = k * step * patch
        window = base[..., slots * step * patch - shift : slots * step * patch - shift + size]
        frames += [window, window]
    return torch.stack(frames, dim=2)  # [b 3 2*slots size size]


def carry_cells(values, flow):
    """`out[q] = values[round(q + flow[q])]` on the token grid, 0 where the source is outside: a whole-cell warp."""
    b, h, w = values.shape
    ys = (torch.arange(h).view(1, h, 1) + flow[..., 0]).round().long()
    xs = (torch.arange(w).view(1, 1, w) + flow[..., 1]).round().long()
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    ids = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(b, h * w)
    return torch.gather(values.reshape(b, h * w), 1, ids).view(b, h, w) * inside, inside


def agreement_with_warp(mask, grid, flow):
    """Share of the hidden cells of slots 1.. that are the warp of the previous slot's, over cells whose source is
    inside the grid."""
    b, (t, h, w) = mask.shape[0], grid
    cells = mask.view(b, t, h, w).float()
    hits = total = 0
    for k in range(1, t):
        carried, inside = carry_cells(cells[:, k - 1], flow[:, k - 1])
        hidden = cells[:, k].bool() & inside
        hits += int((hidden & carried.bool()).sum())
        total += int(hidden.sum())
    return hits / total


@pytest.mark.parametrize("base_slot", ["middle", "first"])
def test_hidden_cells_follow_the_oracle_flow(base_slot):
    video = translating_clip(batch=8)
    grid = (4, 8, 8)
    oracle = ConstantFlow(dx=1.0)
    masker = MotionGuidedMasker(0.75, flow=oracle, base_slot=base_slot)
    mask = draw_mask(masker, 8, grid, generator=gen(0), video=video)
    assert mask.view(8, 4, 64).sum(dim=2).tolist() == [[48] * 4] * 8
    assert agreement_with_warp(mask, grid, oracle(video, grid)) >= 0.95


def test_block_matching_recovers_the_translation_and_the_mask_follows_it():
    video = translating_clip(batch=8)  # the share is over 8 clips: which cells enter and leave varies per clip
    grid = (4, 8, 8)
    flow = BlockMatchingFlow()(video, grid)
    interior = flow[:, :, :, 1:]  # the first column's source is outside the frame
    right = (interior[..., 1] == -1.0) & (interior[..., 0] == 0.0)
    assert right.float().mean() >= 0.95
    ahead = BlockMatchingFlow()(video, grid, reverse=True)[:, :, :, :-1]  # the last column's content leaves
    assert ((ahead[..., 1] == 1.0) & (ahead[..., 0] == 0.0)).float().mean() >= 0.95
    mask = draw_mask(MotionGuidedMasker(0.75), 8, grid, generator=gen(1), video=video)
    assert agreement_with_warp(mask, grid, ConstantFlow(dx=1.0)(video, grid)) >= 0.95


def test_sub_cell_motion_accumulates():
    """Half a cell per slot: two slots after (before) the base, the mask has moved one cell right (left). Rounding
    each slot's flow to whole cells never moves it, or moves it by a duplicated/dropped pattern."""
    grid = (5, 8, 8)  # base slot 2
    video = torch.rand(8, 3, 10, 32, 32, generator=gen(5))  # patch 4: half a cell is 2 pixels
    mask = MotionGuidedMasker(0.75, flow=ConstantFlow(dx=0.5))(8, grid, generator=gen(6), video=video)
    cells = mask.view(8, *grid)
    later = (cells[:, 4, :, 1:] == cells[:, 2, :, :-1]).float().mean()
    earlier = (cells[:, 0, :, :-1] == cells[:, 2, :, 1:]).float().mean()
    still = (cells[:, 4] == cells[:, 2]).float().mean()
    assert later >= 0.95 and earlier >= 0.95 and still < 0.8


def test_base_slot_is_the_middle_one_by_default():
    grid = (4, 6, 6)
    video = torch.rand(3, 3, 8, 24, 24, generator=gen(7))
    drawn = ~choose_k(3, 36, 36 - int(0.75 * 36), generator=gen(8)).view(3, 6, 6)
    for base_slot, where in [("middle", 2), ("first", 0)]:
        masker = MotionGuidedMasker(0.75, flow=ConstantFlow(dy=0.3, dx=-0.6), base_slot=base_slot)
        cells = masker(3, grid, generator=gen(8), video=video).view(3, *grid)
        assert torch.equal(cells[:, where], drawn)
        assert not torch.equal(cells, drawn[:, None].expand_as(cells)), "the other slots moved"


def test_the_generator_alone_decides():
    video = translating_clip(batch=4, step=1)
    masker = MotionGuidedMasker(0.5, flow=ConstantFlow(dx=0.25))
    first = masker(4, (4, 8, 8), generator=gen(9), video=video)
    assert torch.equal(first, masker(4, (4, 8, 8), generator=gen(9), video=video))
    assert not torch.equal(first, masker(4, (4, 8, 8), generator=gen(10), video=video))


@SETTINGS
@given(
    r=ratios,
    grid=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    patch=st.integers(1, 4),
    dy=st.floats(-2.0, 2.0),
    dx=st.floats(-2.0, 2.0),
    base_slot=st.sampled_from(["middle", "first"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_slot_hides_the_fixed_count(r, grid, patch, dy, dx, base_slot, seed):
    t, h, w = grid
    video = torch.rand(2, 3, 2 * t, h * patch, w * patch, generator=gen(seed))
    masker = MotionGuidedMasker(r, flow=ConstantFlow(dy=dy, dx=dx), base_slot=base_slot)
    mask = masker(2, grid, generator=gen(seed), video=video)
    assert mask.view(2, t, h * w).sum(dim=2).tolist() == [[int(r * h * w)] * t] * 2


def test_static_clip_is_tube_masking():
    video = torch.rand(2, 3, 1, 16, 16).expand(2, 3, 8, 16, 16)
    mask = MotionGuidedMasker(0.5)(2, (4, 4, 4), generator=gen(2), video=video).view(2, 4, 16)
    assert torch.equal(mask, mask[:, :1].expand(2, 4, 16))


def test_unknown_base_slot_is_refused():
    # ValueError from the masker; TypeError first under whole-package type checking (`--jaxtyping-packages`)
    with pytest.raises((ValueError, TypeError), match="base_slot"):
        MotionGuidedMasker(0.5, base_slot="last")


@SETTINGS
@given(
    gh=st.integers(1, 6),
    gw=st.integers(1, 6),
    ph=st.integers(1, 6),
    pw=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_gaussian_map_ranks_the_visible_cells_first(gh, gw, ph, pw, seed):
    """Every visible cube sums more visibility than any hidden one, so the base slot keeps the draw."""
    shown = torch.randint(1, gh * gw + 1, (1,), generator=gen(seed)).item()
    visible = choose_k(2, gh * gw, shown, generator=gen(seed)).view(2, gh, gw)
    values = gaussian_visibility(visible, (ph, pw))
    assert values.shape == (2, gh * ph, gw * pw) and torch.allclose(values.flatten(1).amax(dim=1), torch.ones(2))
    sums = F.avg_pool2d(values[:, None], (ph, pw))[:, 0]
    assert bool((sums[visible].view(2, -1).amin(dim=1) > sums.masked_fill(visible, 0).flatten(1).amax(dim=1)).all())


def test_warp_map_moves_a_map_by_whole_and_half_pixels():
    values = torch.zeros(1, 3, 4)
    values[0, 1, 1] = 1.0
    left = torch.tensor([0.0, -1.0]).expand(1, 3, 4, 2)  # sources one pixel to the left: the map moves right
    moved = warp_map(values, left)
    assert moved[0, 1, 2] == 1.0 and moved.sum() == 1.0
    half = warp_map(values, left / 2)
    assert torch.allclose(half[0, 1], torch.tensor([0.0, 0.5, 0.5, 0.0]))
    twice = warp_map(half, left / 2)  # blurred, but centred where one whole step puts it: the motion accumulates
    assert torch.allclose(twice[0, 1], torch.tensor([0.0, 0.25, 0.5, 0.25]), atol=1e-6)
    assert torch.allclose(warp_map(values, torch.zeros(1, 3, 4, 2)), values, atol=1e-6)  # grid_sample rounding


def test_warp_map_fills_what_enters_from_outside():
    values, fill = torch.ones(1, 2, 3), torch.full((1, 2, 3), 0.25)
    left = torch.tensor([0.0, -1.0]).expand(1, 2, 3, 2)
    assert warp_map(values, left)[0, :, 0].tolist() == [0.0, 0.0]
    filled = warp_map(values, left, fill=fill)
    assert filled[0, :, 0].tolist() == [0.25, 0.25] and filled[0, :, 1:].eq(1.0).all()
    assert torch.allclose(warp_map(values, left / 2, fill=fill)[0, :, 0], torch.tensor([0.625, 0.625]))


def test_carry_visibility_runs_both_ways_from_the_base():
    base = torch.rand(1, 2, 6, generator=gen(11))
    step = torch.tensor([0.0, -1.0]).expand(1, 4, 2, 6, 2)  # content moves one pixel right per slot
    maps = carry_visibility(base, step, -step, base_slot=2)
    assert torch.equal(maps[:, 2], base)
    assert torch.allclose(maps[:, 4, :, 2:], base[..., :-2]) and torch.allclose(maps[:, 0, :, :-2], base[..., 2:])
    with pytest.raises(ValueError, match="base_slot=2"):
        carry_visibility(base, step, None, base_slot=2)


def test_top_cells_orders_ties_by_the_noise():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    noise = torch.tensor([[0.5, 0.9, 0.1, 0.4, 0.0]], dtype=torch.float64)
    assert top_cells(scores, 3, noise).tolist() == [[False, True, True, True, False]]
    assert top_cells(scores, 2, noise).tolist() == [[False, False, True, True, False]]
    assert math.isclose(float(top_cells(torch.zeros(3, 7), 2, torch.rand(3, 7, generator=gen(0))).sum()), 6.0)
