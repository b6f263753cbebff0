"""tubemask.motion_aware: the masker contract, and that the selection follows motion (EVEREST's premise)."""

import math

import pytest
import torch
from test_masking import MaskerConformance, gen

import tubemask
from tubemask.masking import draw_mask
from tubemask.motion_aware import MotionAwareMasker, cube_motion_energy, rank_cubes


class TestMotionAwareMasker(MaskerConformance):
    masker_cls = MotionAwareMasker

    def expected_count(self, r, grid):
        return int(r * math.prod(grid))


def square_clip(batch=4, frames=8, size=32, side=8, seed=0):
    """A bright square moving right by 2 pixels a frame over a static random background."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(batch, 3, 1, size, size, generator=g).expand(batch, 3, frames, size, size).clone()
    for b in range(batch):
        y = int(torch.randint(0, size - side, (1,), generator=g))
        for t in range(frames):
            x = 2 * t + b
            video[b, :, t, y : y + side, x : x + side] = 3.0
    return video


def test_visible_cubes_sit_on_the_moving_square():
    """At least 90% of the encoder's cubes cover the square's path (where anything changes)."""
    video = square_clip()
    grid = (4, 8, 8)  # tubelet 2, patch 4
    masker = MotionAwareMasker(mask_ratio=0.95)
    mask = draw_mask(masker, 4, grid, generator=gen(0), video=video)
    energy = cube_motion_energy(video, grid)
    visible = ~mask
    on_square = (energy > 0) & visible
    assert visible.sum(dim=1).tolist() == [64 * 4 - int(0.95 * 256)] * 4
    assert on_square.sum() >= 0.9 * visible.sum()


def test_energy_is_zero_exactly_where_nothing_changes():
    video = torch.zeros(1, 3, 4, 8, 8)
    video[:, :, 2:, :4, :4] = 1.0  # the top-left 4x4 lights up at frame 2
    energy = cube_motion_energy(video, (2, 2, 2)).view(2, 2, 2)
    assert energy[1, 0, 0] > 0 and energy.count_nonzero() == 1  # only that cube, in the second tubelet


def test_decoder_takes_the_next_ranks_and_drops_the_rest():
    video = square_clip(batch=2)
    grid = (4, 8, 8)
    masker = MotionAwareMasker(mask_ratio=0.9, query_ratio=0.3)
    ranks = masker.ranks(2, grid, generator=gen(1), video=video)
    mask, decoder_mask = masker.decoder_mask(2, grid, generator=gen(1), video=video)
    visible, queried = 256 - int(0.9 * 256), int(0.3 * 256)
    for b in range(2):
        assert set((~mask[b]).nonzero().flatten().tolist()) == set(ranks[b, :visible].tolist())
        wanted = set(ranks[b, visible : visible + queried].tolist())
        assert set((mask[b] & ~decoder_mask[b]).nonzero().flatten().tolist()) == wanted
    assert masker.num_queried(grid) == queried and MotionAwareMasker(0.9).num_queried(grid) == int(0.9 * 256)


def test_static_clips_and_ties_use_the_generator():
    energy = torch.zeros(3, 10)
    a, b = rank_cubes(energy, generator=gen(5)), rank_cubes(energy, generator=gen(5))
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    assert torch.equal(a.sort(dim=1).values, torch.arange(10).expand(3, 10))
    energy = torch.tensor([[0.0, 2.0, 1.0, 2.0]])
    firsts = {tuple(rank_cubes(energy, generator=gen(s))[0, :2].tolist()) for s in range(40)}
    assert firsts == {(1, 3), (3, 1)}  # the tie at the top is broken both ways, the order below is kept


def test_pretraining_step_with_dual_masking():
    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=8)
    video = square_clip(batch=2, frames=8, size=32)
    grid = model.grid(video.shape)
    masker = MotionAwareMasker(mask_ratio=0.75, query_ratio=0.25)
    mask, decoder_mask = masker.decoder_mask(2, grid, generator=gen(2), video=video)
    out = model(
        video, mask, decoder_mask=decoder_mask, num_masked=masker.num_masked(grid), num_queried=masker.num_queried(grid)
    )
    assert out.pred.shape[1] == masker.num_queried(grid) == int(0.25 * math.prod(grid))
    out.loss.backward()


def test_bad_query_ratio():
    with pytest.raises(ValueError, match="query_ratio=0.95"):
        MotionAwareMasker(mask_ratio=0.9, query_ratio=0.95)
    with pytest.raises(ValueError, match="query_ratio"):
        MotionAwareMasker(mask_ratio=0.9, query_ratio=0.0)
