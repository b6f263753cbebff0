"""Property tests of the maskers: counts, structure, partition, reproducibility, uniformity, errors, and `draw_mask`.

`MaskerConformance` holds the contract every masker meets (True = masked, `Bool[b, t*h*w]`, raster `(t, h, w)` order,
`num_masked(grid)` tokens in every row, reproducible from the generator; with and without a clip for a content-aware
masker). It applies to any masker: a subclass names the masker and may add what is specific to it. The built-in
maskers and the content-aware `VarianceMasker` of docs/masking.md run through it; a user's masker can too (see
docs/masking.md, "Test your own masker").
"""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tubemask.masking import (
    FrameMasker,
    Masker,
    RandomMasker,
    RunningCellMasker,
    TubeMasker,
    choose_k,
    draw_mask,
    masked_units,
    running_cell_patterns,
)
from tubemask.tokens import split_ids

SETTINGS = settings(max_examples=40, deadline=None)
# The conformance tests are inherited by one subclass per masker, so hypothesis sees one function run from several
# classes; each run draws its grid from its own class, which makes that safe.
CONFORMANCE = settings(SETTINGS, suppress_health_check=[HealthCheck.differing_executors])

JUST_BELOW_ONE = math.nextafter(1.0, 0.0)
ratios = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9, 0.95, JUST_BELOW_ONE]),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
batch_sizes = st.integers(min_value=0, max_value=4)
seeds = st.integers(min_value=0, max_value=2**32 - 1)

BAD_RATIOS = [-0.1, -0.0001, 1.0, 1.5, float("nan"), float("inf"), -float("inf")]
WRONG_TYPE_RATIOS = [True, False, "0.5", None]
# Wrong *types* are refused by the maskers with ValueError; under whole-package type checking at test time
# (`pytest --jaxtyping-packages=tubemask,beartype.beartype`) the annotation check fires first, with a TypeError. Both
# messages name the argument.
WRONG_TYPE = (ValueError, TypeError)

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "masking.md"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def docs_namespace() -> dict:
    """What docs/masking.md defines: its ```python blocks run in order in one namespace (as test_docs_examples does)."""
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", DOCS_PAGE.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    namespace: dict = {"__name__": "docs.masking"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOCS_PAGE}:python-block-{i}", "exec"), namespace)
    return namespace


VarianceMasker = docs_namespace()["VarianceMasker"]  # the content-aware example, exactly as the page defines it


class MaskerConformance:
    """The contract of every masker. A subclass sets `masker_cls` (built as `masker_cls(mask_ratio=r)`) or overrides
    `make_masker`; it may override `expected_count`, `grids`, `large_grid`, `marginal_grid`, `uniform_marginal` and
    `video` (see docs/masking.md, "Test your own masker")."""

    masker_cls: type
    large_grid: tuple[int, int, int] = (2, 14, 14)
    side = st.integers(min_value=1, max_value=6)
    uniform_marginal: bool = True
    cube: tuple[int, int, int] = (1, 2, 2)  # pixels per token of the clips `video` makes

    def make_masker(self, mask_ratio: float) -> Masker:
        return self.masker_cls(mask_ratio=mask_ratio)

    def grids(self) -> st.SearchStrategy:
        return st.tuples(st.integers(1, 6), self.side, self.side)

    def expected_count(self, r: float, grid: tuple[int, int, int]) -> int | None:
        """Masked tokens per row worked out independently of the masker; None: check rows against `num_masked`."""
        return None

    def video(self, batch_size: int, grid: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
        """Normalised-looking clips `[b 3 t h w]` whose token grid is `grid`: independent standard normal pixels."""
        size = [g * c for g, c in zip(grid, self.cube, strict=True)]
        return torch.randn(batch_size, 3, *size, generator=gen(seed + 1))

    def sample(
        self, masker: Masker, batch_size: int, grid: tuple[int, int, int], *, video=None, **kwargs
    ) -> torch.Tensor:
        """The masker called directly; one that asks for the clip gets `video` (by default `self.video(...)`)."""
        if not masker.needs_video:
            return masker(batch_size, grid, **kwargs)
        video = self.video(batch_size, grid) if video is None else video
        return masker(batch_size, grid, video=video, **kwargs)

    def count(self, masker: Masker, r: float, grid: tuple[int, int, int]) -> int:
        expected = self.expected_count(r, grid)
        assert masker.num_masked(grid) == (expected if expected is not None else masker.num_masked(grid))
        return masker.num_masked(grid)

    # --- contract -------------------------------------------------------------------------------------------------

    def test_is_a_masker(self):
        masker = self.make_masker(0.5)
        assert isinstance(masker, Masker)
        assert masker.mask_ratio == 0.5
        assert isinstance(masker.needs_video, bool)

    @CONFORMANCE
    @given(data=st.data(), r=ratios, b=batch_sizes, seed=seeds)
    def test_dtype_shape_and_count(self, data, r, b, seed):
        grid = data.draw(self.grids())
        masker = self.make_masker(r)
        mask = self.sample(masker, b, grid, generator=gen(seed))
        n = math.prod(grid)
        assert mask.dtype == torch.bool
        assert mask.shape == (b, n)
        assert mask.device.type == "cpu"
        expected = self.count(masker, r, grid)
        assert mask.sum(dim=1).tolist() == [expected] * b
        assert expected < n, "at least one token stays visible"

    @CONFORMANCE
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_partition(self, data, r, b, seed):
        grid = data.draw(self.grids())
        n = math.prod(grid)
        masker = self.make_masker(r)
        mask = self.sample(masker, b, grid, generator=gen(seed))
        visible, masked = split_ids(mask)
        assert visible.shape[1] + masked.shape[1] == n
        assert masked.shape[1] == self.count(masker, r, grid)
        # the mask is rebuilt from its masked ids, and its complement from its visible ids
        empty = torch.zeros_like(mask)
        assert torch.equal(empty.scatter(1, masked, True), mask)
        assert torch.equal(empty.scatter(1, visible, True), ~mask)
        for row in range(b):
            vis, msk = visible[row], masked[row]
            assert bool((vis[1:] > vis[:-1]).all()) and bool((msk[1:] > msk[:-1]).all()), "sorted, no repeats"
            assert torch.equal(torch.sort(torch.cat([vis, msk])).values, torch.arange(n))
            assert not bool(mask[row, vis].any()) and bool(mask[row, msk].all())

    @CONFORMANCE
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_same_seed_same_mask(self, data, r, b, seed):
        grid = data.draw(self.grids())
        masker = self.make_masker(r)
        first = self.sample(masker, b, grid, generator=gen(seed))
        assert torch.equal(first, self.sample(masker, b, grid, generator=gen(seed)))

    def test_generator_leaves_global_rng_alone(self):
        masker = self.make_masker(0.5)
        video = self.video(3, self.large_grid)
        state = torch.get_rng_state()
        self.sample(masker, 3, self.large_grid, generator=gen(0), video=video)
        assert torch.equal(torch.get_rng_state(), state)

    def test_device_argument(self):
        masker = self.make_masker(0.5)
        a = self.sample(masker, 2, self.large_grid, generator=gen(1), device="cpu")
        b = self.sample(masker, 2, self.large_grid, generator=gen(1))
        assert a.device.type == "cpu" and torch.equal(a, b)
        assert self.sample(masker, 2, self.large_grid, device=torch.device("cpu")).shape == (
            2,
            math.prod(self.large_grid),
        )

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    def test_cuda_generator_and_device(self):
        masker = self.make_masker(0.5)
        g = torch.Generator(device="cuda")
        video = self.video(3, self.large_grid).cuda()
        a = self.sample(masker, 3, self.large_grid, generator=g.manual_seed(0), device="cuda", video=video)
        b = self.sample(masker, 3, self.large_grid, generator=g.manual_seed(0), device="cuda", video=video)
        assert a.device.type == "cuda" and a.dtype == torch.bool and torch.equal(a, b)
        assert a.sum(dim=1).tolist() == [masker.num_masked(self.large_grid)] * 3
        assert self.sample(masker, 3, self.large_grid, generator=g, device="cpu", video=video).device.type == "cpu"
        drawn = draw_mask(masker, 3, self.large_grid, generator=g.manual_seed(0), device="cuda", video=video)
        assert torch.equal(drawn, a)

    def test_rows_differ(self):
        mask = self.sample(self.make_masker(0.5), 8, self.large_grid, generator=gen(2))
        assert len({tuple(row.tolist()) for row in mask}) == 8

    def test_uniform_marginal(self):
        """Every token is masked with frequency num_masked / n (within 6 sigma of a binomial, fixed seed)."""
        if not self.uniform_marginal:
            pytest.skip("this masker prefers some positions")
        grid = self.marginal_grid()
        draws = 4000
        masker = self.make_masker(0.5)
        mask = self.sample(masker, draws, grid, generator=gen(3))
        p = masker.num_masked(grid) / math.prod(grid)
        freq = mask.double().mean(dim=0)
        sigma = math.sqrt(p * (1 - p) / draws)
        assert float((freq - p).abs().max()) < 6 * sigma

    def marginal_grid(self) -> tuple[int, int, int]:
        return (2, 4, 4)

    # --- the clip and draw_mask -----------------------------------------------------------------------------------

    def test_with_and_without_video(self):
        """A content-aware masker makes a valid mask from a clip and without one; a plain one is never given a clip."""
        masker = self.make_masker(0.5)
        grid, expected = self.large_grid, masker.num_masked(self.large_grid)
        video = self.video(3, grid)
        if masker.needs_video:
            for clip in (video, None):
                mask = masker(3, grid, generator=gen(4), video=clip)
                assert mask.dtype == torch.bool and mask.shape == (3, math.prod(grid))
                assert mask.sum(dim=1).tolist() == [expected] * 3
        direct = self.sample(masker, 3, grid, generator=gen(4), video=video)
        drawn = draw_mask(masker, 3, grid, generator=gen(4), video=video)
        assert torch.equal(drawn, direct)
        assert torch.equal(draw_mask(masker, 3, grid, generator=gen(4), device="cpu", video=video), direct)

    # --- errors ---------------------------------------------------------------------------------------------------

    @pytest.mark.parametrize("ratio", BAD_RATIOS)
    def test_bad_ratio(self, ratio):
        with pytest.raises(ValueError, match="mask_ratio"):
            self.make_masker(ratio)

    @pytest.mark.parametrize("ratio", WRONG_TYPE_RATIOS)
    def test_wrong_type_ratio(self, ratio):
        with pytest.raises(WRONG_TYPE, match="mask_ratio"):
            self.make_masker(ratio)

    @pytest.mark.parametrize("batch_size", [-1, -5, True])
    def test_bad_batch_size(self, batch_size):
        with pytest.raises(ValueError, match="batch_size"):
            self.make_masker(0.5)(batch_size, self.large_grid)

    @pytest.mark.parametrize("batch_size", [1.0, "2"])
    def test_wrong_type_batch_size(self, batch_size):
        with pytest.raises(WRONG_TYPE, match="batch_size"):
            self.make_masker(0.5)(batch_size, self.large_grid)

    @pytest.mark.parametrize("grid", [(0, 2, 2), (2, 0, 2), (2, 2, 0), (0, 0, 0), (-2, 2, 2), (True, 2, 2)])
    def test_bad_grid(self, grid):
        masker = self.make_masker(0.5)
        with pytest.raises(ValueError, match="grid"):
            masker(2, grid)
        with pytest.raises(ValueError, match="grid"):
            masker.num_masked(grid)

    @pytest.mark.parametrize("grid", [(), (2, 2), (2, 2, 2, 2), (2.0, 2, 2)])
    def test_wrong_type_grid(self, grid):
        masker = self.make_masker(0.5)
        with pytest.raises(WRONG_TYPE, match="grid"):
            masker(2, grid)
        with pytest.raises(WRONG_TYPE, match="grid"):
            masker.num_masked(grid)


class TestTubeMasker(MaskerConformance):
    masker_cls = TubeMasker

    def expected_count(self, r, grid):
        t, h, w = grid
        return int(r * h * w) * t

    @SETTINGS
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_constant_over_time(self, data, r, b, seed):
        t, h, w = grid = data.draw(self.grids())
        mask = TubeMasker(mask_ratio=r)(b, grid, generator=gen(seed)).view(b, t, h * w)
        assert torch.equal(mask, mask[:, :1].expand_as(mask))
        assert mask[:, 0].sum(dim=1).tolist() == [int(r * h * w)] * b

    def test_videomae_numbers(self):
        mask = TubeMasker(mask_ratio=0.9)(2, (8, 14, 14), generator=gen(0))
        assert mask.view(2, 8, 196).sum(dim=2).unique().tolist() == [176]
        assert mask.sum(dim=1).tolist() == [1408, 1408]


class TestFrameMasker(MaskerConformance):
    masker_cls = FrameMasker
    large_grid = (64, 2, 2)

    def expected_count(self, r, grid):
        t, h, w = grid
        return int(r * t) * h * w

    def marginal_grid(self):
        return (16, 1, 2)

    @SETTINGS
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_whole_slots(self, data, r, b, seed):
        t, h, w = grid = data.draw(self.grids())
        slots = FrameMasker(mask_ratio=r)(b, grid, generator=gen(seed)).view(b, t, h * w)
        full, empty = slots.all(dim=2), ~slots.any(dim=2)
        assert bool((full | empty).all()), "each slot is wholly masked or wholly visible"
        assert full.sum(dim=1).tolist() == [int(r * t)] * b


class TestRandomMasker(MaskerConformance):
    masker_cls = RandomMasker

    def expected_count(self, r, grid):
        return int(r * math.prod(grid))

    def test_chi_square(self):
        """Per-token counts against Binomial(draws, p): chi-square with n degrees of freedom stays under n + 6 sd.

        The fixed per-row count correlates tokens negatively, which only shrinks the statistic.
        """
        grid, draws = (2, 3, 4), 3000
        n = math.prod(grid)
        masker = RandomMasker(mask_ratio=0.4)
        p = masker.num_masked(grid) / n
        counts = masker(draws, grid, generator=gen(6)).double().sum(dim=0)
        chi2 = float((((counts - draws * p) ** 2) / (draws * p * (1 - p))).sum())
        assert chi2 < n + 6 * math.sqrt(2 * n)

    def test_not_tube_shaped(self):
        """Random masking, unlike tube masking, does not repeat one frame-grid over time."""
        t, h, w = grid = (4, 6, 6)
        mask = RandomMasker(mask_ratio=0.5)(4, grid, generator=gen(4)).view(4, t, h * w)
        assert not torch.equal(mask, mask[:, :1].expand_as(mask))


def reference_running_cell(mask_ratio: float, grid: tuple[int, int, int]) -> np.ndarray:
    """VideoMAE V2's RunningCellMaskingGenerator, written from its description: `[4 starts, t, h*w]`, 1 = masked."""
    t, h, w = grid
    k = int(4 * mask_ratio)
    queue = np.array([1] * k + [0] * (4 - k))
    maps = []
    for start in range(4):
        ptr = start
        frames = []
        for _ in range(t):
            ptr += 1  # run_cell() advances the pointer before the frame's cell is read
            cell = queue[(np.arange(4) + ptr) % 4].reshape(2, 2)
            frames.append(np.tile(cell, [h // 2, w // 2]).flatten())
        maps.append(np.stack(frames))
    return np.stack(maps)


class TestRunningCellMasker(MaskerConformance):
    masker_cls = RunningCellMasker
    side = st.integers(min_value=1, max_value=3).map(lambda s: 2 * s)

    def expected_count(self, r, grid):
        t, h, w = grid
        return int(4 * r) * (h // 2) * (w // 2) * t

    def test_rows_differ(self):
        """Only four masks exist, so rows cannot all differ; instead all four starts are drawn."""
        mask = RunningCellMasker(mask_ratio=0.5)(64, (4, 2, 2), generator=gen(5))
        assert len({tuple(row.tolist()) for row in mask}) == 4

    @SETTINGS
    @given(r=ratios, t=st.integers(1, 9), h=st.integers(1, 3), w=st.integers(1, 3))
    def test_equals_videomae_v2(self, r, t, h, w):
        grid = (t, 2 * h, 2 * w)
        ref = torch.from_numpy(reference_running_cell(r, grid)).bool().reshape(4, -1)
        assert torch.equal(running_cell_patterns(r, grid), ref)

    @SETTINGS
    @given(data=st.data(), r=ratios, b=st.integers(1, 6), seed=seeds)
    def test_rows_are_v2_patterns(self, data, r, b, seed):
        grid = data.draw(self.grids())
        ref = torch.from_numpy(reference_running_cell(r, grid)).bool().reshape(4, -1)
        mask = RunningCellMasker(mask_ratio=r)(b, grid, generator=gen(seed))
        for row in mask:
            assert any(torch.equal(row, pattern) for pattern in ref)

    @staticmethod
    def cells(mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """`[b, t, h/2, w/2, 4]`: the four positions (0,0), (0,1), (1,0), (1,1) of every 2x2 cell."""
        t, h, w = grid
        x = mask.view(-1, t, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(-1, t, h // 2, w // 2, 4)

    @SETTINGS
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_cells_period_and_motion(self, data, r, b, seed):
        t, h, w = grid = data.draw(self.grids())
        k = int(4 * r)
        mask = RunningCellMasker(mask_ratio=r)(b, grid, generator=gen(seed))
        cells = self.cells(mask, grid)
        assert cells.sum(dim=-1).unique().tolist() in ([k], [])
        # one pattern tiled over every cell of a time slot
        assert torch.equal(cells, cells[:, :, :1, :1].expand_as(cells))
        slot = cells[:, :, 0, 0]  # [b, t, 4]
        # motion: each slot is the previous one shifted by one queue position; hence period 4
        assert torch.equal(slot[:, 1:], torch.roll(slot[:, :-1], shifts=-1, dims=-1))
        frames = mask.view(b, t, h * w)
        assert torch.equal(frames[:, 4:], frames[:, :-4])

    def test_each_position_masked_k_of_4_slots(self):
        grid = (8, 4, 4)
        for r, k in ((0.25, 1), (0.5, 2), (0.75, 3)):
            frames = running_cell_patterns(r, grid).view(4, 2, 4, 16)
            assert frames.sum(dim=2).unique().tolist() == [k]

    def marginal_grid(self):
        return (4, 2, 2)

    def test_starts_uniform_chi_square(self):
        """The start pointer is uniform over the four V2 patterns: chi-square with 3 degrees of freedom."""
        grid, draws = (4, 2, 2), 4000
        patterns = running_cell_patterns(0.5, grid)
        mask = RunningCellMasker(mask_ratio=0.5)(draws, grid, generator=gen(7))
        start = (mask[:, None, :] == patterns[None]).all(dim=2).double()
        assert torch.equal(start.sum(dim=1), torch.ones(draws, dtype=torch.float64))
        counts = start.sum(dim=0)
        chi2 = float(((counts - draws / 4) ** 2 / (draws / 4)).sum())
        assert chi2 < 16.27  # p = 0.001 quantile of chi-square(3)

    @pytest.mark.parametrize("grid", [(2, 3, 2), (2, 2, 3), (1, 1, 1), (4, 14, 15)])
    def test_odd_sides(self, grid):
        masker = RunningCellMasker(mask_ratio=0.5)
        with pytest.raises(ValueError, match="even"):
            masker(2, grid)
        with pytest.raises(ValueError, match="even"):
            masker.num_masked(grid)


class TestVarianceMasker(MaskerConformance):
    """The content-aware example of docs/masking.md (`needs_video = True`), through the same contract."""

    masker_cls = VarianceMasker

    def expected_count(self, r, grid):
        return int(r * math.prod(grid))

    def test_flat_cubes_stay_visible(self):
        """Odds follow pixel variance: with as many textured cubes as masked ones and more, no flat cube is hidden."""
        grid = t, h, w = (2, 4, 6)
        video = self.video(64, grid, seed=8)
        video[..., : video.shape[-1] // 2] = 0.0  # the left half of every slot is flat
        for r in (0.25, 0.5):
            mask = draw_mask(VarianceMasker(mask_ratio=r), 64, grid, generator=gen(9), video=video)
            assert mask.sum(dim=1).tolist() == [int(r * t * h * w)] * 64
            assert not bool(mask.view(64, t, h, w)[..., : w // 2].any())

    def test_textured_cubes_hidden_more_often(self):
        """A cube whose pixels vary 4x as much is hidden more often than its flat-ish neighbours (many rows)."""
        grid = (1, 2, 2)
        video = torch.ones(2000, 3, 1, 4, 4)
        video[..., ::2] = -1.0  # every 2x2 cube holds as many -1 as +1: the same variance in each
        video[..., :2, :2] *= 2.0  # cube 0 has 4x the variance of the others
        freq = draw_mask(VarianceMasker(mask_ratio=0.25), 2000, grid, generator=gen(11), video=video).double().mean(0)
        # one cube of four hidden, with odds 4 : 1 : 1 : 1 for cube 0: it is picked in about 4/7 of rows
        assert abs(float(freq[0]) - 4 / 7) < 0.05 and float(freq[1:].max()) < 0.2

    def test_without_video_uniform_over_subsets(self):
        chosen = VarianceMasker(mask_ratio=0.5)(30000, (1, 2, 3), generator=gen(12))
        chi2, df = subset_chi_square(chosen)
        assert chi2 < df + 6 * math.sqrt(2 * df)

    def test_video_not_on_the_grid(self):
        with pytest.raises(ValueError, match="token grid"):
            VarianceMasker(mask_ratio=0.5)(2, (2, 3, 3), video=torch.zeros(2, 3, 2, 8, 8))


@SETTINGS
@given(b=st.integers(0, 5), cells=st.integers(1, 30), data=st.data(), seed=seeds)
def test_choose_k_exact(b, cells, data, seed):
    k = data.draw(st.integers(0, cells))
    chosen = choose_k(b, cells, k, generator=gen(seed))
    assert chosen.shape == (b, cells) and chosen.dtype == torch.bool
    assert chosen.sum(dim=1).tolist() == [k] * b


@pytest.mark.parametrize("cells", [1, 2, 3, 7, 196, 1568])
def test_ratio_just_below_one_leaves_a_visible_token(cells):
    """int(r * cells) < cells for every float r < 1, so every masker keeps a visible token."""
    assert int(JUST_BELOW_ONE * cells) == cells - 1
    mask = RandomMasker(mask_ratio=JUST_BELOW_ONE)(2, (1, 1, cells), generator=gen(0))
    assert mask.sum(dim=1).tolist() == [cells - 1] * 2


def test_no_visible_token_guard_names_mask_ratio():
    """The guard behind every count: a count that covers all units is refused, naming `mask_ratio`."""
    with pytest.raises(ValueError, match="mask_ratio.*no visible token"):
        masked_units(1.0, 4, "tokens")
    assert masked_units(0.75, 4, "tokens") == 3


# --- choose_k: exact uniformity over k-subsets ------------------------------------------------------------------------


def subset_chi_square(chosen: torch.Tensor) -> tuple[float, int]:
    """Chi-square of the rows of `chosen` (`Bool[draws, n]`) against the uniform law over all k-subsets; and its df."""
    draws, n = chosen.shape
    k = int(chosen[0].sum())
    codes = (chosen.long() << torch.arange(n)).sum(dim=1)
    counts = torch.bincount(codes, minlength=1 << n).double()
    subsets = math.comb(n, k)
    assert int((counts > 0).sum()) <= subsets
    expected = draws / subsets
    observed = counts[counts > 0]
    chi2 = float(((observed - expected) ** 2 / expected).sum()) + (subsets - observed.numel()) * expected
    return chi2, subsets - 1


@pytest.mark.parametrize(("n", "k"), [(6, 2), (6, 4), (5, 2), (7, 3), (9, 1), (4, 2)])
def test_choose_k_uniform_over_subsets(n, k):
    """Every k-subset is equally likely: chi-square over all C(n, k) subsets under its mean + 6 sd (fixed seed)."""
    chosen = choose_k(30000, n, k, generator=gen(11))
    chi2, df = subset_chi_square(chosen)
    assert chi2 < df + 6 * math.sqrt(2 * df)


def test_choose_k_tube_positions_and_pairs():
    """VideoMAE's 20 visible of 196 cells: per-cell and per-pair frequencies match the uniform law (chi-square)."""
    draws, n, k = 20000, 196, 20
    visible = ~choose_k(draws, n, n - k, generator=gen(13))  # the masker's call: k = 176 masked
    assert visible.sum(dim=1).tolist() == [k] * draws
    x = visible.double()
    p = k / n
    cell = x.sum(dim=0)
    chi2 = float(((cell - draws * p) ** 2 / (draws * p * (1 - p))).sum())
    assert chi2 < n + 6 * math.sqrt(2 * n)
    pairs = (x.T @ x)[torch.triu_indices(n, n, offset=1).unbind()]  # co-occurrence of every pair of cells
    q = k * (k - 1) / (n * (n - 1))
    m = pairs.numel()
    chi2 = float(((pairs - draws * q) ** 2 / (draws * q * (1 - q))).sum())
    assert chi2 < m + 6 * math.sqrt(2 * m)


def test_choose_k_same_generator_state_same_mask_on_any_device_argument():
    a = choose_k(7, 196, 176, generator=gen(14))
    b = choose_k(7, 196, 176, generator=gen(14), device="cpu")
    assert torch.equal(a, b) and not torch.equal(a, choose_k(7, 196, 176, generator=gen(15)))


# --- draw_mask: the call a training loop makes ---------------------------------------------------------------------


class Recording:
    """A masker that records the keywords it was called with and returns `mask` (True = masked)."""

    mask_ratio = 0.5

    def __init__(self, mask: torch.Tensor, count: int, *, needs_video: bool) -> None:
        self.mask, self.count, self.needs_video, self.calls = mask, count, needs_video, []

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        return self.count

    def __call__(self, batch_size, grid, **kwargs):
        self.calls.append(kwargs)
        return self.mask


def test_draw_mask_passes_video_only_to_a_masker_that_asks():
    video, mask = torch.zeros(2, 3, 1, 2, 4), torch.tensor([[True, False], [False, True]])
    g = gen(0)
    for needs in (False, True):
        masker = Recording(mask, 1, needs_video=needs)
        assert isinstance(masker, Masker)
        assert draw_mask(masker, 2, (1, 1, 2), generator=g, device="cpu", video=video) is mask
        (kwargs,) = masker.calls
        assert kwargs.keys() == ({"generator", "device", "video"} if needs else {"generator", "device"})
        assert kwargs["generator"] is g and kwargs["device"] == "cpu"
        assert kwargs.get("video", video) is video


@pytest.mark.parametrize(
    ("mask", "count", "match"),
    [
        (torch.tensor([[True, False], [True, True]]), 1, r"num_masked\(\(1, 1, 2\)\) = 1 .* \[1, 2\]"),
        (torch.tensor([[True, True], [True, True]]), 1, r"= 1 tokens in every row; got per-row counts \[2, 2\]"),
        (torch.tensor([[1, 0], [0, 1]]), 1, "torch.bool mask of shape"),
        (torch.tensor([[True, False]]), 1, r"shape \(2, 2\)"),
        (torch.tensor([[True, False, False], [False, True, False]]), 1, r"shape \(2, 2\)"),
    ],
)
def test_draw_mask_refuses_a_wrong_mask(mask, count, match):
    with pytest.raises(ValueError, match="Recording must .*" + match):
        draw_mask(Recording(mask, count, needs_video=False), 2, (1, 1, 2), generator=gen(0))


def test_draw_mask_refuses_a_video_of_another_batch():
    masker = Recording(torch.zeros(2, 2, dtype=torch.bool), 0, needs_video=True)
    with pytest.raises(ValueError, match="video holds 3 clips but batch_size is 2"):
        draw_mask(masker, 2, (1, 1, 2), video=torch.zeros(3, 3, 1, 2, 4))


def test_draw_mask_reads_the_host_once(monkeypatch):
    """The count check is one host read per call, whatever the batch size (one device sync for a GPU mask)."""
    reads = []
    for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for masker in (TubeMasker(0.9), FrameMasker(0.5), RandomMasker(0.75), RunningCellMasker(0.5), VarianceMasker(0.9)):
        reads.clear()
        draw_mask(masker, 64, (2, 4, 4), generator=gen(1), video=torch.randn(64, 3, 2, 8, 8))
        assert reads == ["__bool__"], type(masker).__name__
