"""OptimizerStep: accumulation equals one big batch, the loss read back once per step, skipped non-finite steps,
clipping, EMA, the gradient-sync context and the checkpoint state."""

import contextlib
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tubemask.train.distributed import DistributedContext
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.schedule import WarmupCosine
from tubemask.train.step import OptimizerStep

LR = 0.1


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 2)


def data(rows: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 4, generator=g), torch.randn(rows, 2, generator=g)


def stepper_for(net: nn.Module, *, accum_steps: int = 1, **kwargs) -> OptimizerStep:
    """SGD at a constant lr over `net`; `kwargs` go to OptimizerStep (`model=` among them)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    schedule = WarmupCosine(total_steps=10, warmup_steps=0, base_lr=LR, min_lr=LR)  # a constant lr
    return OptimizerStep(optimizer, schedule, ctx=DistributedContext(), accum_steps=accum_steps, **kwargs)


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@settings(max_examples=15, deadline=None)
@given(accum_steps=st.integers(1, 4), rows=st.integers(1, 3), seed=st.integers(0, 100))
def test_accumulated_micro_steps_equal_one_step_on_the_whole_batch(accum_steps, rows, seed) -> None:
    x, y = data(accum_steps * rows, seed)
    whole = linear(seed)
    stepper = stepper_for(whole)
    stepper.backward(nn.functional.mse_loss(whole(x), y))
    whole_result = stepper.step(0)

    model = linear(seed)
    stepper = stepper_for(model, accum_steps=accum_steps)
    losses = []
    for xi, yi in zip(x.split(rows), y.split(rows), strict=True):
        loss = nn.functional.mse_loss(model(xi), yi)
        losses.append(loss.item())
        stepper.backward(loss, double=2 * loss)
    result = stepper.step(0)

    for got, want in zip(model.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert result.taken and result.lr == LR
    assert result.loss == pytest.approx(sum(losses) / accum_steps, rel=1e-6)
    assert result.loss == pytest.approx(whole_result.loss, rel=1e-5)
    assert result.values == {"double": pytest.approx(2 * result.loss, rel=1e-6)}
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next accumulation


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu")


@contextlib.contextmanager
def count_host_reads(monkeypatch, *, forbid: bool):
    """Count (or forbid) the ways a tensor's value reaches the host."""
    calls: dict[str, int] = {}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def patched(self, *args, _name=name, _original=original, **kwargs):
            if forbid:
                raise AssertionError(f"device-to-host read: Tensor.{_name}")
            calls[_name] = calls.get(_name, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    try:
        yield calls
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("clip_grad", [None, 0.01])
def test_backward_reads_nothing_back_and_step_reads_once(monkeypatch, clip_grad) -> None:
    model = linear()
    stepper = stepper_for(model, accum_steps=3, clip_grad=clip_grad, model=model)
    x, y = data(6)
    for xi, yi in zip(x.split(2), y.split(2), strict=True):
        loss = nn.functional.mse_loss(model(xi), yi)
        with count_host_reads(monkeypatch, forbid=True):
            stepper.backward(loss, error=(model(xi) - yi).abs().mean())
    with count_host_reads(monkeypatch, forbid=False) as calls:
        result = stepper.step(0)
    assert calls == {"tolist": 1}, calls  # the loss and the values, in one read
    assert result.taken and set(result.values) == {"error"}


def nan_backward(stepper: OptimizerStep, model: nn.Module) -> None:
    x, _ = data(2)
    stepper.backward(model(x).sum() * float("nan"))


def finite_backward(stepper: OptimizerStep, model: nn.Module) -> float:
    x, y = data(2)
    loss = nn.functional.mse_loss(model(x), y)
    stepper.backward(loss)
    return loss.item()


def test_non_finite_loss_skips_the_step_and_the_guard_stops_the_run() -> None:
    model = linear()
    stepper = stepper_for(model, guard=NonFiniteGuard(2))
    before = params(model)
    nan_backward(stepper, model)
    result = stepper.step(4)
    assert not result.taken and math.isnan(result.loss) and result.lr == LR
    assert all(torch.equal(a, b) for a, b in zip(params(model), before, strict=True))
    assert all(p.grad is None for p in model.parameters())  # the NaN gradients are gone
    assert stepper.guard.skipped == 1 and stepper.guard.last_bad_step == 4

    finite_backward(stepper, model)  # a finite step in between: taken, the count in a row starts again
    assert stepper.step(5).taken
    assert not all(torch.equal(a, b) for a, b in zip(params(model), before, strict=True))
    nan_backward(stepper, model)
    assert not stepper.step(6).taken
    nan_backward(stepper, model)
    with pytest.raises(RuntimeError, match="2 steps in a row, ending at step 7"):
        stepper.step(7)
    assert stepper.guard.skipped == 3


def test_infinite_extra_value_alone_does_not_skip() -> None:
    """Only the loss decides; another logged value may be anything."""
    model = linear()
    stepper = stepper_for(model)
    x, y = data(2)
    stepper.backward(nn.functional.mse_loss(model(x), y), ratio=torch.tensor(float("inf")))
    result = stepper.step(0)
    assert result.taken and result.values == {"ratio": math.inf}


def test_clip_grad_clips_the_global_norm_like_clip_grad_norm() -> None:
    x, y = data(4)
    manual = linear()
    nn.functional.mse_loss(manual(x), y).backward()
    norm = nn.utils.clip_grad_norm_(manual.parameters(), 0.01)
    assert norm > 0.01  # the clip is active
    with torch.no_grad():
        for p in manual.parameters():
            p -= LR * p.grad

    model = linear()
    stepper = stepper_for(model, clip_grad=0.01, model=model)
    stepper.backward(nn.functional.mse_loss(model(x), y))
    stepper.step(0)
    for got, want in zip(model.parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-7, rtol=0)

    unclipped = linear()
    stepper = stepper_for(unclipped)
    stepper.backward(nn.functional.mse_loss(unclipped(x), y))
    stepper.step(0)
    assert not torch.allclose(unclipped.weight, model.weight)


def test_ema_is_updated_only_on_taken_steps() -> None:
    model = linear()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
    stepper = stepper_for(model, ema=ema, model=model)
    finite_backward(stepper, model)
    stepper.step(0)
    assert int(ema.n_averaged) == 1
    first = [p.detach().clone() for p in ema.module.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(first, params(model), strict=True))  # the first update copies

    nan_backward(stepper, model)
    stepper.step(1)
    assert int(ema.n_averaged) == 1
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), first, strict=True))

    finite_backward(stepper, model)
    stepper.step(2)
    assert int(ema.n_averaged) == 2
    for got, old, new in zip(ema.module.parameters(), first, model.parameters(), strict=True):
        torch.testing.assert_close(got, 0.5 * old + 0.5 * new)


def test_state_dict_round_trips_through_a_weights_only_file() -> None:
    model = linear()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    stepper = stepper_for(model, ema=ema, model=model)
    for step in range(3):
        finite_backward(stepper, model) if step != 1 else nan_backward(stepper, model)
        stepper.step(step)
    buffer = io.BytesIO()
    torch.save(stepper.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert {"scaler", "schedule", "skipped_steps", "ema"} <= set(state) and state["skipped_steps"] == 1

    other = linear(seed=5)
    fresh_ema = AveragedModel(other, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    restored = OptimizerStep(
        torch.optim.SGD(other.parameters(), lr=LR),
        WarmupCosine(total_steps=99, warmup_steps=9, base_lr=1.0),
        ctx=DistributedContext(),
        ema=fresh_ema,
        model=other,
    )
    assert restored.load_state_dict(state) is None
    assert restored.guard.skipped == 1 and restored.schedule == stepper.schedule
    for key, value in ema.state_dict().items():
        assert torch.equal(fresh_ema.state_dict()[key], value), key

    no_ema = dict(state, ema=None)
    assert "no EMA weights" in restored.load_state_dict(no_ema)
    plain = stepper_for(linear())
    assert plain.load_state_dict(state) is None and "ema" not in plain.state_dict()


def test_bad_arguments_are_refused() -> None:
    model = linear()
    with pytest.raises(ValueError, match="accum_steps must be >= 1, got 0"):
        stepper_for(model, accum_steps=0)
    for clip in (0, -1.0):
        with pytest.raises(ValueError, match=f"clip_grad must be > 0 .*got {clip}"):
            stepper_for(model, clip_grad=clip, model=model)
    with pytest.raises(ValueError, match="need the model"):
        stepper_for(model, clip_grad=1.0)
    with pytest.raises(ValueError, match="need the model"):
        stepper_for(model, ema=AveragedModel(model))


class DDPLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    @contextlib.contextmanager
    def no_sync(self):
        self.events.append("no_sync enter")
        yield
        self.events.append("no_sync exit")


class FSDPLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sync: list[bool] = []

    def set_requires_gradient_sync(self, requires: bool) -> None:
        self.sync.append(requires)


class Compiled(nn.Module):
    """Stands in for torch.compile's wrapper, which keeps the module in `_orig_mod`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module


def test_accumulating_turns_off_gradient_sync_except_on_the_last_micro_step() -> None:
    stepper = stepper_for(linear())
    ddp = DDPLike()
    for last in (False, False, True):
        with stepper.accumulating(ddp, last=last):
            ddp.events.append("body")
    assert ddp.events == ["no_sync enter", "body", "no_sync exit"] * 2 + ["body"]

    fsdp = FSDPLike()
    for last in (False, True):
        with stepper.accumulating(Compiled(fsdp), last=last):
            pass
    assert fsdp.sync == [False, True]

    with stepper.accumulating(linear(), last=False):  # one process: nothing to turn off
        pass
