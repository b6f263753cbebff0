"""gather_tokens / scatter_tokens are inverses; split_ids / selected_ids / masked_count follow the mask convention."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.tokens import gather_tokens, masked_count, scatter_tokens, selected_ids, split_ids

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def tokens_and_ids(draw):
    """`x [b n *rest]` and `ids [b v]` of distinct indices per row, in random order."""
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    v = draw(st.integers(0, n))
    rest = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn((b, n, *rest), generator=g)
    ids = torch.stack([torch.randperm(n, generator=g)[:v] for _ in range(b)])
    return x, ids


@SETTINGS
@given(tokens_and_ids())
def test_gather_is_indexing(sample):
    x, ids = sample
    out = gather_tokens(x, ids)
    assert out.shape == (x.shape[0], ids.shape[1], *x.shape[2:])
    for i in range(x.shape[0]):
        assert torch.equal(out[i], x[i, ids[i]])


@SETTINGS
@given(tokens_and_ids(), st.sampled_from([0.0, -1.5]))
def test_scatter_then_gather_returns_tokens(sample, fill):
    x, ids = sample
    b, n = x.shape[:2]
    tokens = gather_tokens(x, ids) + 1.0  # any values of shape [b v *rest]
    placed = scatter_tokens(tokens, ids, n, fill=fill)
    assert placed.shape == x.shape
    assert torch.equal(gather_tokens(placed, ids), tokens)
    untouched = torch.ones(b, n, dtype=torch.bool)
    untouched[torch.arange(b)[:, None], ids] = False
    assert bool((placed[untouched] == fill).all())


@SETTINGS
@given(tokens_and_ids())
def test_gather_of_scatter_of_gather(sample):
    """scatter(gather(x, ids), ids) agrees with x at ids; with all ids it is x itself."""
    x, ids = sample
    b, n = x.shape[:2]
    placed = scatter_tokens(gather_tokens(x, ids), ids, n)
    assert torch.equal(gather_tokens(placed, ids), gather_tokens(x, ids))
    every = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(i)) for i in range(b)])
    assert torch.equal(scatter_tokens(gather_tokens(x, every), every, n), x)


@SETTINGS
@given(b=st.integers(1, 4), n=st.integers(1, 16), data=st.data())
def test_split_and_selected_ids(b, n, data):
    m = data.draw(st.integers(0, n))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    mask = torch.stack([torch.randperm(n, generator=g) < m for _ in range(b)])  # m True per row
    assert masked_count(mask) == m
    visible, masked = split_ids(mask)
    assert visible.shape == (b, n - m) and masked.shape == (b, m)
    assert torch.equal(selected_ids(mask), masked)
    assert torch.equal(selected_ids(~mask), visible)
    for i in range(b):
        assert torch.equal(masked[i], torch.nonzero(mask[i]).flatten())
        assert torch.equal(visible[i], torch.nonzero(~mask[i]).flatten())


def test_unequal_rows_are_refused():
    mask = torch.tensor([[True, False, False], [True, True, False]])
    for fn in (masked_count, split_ids, selected_ids):
        with pytest.raises(ValueError, match="same number"):
            fn(mask)


def test_empty_batch():
    mask = torch.zeros(0, 5, dtype=torch.bool)
    assert masked_count(mask) == 0
    visible, masked = split_ids(mask)
    assert visible.shape == (0, 5) and masked.shape == (0, 0)
