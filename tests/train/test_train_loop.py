"""TrainLoop: the (epoch, micro-batch, optimizer step) sequence of a run, its stop and resume, and the seeds of each
position (tubemask.train.seeding)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.train.logs import ThroughputMeter
from tubemask.train.loop import TrainLoop
from tubemask.train.seeding import STEP_STRIDE, rank_seed, step_generator, step_seed


class FakeSampler:
    """The sampler protocol TrainLoop needs: `batches_per_epoch` and `set_epoch(epoch, start_batch=...)`."""

    def __init__(self, batches_per_epoch: int) -> None:
        self.batches_per_epoch = batches_per_epoch
        self.epoch, self.start_batch = -1, 0
        self.calls: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        self.calls.append((epoch, start_batch))
        self.epoch, self.start_batch = epoch, start_batch


class ListLoader:
    """The micro-batches `(epoch, index)` of the epoch the sampler is set to, from its start batch; `tick` runs
    before each one is handed out (the time the data takes)."""

    def __init__(self, sampler: FakeSampler, tick=lambda: None) -> None:
        self.sampler, self.tick = sampler, tick

    def __iter__(self):
        batches = [(self.sampler.epoch, i) for i in range(self.sampler.start_batch, self.sampler.batches_per_epoch)]
        for batch in batches:
            self.tick()
            yield batch


class EpochDataset:
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def make_loop(batches_per_epoch: int, accum_steps: int, epochs: int, max_steps: int | None = None, **kwargs):
    sampler = FakeSampler(batches_per_epoch)
    dataset = EpochDataset()
    loader = ListLoader(sampler, **kwargs)
    loop = TrainLoop(loader, sampler, dataset, accum_steps=accum_steps, epochs=epochs, max_steps=max_steps)
    return loop, sampler, dataset


def drive(loop: TrainLoop, body=lambda loop: None) -> list[tuple]:
    """Run the loop as a recipe does; one row per micro-batch: (batch's epoch, batch index, micro, step before it,
    at_step_end, epoch_ended after it)."""
    rows = []
    for epoch in loop.epochs():
        assert loop.micro == 0 and not loop.epoch_ended
        for batch in loop.batches():
            assert batch[0] == epoch
            micro, step, at_end = loop.micro, loop.step, loop.at_step_end
            body(loop)
            if at_end:
                loop.step_taken(clips=4)
            rows.append((*batch, micro, step, at_end, loop.epoch_ended))
    return rows


def straight_batches(batches_per_epoch: int, accum_steps: int, epochs: int) -> list[tuple[int, int]]:
    """The micro-batches of a whole run: each epoch's batches up to the last whole accumulation."""
    usable = batches_per_epoch - batches_per_epoch % accum_steps
    return [(e, i) for e in range(epochs) for i in range(usable)]


def test_full_run_without_accumulation() -> None:
    loop, sampler, dataset = make_loop(3, 1, 2)
    assert (loop.steps_per_epoch, loop.total_steps, loop.end_step) == (3, 6, 6)
    rows = drive(loop)
    assert rows == [
        (0, 0, 0, 0, True, False),
        (0, 1, 0, 1, True, False),
        (0, 2, 0, 2, True, True),
        (1, 0, 0, 3, True, False),
        (1, 1, 0, 4, True, False),
        (1, 2, 0, 5, True, True),
    ]
    assert sampler.calls == [(0, 0), (1, 0)] and dataset.epochs == [0, 1]
    assert loop.state_dict() == {"step": 6, "epoch": 2, "batch_in_epoch": 0} and loop.stopped


def test_accumulation_drops_the_tail_and_ends_the_epoch_after_the_last_usable_batch() -> None:
    loop, sampler, dataset = make_loop(7, 3, 2)  # 7 batches = 2 steps of 3, tail of 1 dropped
    assert (loop.steps_per_epoch, loop.total_steps) == (2, 4)
    rows = drive(loop)
    assert rows == [
        (0, 0, 0, 0, False, False),
        (0, 1, 1, 0, False, False),
        (0, 2, 2, 0, True, False),
        (0, 3, 0, 1, False, False),
        (0, 4, 1, 1, False, False),
        (0, 5, 2, 1, True, True),
        (1, 0, 0, 2, False, False),
        (1, 1, 1, 2, False, False),
        (1, 2, 2, 2, True, False),
        (1, 3, 0, 3, False, False),
        (1, 4, 1, 3, False, False),
        (1, 5, 2, 3, True, True),
    ]
    assert sampler.calls == [(0, 0), (1, 0)] and dataset.epochs == [0, 1]
    assert loop.state_dict() == {"step": 4, "epoch": 2, "batch_in_epoch": 0}


def test_max_steps_stops_mid_epoch_without_changing_the_schedule() -> None:
    loop, _, _ = make_loop(7, 3, 2, max_steps=3)
    assert (loop.total_steps, loop.end_step) == (4, 3)
    rows = drive(loop)
    assert [r[:2] for r in rows] == straight_batches(7, 3, 2)[:9]
    assert loop.stopped and not loop.epoch_ended
    assert loop.state_dict() == {"step": 3, "epoch": 1, "batch_in_epoch": 3}
    assert "stopping early at step 3" in loop.describe(1)
    assert make_loop(7, 3, 2, max_steps=10)[0].end_step == 4  # max_steps beyond the schedule: the schedule's end


@settings(max_examples=60, deadline=None)
@given(
    batches_per_epoch=st.integers(1, 9),
    accum_steps=st.integers(1, 4),
    epochs=st.integers(1, 3),
    stop=st.integers(0, 40),
)
def test_stop_and_resume_equals_the_straight_run(batches_per_epoch, accum_steps, epochs, stop) -> None:
    if batches_per_epoch < accum_steps:
        with pytest.raises(ValueError, match=f"--accum-steps {accum_steps}"):
            make_loop(batches_per_epoch, accum_steps, epochs)
        return
    straight = drive(make_loop(batches_per_epoch, accum_steps, epochs)[0])
    assert [r[:2] for r in straight] == straight_batches(batches_per_epoch, accum_steps, epochs)
    total = len(straight) // accum_steps
    stop = 1 + stop % total  # a stop anywhere in the run, its end included

    first, _, _ = make_loop(batches_per_epoch, accum_steps, epochs, max_steps=stop)
    head = drive(first)
    state = first.state_dict()
    resumed, sampler, dataset = make_loop(batches_per_epoch, accum_steps, epochs)
    resumed.load_state_dict(dict(state, extra="ignored"))
    tail = drive(resumed)

    assert head == straight[: stop * accum_steps]
    assert tail == straight[stop * accum_steps :]
    if tail:  # the resumed run starts where the stopped one left off, in its epoch and batch
        assert sampler.calls[0] == (state["epoch"], state["batch_in_epoch"]) and dataset.epochs[0] == state["epoch"]
    assert resumed.state_dict() == {"step": total, "epoch": epochs, "batch_in_epoch": 0}


@settings(max_examples=40, deadline=None)
@given(batches_per_epoch=st.integers(1, 9), accum_steps=st.integers(1, 4), epochs=st.integers(1, 3))
def test_epoch_ended_is_set_exactly_at_epoch_ends(batches_per_epoch, accum_steps, epochs) -> None:
    if batches_per_epoch < accum_steps:
        return
    loop, _, _ = make_loop(batches_per_epoch, accum_steps, epochs)
    ended_after = []  # per epoch: was epoch_ended set when its batches ran out, and at which step
    for epoch in loop.epochs():
        for _ in loop.batches():
            assert not loop.epoch_ended  # never during the epoch's batches
            if loop.at_step_end:
                loop.step_taken(clips=1)
        ended_after.append((epoch, loop.epoch_ended, loop.epoch, loop.step))
    steps = batches_per_epoch // accum_steps
    assert ended_after == [(e, True, e + 1, (e + 1) * steps) for e in range(epochs)]


def test_position_helpers_and_errors() -> None:
    loop, _, _ = make_loop(10, 2, 3)  # 5 steps per epoch, 15 in all
    assert loop.warmup_steps(0.5) == 2 and loop.warmup_steps(1.0) == 5 and loop.warmup_steps(100) == 15
    loop.step = 6
    assert loop.every(3) and loop.every(2) and not loop.every(4)
    assert not loop.every(None) and not loop.every(0)
    assert loop.describe(5) == "5 steps per epoch, 3 epochs = 15 steps, warmup 5 steps"
    with pytest.raises(ValueError, match="one epoch has 2 batches, fewer than --accum-steps 3"):
        make_loop(2, 3, 1)
    with pytest.raises(ValueError, match="accum_steps must be >= 1, got 0"):
        make_loop(2, 0, 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("accum_steps", [1, 3])
def test_meter_counts_clips_and_data_wait_per_optimizer_step(accum_steps) -> None:
    """Each micro-batch takes 0.5 s to arrive and 1 s to compute, so a step of `accum_steps` micro-batches takes
    1.5 x accum_steps seconds, a third of them waiting for data, and trains on 4 clips per micro-batch."""
    clock = FakeClock()
    loop, _, _ = make_loop(6, accum_steps, 1, tick=lambda: clock.advance(0.5))
    loop.meter = ThroughputMeter(clock=clock)
    assert math.isnan(loop.meter.clips_per_s) and math.isnan(loop.meter.data_wait_share)
    for _ in loop.epochs():
        for _ in loop.batches():
            clock.advance(1.0)
            if loop.at_step_end:
                loop.step_taken(clips=4 * accum_steps)
    assert loop.meter.clips_per_s == pytest.approx(4 / 1.5)
    assert loop.meter.data_wait_share == pytest.approx(1 / 3)


# ---- seeds of positions in the run (tubemask.train.seeding) -----------------------------------------------------
def test_step_generator_is_seeded_from_the_position() -> None:
    a = step_generator(3, 10, 1, rank=1)
    b = torch.Generator().manual_seed(step_seed(3, 10, 1, rank=1))
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    assert step_seed(3, 10) == (3 * STEP_STRIDE + 10) * 97
    assert step_seed(3, 10, 2, rank=4) == step_seed(3, 10, 2) * 1009 + 4
    assert rank_seed(2, 1) == 2 * STEP_STRIDE + 1 != rank_seed(2, 0)
    assert not torch.equal(torch.rand(5, generator=step_generator(0, 1)), torch.rand(5, generator=step_generator(0, 2)))


@settings(max_examples=200, deadline=None)
@given(
    a=st.tuples(st.integers(0, 50), st.integers(0, 10_000), st.integers(0, 96), st.integers(0, 1008)),
    b=st.tuples(st.integers(0, 50), st.integers(0, 10_000), st.integers(0, 96), st.integers(0, 1008)),
)
def test_step_seeds_differ_between_positions(a, b) -> None:
    """Different (seed, step, micro, rank) within the strides (micro < 97, rank < 1009) never share a seed."""
    if a != b:
        assert step_seed(*a[:3], rank=a[3]) != step_seed(*b[:3], rank=b[3])
        assert (a[:3] == b[:3]) or step_seed(*a[:3]) != step_seed(*b[:3])


@pytest.mark.parametrize("seed", [0, 2**31 - 1, 2**32 - 1])
def test_step_generator_takes_any_32_bit_seed(seed) -> None:
    """`--seed` is any int a user may pick; the usual 32-bit seeds must give generators for every position."""
    for rank in (None, 0, 7):
        step_generator(seed, 100_000, 3, rank=rank)
