"""ResumableDistributedSampler: rank shares form the single-process global batch; resuming skips exactly."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tubemask.train.sampler import ResumableDistributedSampler


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(4, 60),
    batch=st.integers(1, 4),
    world=st.integers(1, 3),
    epoch=st.integers(0, 5),
    seed=st.integers(0, 3),
)
def test_rank_shares_make_the_global_batches(length: int, batch: int, world: int, epoch: int, seed: int) -> None:
    assume(length >= batch * world)
    single = ResumableDistributedSampler(length, batch_size=batch * world, seed=seed)
    ranks = [
        ResumableDistributedSampler(length, batch_size=batch, rank=r, world_size=world, seed=seed) for r in range(world)
    ]
    for s in [single, *ranks]:
        s.set_epoch(epoch)
    global_order = list(single)
    shares = [list(s) for s in ranks]
    assert all(len(share) == len(ranks[0]) for share in shares)
    for step in range(single.batches_per_epoch):
        global_batch = global_order[step * batch * world : (step + 1) * batch * world]
        # row p of the global batch is row p // world of rank p % world's batch
        rebuilt = [shares[p % world][step * batch + p // world] for p in range(batch * world)]
        assert rebuilt == global_batch
    assert len(set(global_order)) == len(global_order)


def test_resume_mid_epoch_skips_exactly() -> None:
    s = ResumableDistributedSampler(23, batch_size=3, rank=1, world_size=2, seed=7)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, start_batch=2)
    assert list(s) == full[2 * 3 :]
    assert len(s) == len(full) - 6


def test_epochs_differ_and_repeat() -> None:
    s = ResumableDistributedSampler(50, batch_size=5)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    assert list(s) == a


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableDistributedSampler(3, batch_size=2, world_size=2)
    s = ResumableDistributedSampler(10, batch_size=2)
    with pytest.raises(ValueError, match="start_batch"):
        s.set_epoch(0, start_batch=99)


@settings(max_examples=30, deadline=None)
@given(length=st.integers(4, 40), batch=st.integers(1, 4), epoch=st.integers(0, 5), start=st.integers(0, 3))
def test_with_epoch_yields_the_same_indices_keyed_by_epoch(length: int, batch: int, epoch: int, start: int) -> None:
    plain = ResumableDistributedSampler(length, batch_size=batch, seed=3)
    keyed = ResumableDistributedSampler(length, batch_size=batch, seed=3, with_epoch=True)
    start = min(start, plain.batches_per_epoch)
    plain.set_epoch(epoch, start_batch=start)
    keyed.set_epoch(epoch, start_batch=start)
    assert list(keyed) == [(epoch, i) for i in plain] and len(keyed) == len(plain)


def test_without_shuffle_the_order_is_the_dataset_order_every_epoch() -> None:
    ranks = [ResumableDistributedSampler(11, batch_size=2, rank=r, world_size=2, shuffle=False) for r in (0, 1)]
    for epoch in (0, 3):
        for s in ranks:
            s.set_epoch(epoch)
        assert [list(s) for s in ranks] == [[0, 2, 4, 6], [1, 3, 5, 7]]  # 2 global batches of 4; 8, 9, 10 dropped
    ranks[1].set_epoch(3, start_batch=1)
    ranks[1].with_epoch = True
    assert list(ranks[1]) == [(3, 5), (3, 7)] and len(ranks[1]) == 2
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableDistributedSampler(3, batch_size=2, world_size=2, shuffle=False)
