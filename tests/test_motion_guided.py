"""tubemask.motion_guided: the masker contract, the mask following the motion (oracle and block-matching flow),
and block matching recovering a known translation."""

import math

import torch
from test_masking import MaskerConformance, gen

from tubemask.masking import draw_mask
from tubemask.motion_guided import BlockMatchingFlow, ConstantFlow, MotionGuidedMasker, warp_cells


class TestMotionGuidedMasker(MaskerConformance):
    masker_cls = MotionGuidedMasker

    def expected_count(self, r, grid):
        t, h, w = grid
        return int(r * h * w) * t


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


def agreement_with_warp(mask, grid, flow):
    """Share of the hidden cells of slots 1.. that are the warp of the previous slot's, over cells whose source is
    inside the grid."""
    b, (t, h, w) = mask.shape[0], grid
    cells = mask.view(b, t, h, w).float()
    hits = total = 0
    for k in range(1, t):
        carried = warp_cells(cells[:, k - 1], flow[:, k - 1])
        ys = torch.arange(h).view(1, h, 1) + flow[:, k - 1, ..., 0]
        xs = torch.arange(w).view(1, 1, w) + flow[:, k - 1, ..., 1]
        inside = (ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)
        hidden = cells[:, k].bool() & inside
        hits += int((hidden & carried.bool()).sum())
        total += int(hidden.sum())
    return hits / total


def test_hidden_cells_follow_the_oracle_flow():
    video = translating_clip()
    grid = (4, 8, 8)
    oracle = ConstantFlow(dx=1.0)
    mask = draw_mask(MotionGuidedMasker(0.75, flow=oracle), 2, grid, generator=gen(0), video=video)
    assert mask.view(2, 4, 64).sum(dim=2).tolist() == [[48] * 4] * 2
    assert agreement_with_warp(mask, grid, oracle(video, grid)) == 1.0


def test_block_matching_recovers_the_translation_and_the_mask_follows_it():
    video = translating_clip()
    grid = (4, 8, 8)
    flow = BlockMatchingFlow()(video, grid)
    interior = flow[:, :, :, 1:]  # the first column's source is outside the frame
    right = (interior[..., 1] == -1.0) & (interior[..., 0] == 0.0)
    assert right.float().mean() >= 0.95
    mask = draw_mask(MotionGuidedMasker(0.75), 2, grid, generator=gen(1), video=video)
    assert agreement_with_warp(mask, grid, ConstantFlow(dx=1.0)(video, grid)) >= 0.95


def test_static_clip_is_tube_masking():
    video = torch.rand(2, 3, 1, 16, 16).expand(2, 3, 8, 16, 16)
    mask = MotionGuidedMasker(0.5)(2, (4, 4, 4), generator=gen(2), video=video).view(2, 4, 16)
    assert torch.equal(mask, mask[:, :1].expand(2, 4, 16))


def test_warp_cells_moves_a_map():
    values = torch.zeros(1, 3, 3)
    values[0, 1, 1] = 1.0
    moved = warp_cells(values, torch.tensor([0.0, -1.0]).expand(1, 3, 3, 2))  # sources one cell to the left
    assert moved[0, 1, 2] == 1.0 and moved.sum() == 1.0
    assert math.isclose(float(warp_cells(values, torch.zeros(1, 3, 3, 2)).sum()), 1.0)


def test_warp_cells_outside_value():
    values = torch.ones(1, 2, 2)
    moved = warp_cells(values, torch.tensor([0.0, -1.0]).expand(1, 2, 2, 2), outside=0.5)
    assert moved[0, :, 0].tolist() == [0.5, 0.5] and moved[0, :, 1].tolist() == [1.0, 1.0]
