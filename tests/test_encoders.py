"""tubemask.encoders: the ViT body's intermediate outputs, and which blocks `indices=` picks."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tubemask.encoders import ViTEncoder, block_indices


@given(depth=st.integers(1, 24), data=st.data())
def test_block_indices_follow_timms_convention(depth, data):
    """None: every block; k: the last k; a list: those blocks (negatives from the end), ascending, each once."""
    assert block_indices(None, depth) == list(range(depth))
    k = data.draw(st.integers(1, depth))
    assert block_indices(k, depth) == list(range(depth)[-k:])
    picked = data.draw(st.lists(st.integers(-depth, depth - 1), min_size=1, max_size=6))
    got = block_indices(picked, depth)
    assert got == sorted(set(got)) and set(got) == {list(range(depth))[i] for i in picked}


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (0, r"indices=0: the last k blocks need 1 <= k <= depth \(3\)"),
        (4, "indices=4"),
        ([3], r"in -3..2"),
        ([], "at least one"),
    ],
)
def test_block_indices_out_of_range_are_named(indices, message):
    with pytest.raises(ValueError, match=message):
        block_indices(indices, 3)


def test_intermediates_asked_for_are_those_of_the_full_pass_and_later_blocks_do_not_run():
    torch.manual_seed(0)
    encoder = ViTEncoder(32, depth=4, num_heads=2).eval()
    x = torch.randn(2, 5, 32)
    every = encoder.forward_intermediates(x)
    assert len(every) == 4
    for indices, blocks in ((1, [3]), (2, [2, 3]), ([0, -1], [0, 3]), ([1], [1])):
        got = encoder.forward_intermediates(x, indices=indices)
        assert len(got) == len(blocks)
        for out, i in zip(got, blocks, strict=True):
            torch.testing.assert_close(out, every[i], rtol=0, atol=0)
    ran = []
    for i, block in enumerate(encoder.blocks):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    encoder.forward_intermediates(x, indices=[1])
    assert ran == [0, 1]
