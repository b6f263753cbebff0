"""`mlp_ratio_for`: the MLP ratio that rebuilds a stored width (no transformers needed)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.interop.widths import mlp_ratio_for


@settings(max_examples=300, deadline=None)
@given(dim=st.integers(1, 8192), hidden=st.integers(1, 65536))
def test_ratio_rebuilds_any_width(dim, hidden):
    ratio = mlp_ratio_for(hidden, dim)
    assert int(dim * ratio) == hidden  # the rule tubemask's Block sizes its MLP with
    assert ratio >= hidden / dim and ratio <= hidden / dim * (1 + 8 * 2.0**-52)  # a few ulps above at most


@pytest.mark.parametrize(("hidden", "dim"), [(15, 11), (53, 19), (51, 21)])
def test_ratio_is_nudged_where_the_plain_quotient_falls_short(hidden, dim):
    assert int(dim * (hidden / dim)) == hidden - 1  # the float product lands just below the integer
    ratio = mlp_ratio_for(hidden, dim)
    assert int(dim * ratio) == hidden and ratio == math.nextafter(hidden / dim, math.inf)


def test_non_positive_widths_are_named():
    with pytest.raises(ValueError, match=r"fc1: widths must be positive, got hidden_dim=0, dim=768"):
        mlp_ratio_for(0, 768, what="fc1")
