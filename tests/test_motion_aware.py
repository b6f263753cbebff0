"""tubemask.motion_aware: the masker contract, and that the selection follows motion (EVEREST's premise)."""

import math

import pytest
import torch
from test_masking import MaskerConformance, gen

import tubemask
from tubemask.masking import draw_mask
from tubemask.motion_aware import (
    MotionAwareMasker,
    cube_motion_energy,
    rank_cubes,
    shuffle_leading,
    token_motion_energy,
)
from tubemask.tokenizers import CubeEmbedding, patchify


class TestMotionAwareMasker(MaskerConformance):
    masker_cls = MotionAwareMasker

    def expected_count(self, r, grid):
        return int(r * math.prod(grid))


class TestMotionAwareRandomSplit(TestMotionAwareMasker):
    """EVEREST's official split: the encoder's cubes drawn at random among the kept ones."""

    def make_masker(self, mask_ratio):
        query = mask_ratio / 2 if isinstance(mask_ratio, float) and mask_ratio / 2 > 0 else None
        return MotionAwareMasker(mask_ratio, query_ratio=query, visible="random")


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


def test_random_split_keeps_the_same_cubes_and_draws_the_encoders_among_them():
    """`visible="random"` keeps exactly the cubes `"top"` keeps (same generator), hides the rest from both sides, and
    over many draws shows the encoder every kept cube about equally often, never a dropped one."""
    video = torch.rand(2, 3, 8, 32, 32, generator=gen(2))  # every cube changes by its own amount: no ties
    grid = (4, 8, 8)
    top = MotionAwareMasker(mask_ratio=0.9, query_ratio=0.2)
    split = MotionAwareMasker(mask_ratio=0.9, query_ratio=0.2, visible="random")
    visible, queried = 256 - int(0.9 * 256), int(0.2 * 256)
    mask, decoder_mask = split.decoder_mask(2, grid, generator=gen(3), video=video)
    top_mask, top_decoder_mask = top.decoder_mask(2, grid, generator=gen(3), video=video)
    kept, top_kept = ~mask | ~decoder_mask, ~top_mask | ~top_decoder_mask
    assert torch.equal(kept, top_kept) and kept.sum(dim=1).tolist() == [visible + queried] * 2
    assert (~mask).sum(dim=1).tolist() == [visible] * 2 and not (~mask & ~decoder_mask).any()
    assert not torch.equal(mask, top_mask)

    g = gen(4)
    seen = sum(split(2, grid, generator=g, video=video).logical_not().long() for _ in range(600))
    share = seen[kept] / 600  # each kept cube is the encoder's in about visible / kept of the draws
    assert seen[~kept].sum() == 0
    assert (share - visible / (visible + queried)).abs().max() < 0.1
    again = split.decoder_mask(2, grid, generator=gen(3), video=video)
    assert torch.equal(again[0], mask) and torch.equal(again[1], decoder_mask)


def test_shuffle_leading_permutes_only_the_head():
    ids = torch.arange(12).expand(3, 12)
    out = shuffle_leading(ids, 5, generator=gen(0))
    assert torch.equal(out[:, 5:], ids[:, 5:])
    assert torch.equal(out[:, :5].sort(dim=1).values, ids[:, :5]) and not torch.equal(out[:, :5], ids[:, :5])
    with pytest.raises(ValueError, match="k=13"):
        shuffle_leading(ids, 13)


def test_bad_visible_rule():
    with pytest.raises(ValueError, match="visible='best'"):
        MotionAwareMasker(visible="best")


def test_token_energy_is_everests_distance_between_adjacent_slots():
    """Against the official definition written out: slot k's distance is ||x[k] - x[k-1]||, slot 0 takes slot 1's."""
    tokens = torch.randn(2, 3 * 4, 5, generator=gen(0))
    energy = token_motion_energy(tokens, (3, 2, 2)).view(2, 3, 4)
    x = tokens.view(2, 3, 4, 5)
    for t in range(3):
        before, after = (0, 1) if t == 0 else (t - 1, t)
        torch.testing.assert_close(energy[:, t], torch.linalg.vector_norm(x[:, after] - x[:, before], dim=-1))
    assert token_motion_energy(tokens[:, :4], (1, 2, 2)).count_nonzero() == 0  # one slot: no motion
    with pytest.raises(ValueError, match="12 tokens for a"):
        token_motion_energy(tokens, (2, 2, 2))


def test_embedding_energy_of_an_identity_embedding_is_the_cube_pixel_distance():
    """With a cube embedding that copies the cube's values, the ranking measure is the L2 distance of the raw cubes."""
    video = torch.rand(2, 3, 8, 16, 16, generator=gen(1))
    embed = CubeEmbedding(2 * 4 * 4 * 3, tubelet_size=2, patch_size=4)
    with torch.no_grad():
        embed.proj.weight.copy_(torch.eye(96).view(96, 2, 4, 4, 3).permute(0, 4, 1, 2, 3))
        embed.proj.bias.zero_()
    cubes = patchify(video, tubelet_size=2, patch_size=4).view(2, 4, 16, 96)
    assert torch.allclose(embed(video).view(2, 4, 16, 96), cubes, atol=1e-6)
    distance = torch.linalg.vector_norm(cubes[:, 1:] - cubes[:, :-1], dim=-1)
    expected = torch.cat([distance[:, :1], distance], dim=1).view(2, 64)
    torch.testing.assert_close(MotionAwareMasker(embed=embed).energy(video, (4, 4, 4)), expected)


def test_a_models_own_embedding_puts_the_encoder_on_the_moving_square():
    """EVEREST's measure on a (randomly initialised) model's tokenizer: static cubes embed alike, so the encoder's
    cubes are on the square as with pixel energy, and ranking takes no gradient."""
    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=4)
    video = square_clip()
    grid = model.grid(video.shape)  # (4, 8, 8)
    masker = MotionAwareMasker(mask_ratio=0.95, query_ratio=0.05, embed=model.tokenizer)
    mask, decoder_mask = masker.decoder_mask(4, grid, generator=gen(0), video=video)
    visible = ~mask
    on_square = (cube_motion_energy(video, grid) > 0) & visible
    assert on_square.sum() >= 0.9 * visible.sum()
    out = model(video, mask, decoder_mask=decoder_mask, num_masked=masker.num_masked(grid), num_queried=12)
    out.loss.backward()
    assert masker == MotionAwareMasker(mask_ratio=0.95, query_ratio=0.05)  # the module is not part of its identity
