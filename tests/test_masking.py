"""Property tests of the maskers: counts, structure, partition, reproducibility, uniformity and errors.

`MaskerConformance` holds the contract every masker meets (True = masked, `Bool[b, t*h*w]`, raster `(t, h, w)` order,
the VideoMAE count in every row); one subclass per masker adds what is specific to it.
"""

import math

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
    _masked_units,
    choose_k,
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


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class MaskerConformance:
    """The contract of every masker; subclasses set `masker_cls` and `expected_count`."""

    masker_cls: type
    large_grid: tuple[int, int, int] = (2, 14, 14)
    side = st.integers(min_value=1, max_value=6)

    def grids(self) -> st.SearchStrategy:
        return st.tuples(st.integers(1, 6), self.side, self.side)

    def expected_count(self, r: float, grid: tuple[int, int, int]) -> int:
        raise NotImplementedError

    # --- contract -------------------------------------------------------------------------------------------------

    def test_is_a_masker(self):
        masker = self.masker_cls(mask_ratio=0.5)
        assert isinstance(masker, Masker)
        assert masker.mask_ratio == 0.5

    @CONFORMANCE
    @given(data=st.data(), r=ratios, b=batch_sizes, seed=seeds)
    def test_dtype_shape_and_count(self, data, r, b, seed):
        grid = data.draw(self.grids())
        masker = self.masker_cls(mask_ratio=r)
        mask = masker(b, grid, generator=gen(seed))
        n = math.prod(grid)
        assert mask.dtype == torch.bool
        assert mask.shape == (b, n)
        assert mask.device.type == "cpu"
        expected = self.expected_count(r, grid)
        assert masker.num_masked(grid) == expected
        assert mask.sum(dim=1).tolist() == [expected] * b
        assert expected < n, "at least one token stays visible"

    @CONFORMANCE
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_partition(self, data, r, b, seed):
        grid = data.draw(self.grids())
        n = math.prod(grid)
        mask = self.masker_cls(mask_ratio=r)(b, grid, generator=gen(seed))
        assert torch.equal(mask | ~mask, torch.ones_like(mask)) and not bool((mask & ~mask).any())
        visible, masked = split_ids(mask)
        assert visible.shape[1] + masked.shape[1] == n
        assert masked.shape[1] == self.expected_count(r, grid)
        for row in range(b):
            vis, msk = visible[row], masked[row]
            assert bool((vis[1:] > vis[:-1]).all()) and bool((msk[1:] > msk[:-1]).all()), "sorted, no repeats"
            assert torch.equal(torch.sort(torch.cat([vis, msk])).values, torch.arange(n))
            assert not bool(mask[row, vis].any()) and bool(mask[row, msk].all())

    @CONFORMANCE
    @given(data=st.data(), r=ratios, b=st.integers(1, 4), seed=seeds)
    def test_same_seed_same_mask(self, data, r, b, seed):
        grid = data.draw(self.grids())
        masker = self.masker_cls(mask_ratio=r)
        assert torch.equal(masker(b, grid, generator=gen(seed)), masker(b, grid, generator=gen(seed)))

    def test_generator_leaves_global_rng_alone(self):
        state = torch.get_rng_state()
        self.masker_cls(mask_ratio=0.5)(3, self.large_grid, generator=gen(0))
        assert torch.equal(torch.get_rng_state(), state)

    def test_device_argument(self):
        masker = self.masker_cls(mask_ratio=0.5)
        a = masker(2, self.large_grid, generator=gen(1), device="cpu")
        b = masker(2, self.large_grid, generator=gen(1))
        assert a.device.type == "cpu" and torch.equal(a, b)
        assert masker(2, self.large_grid, device=torch.device("cpu")).shape == (2, math.prod(self.large_grid))

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    def test_cuda_generator_and_device(self):
        masker = self.masker_cls(mask_ratio=0.5)
        g = torch.Generator(device="cuda")
        a = masker(3, self.large_grid, generator=g.manual_seed(0), device="cuda")
        b = masker(3, self.large_grid, generator=g.manual_seed(0), device="cuda")
        assert a.device.type == "cuda" and a.dtype == torch.bool and torch.equal(a, b)
        assert a.sum(dim=1).tolist() == [masker.num_masked(self.large_grid)] * 3
        assert masker(3, self.large_grid, generator=g, device="cpu").device.type == "cpu"

    def test_rows_differ(self):
        mask = self.masker_cls(mask_ratio=0.5)(8, self.large_grid, generator=gen(2))
        assert len({tuple(row.tolist()) for row in mask}) == 8

    def test_uniform_marginal(self):
        """Every token is masked with frequency num_masked / n (within 6 sigma of a binomial, fixed seed)."""
        grid = self.marginal_grid()
        draws = 4000
        masker = self.masker_cls(mask_ratio=0.5)
        mask = masker(draws, grid, generator=gen(3))
        p = masker.num_masked(grid) / math.prod(grid)
        freq = mask.double().mean(dim=0)
        sigma = math.sqrt(p * (1 - p) / draws)
        assert float((freq - p).abs().max()) < 6 * sigma

    def marginal_grid(self) -> tuple[int, int, int]:
        return (2, 4, 4)

    # --- errors ---------------------------------------------------------------------------------------------------

    @pytest.mark.parametrize("ratio", BAD_RATIOS)
    def test_bad_ratio(self, ratio):
        with pytest.raises(ValueError, match="mask_ratio"):
            self.masker_cls(mask_ratio=ratio)

    @pytest.mark.parametrize("ratio", WRONG_TYPE_RATIOS)
    def test_wrong_type_ratio(self, ratio):
        with pytest.raises(WRONG_TYPE, match="mask_ratio"):
            self.masker_cls(mask_ratio=ratio)

    @pytest.mark.parametrize("batch_size", [-1, -5, True])
    def test_bad_batch_size(self, batch_size):
        with pytest.raises(ValueError, match="batch_size"):
            self.masker_cls(mask_ratio=0.5)(batch_size, self.large_grid)

    @pytest.mark.parametrize("batch_size", [1.0, "2"])
    def test_wrong_type_batch_size(self, batch_size):
        with pytest.raises(WRONG_TYPE, match="batch_size"):
            self.masker_cls(mask_ratio=0.5)(batch_size, self.large_grid)

    @pytest.mark.parametrize("grid", [(0, 2, 2), (2, 0, 2), (2, 2, 0), (0, 0, 0), (-2, 2, 2), (True, 2, 2)])
    def test_bad_grid(self, grid):
        masker = self.masker_cls(mask_ratio=0.5)
        with pytest.raises(ValueError, match="grid"):
            masker(2, grid)
        with pytest.raises(ValueError, match="grid"):
            masker.num_masked(grid)

    @pytest.mark.parametrize("grid", [(), (2, 2), (2, 2, 2, 2), (2.0, 2, 2)])
    def test_wrong_type_grid(self, grid):
        masker = self.masker_cls(mask_ratio=0.5)
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
        _masked_units(1.0, 4, "tokens")
    assert _masked_units(0.75, 4, "tokens") == 3


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


def test_choose_k_uniform_when_rows_are_redrawn(monkeypatch):
    """With draws cut to the bare minimum most rows run short and are drawn again; the law stays uniform."""
    import tubemask.masking as masking

    monkeypatch.setattr(masking, "_draws_per_row", lambda cells, smaller, bits: smaller)
    chosen = choose_k(20000, 6, 3, generator=gen(12))  # 3 values of 3 bits: most rows reject or repeat one
    assert chosen.sum(dim=1).tolist() == [3] * 20000
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


@SETTINGS
@given(rows=st.integers(1, 6), cells=st.integers(1, 300), data=st.data(), seed=seeds)
def test_gpu_table_type_and_copy_give_the_cpu_result(rows, cells, data, seed):
    """The choices made for GPUs, run on CPU: int32 tables in `_first_distinct` and torch's copy in `_spread` give
    what the CPU choices (int16 tables, NumPy's copy) give, on raw draws including rejected and repeated values."""
    from tubemask.masking import _first_distinct, _spread

    smaller = data.draw(st.integers(1, max(1, cells // 2)))
    width = 1 << max(3, (cells - 1).bit_length())
    draws = data.draw(st.integers(1, 3 * smaller + 8))
    values = torch.randint(0, width, (rows, draws), generator=gen(seed))
    for mark in (0, 1):
        cpu = _first_distinct(values, cells, smaller, mark)
        gpu = _first_distinct(values, cells, smaller, mark, table_dtype=torch.int32)
        assert torch.equal(cpu[0], gpu[0]) and torch.equal(cpu[1], gpu[1])
    marks = cpu[0]
    for units, shape in ((marks.unsqueeze(1), (rows, 3, cells)), (marks.unsqueeze(2), (rows, cells, 2))):
        numpy_copy = _spread(units, shape)
        torch_copy = _spread(units, shape, via_numpy=False)
        assert torch.equal(numpy_copy, torch_copy) and torch.equal(torch_copy.view(shape), units.expand(shape))


def short_row_probability(cells: int, smaller: int, bits: int, draws: int) -> float:
    """Exact chance that `draws` values of `bits` bits hold fewer than `smaller` distinct values below `cells`."""
    dist = [1.0] + [0.0] * smaller  # dist[d]: chance of d distinct accepted values so far (capped at smaller)
    for _ in range(draws):
        nxt = [0.0] * (smaller + 1)
        for d, pd in enumerate(dist):
            if d == smaller:
                nxt[d] += pd
                continue
            hit = (cells - d) / (1 << bits)
            nxt[d + 1] += pd * hit
            nxt[d] += pd * (1 - hit)
        dist = nxt
    return 1.0 - dist[smaller]


def test_draws_per_row_leaves_few_short_rows():
    """The margin of `_draws_per_row` keeps redraws rare (below 1e-5 of rows) for every small grid and VideoMAE's."""
    from tubemask.masking import _draws_per_row

    cases = [(n, s) for n in range(2, 40) for s in range(1, n // 2 + 1)]
    cases += [(196, 20), (196, 98), (257, 1), (257, 128), (1568, 157)]
    for n, s in cases:
        bits = max(1, (n - 1).bit_length())
        assert short_row_probability(n, s, bits, _draws_per_row(n, s, bits)) < 1e-5, (n, s)
