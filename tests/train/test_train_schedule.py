import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from tubemask.train.optim import build_adamw
from tubemask.train.schedule import WarmupCosine, apply_lr, cosine_schedule, scaled_lr


def test_scaled_lr() -> None:
    assert scaled_lr(1.5e-4, 2048) == pytest.approx(1.2e-3)
    assert scaled_lr(3e-4, 192) == pytest.approx(2.25e-4)
    assert scaled_lr(1.0, 64, reference=32) == 2.0
    with pytest.raises(ValueError, match="total_batch"):
        scaled_lr(1e-3, 0)


def test_cosine_schedule_shape() -> None:
    kw = {"total_steps": 100, "warmup_steps": 10, "base_lr": 1.0, "min_lr": 0.1, "warmup_start_lr": 0.0}
    assert cosine_schedule(0, **kw) == 0.0
    assert cosine_schedule(5, **kw) == pytest.approx(0.5)
    assert cosine_schedule(10, **kw) == pytest.approx(1.0)
    assert cosine_schedule(55, **kw) == pytest.approx(0.55)  # halfway through the cosine
    assert cosine_schedule(100, **kw) == pytest.approx(0.1)
    assert cosine_schedule(1000, **kw) == pytest.approx(0.1)
    decay = [cosine_schedule(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert cosine_schedule(0, total_steps=10, warmup_steps=0, base_lr=2.0, min_lr=0.0) == 2.0


@pytest.mark.parametrize(
    ("step", "total", "warmup", "match"),
    [(-1, 10, 0, "step"), (0, 0, 0, "total_steps"), (0, 10, 11, "warmup_steps"), (0, 10, -1, "warmup_steps")],
)
def test_cosine_schedule_errors(step: int, total: int, warmup: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cosine_schedule(step, total_steps=total, warmup_steps=warmup, base_lr=1.0, min_lr=0.0)


def test_apply_lr_respects_lr_scale() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    opt = torch.optim.SGD([{"params": [model[0].weight], "lr_scale": 0.25}, {"params": [model[0].bias]}], lr=1.0)
    apply_lr(opt, 0.4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.4)


def test_warmup_cosine_steps_optimizer_and_weight_decay() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    opt = build_adamw(model, lr=1.0, weight_decay=0.05)
    sched = WarmupCosine(
        total_steps=20, warmup_steps=4, base_lr=1e-3, min_lr=1e-5, weight_decay=0.05, weight_decay_end=0.2
    )
    assert sched.step(opt, 2) == pytest.approx(5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4] * len(opt.param_groups))
    sched.step(opt, 20)
    wds = sorted(g["weight_decay"] for g in opt.param_groups)
    assert wds[0] == 0.0  # no-decay group stays at zero
    assert wds[-1] == pytest.approx(0.2)


def test_warmup_cosine_state_dict_round_trip(tmp_path) -> None:
    sched = WarmupCosine(total_steps=50, warmup_steps=5, base_lr=3e-4, min_lr=1e-6, warmup_start_lr=1e-7)
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    other = WarmupCosine(total_steps=1, warmup_steps=0, base_lr=1.0)
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert other == sched
    assert [other.lr(s) for s in range(60)] == [sched.lr(s) for s in range(60)]
    with pytest.raises(KeyError, match="unknown keys"):
        other.load_state_dict({"bogus": 1})


def test_warmup_cosine_validates() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(total_steps=5, warmup_steps=6, base_lr=1.0)
    with pytest.raises(ValueError, match="both"):
        WarmupCosine(total_steps=5, warmup_steps=0, base_lr=1.0, weight_decay=0.05)
    with pytest.raises(ValueError, match="> 0"):
        WarmupCosine(total_steps=5, warmup_steps=0, base_lr=1.0, weight_decay=0.05, weight_decay_end=0.0)
    assert math.isclose(WarmupCosine(total_steps=5, warmup_steps=0, base_lr=1.0).lr(0), 1.0)


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 10_000),
    warmup_frac=st.floats(0.0, 1.0),
    step_frac=st.floats(0.0, 1.5),
    base=st.floats(1e-6, 1.0),
    min_frac=st.floats(0.0, 1.0),
)
@example(total=2, warmup_frac=1.0, step_frac=0.5, base=1.0, min_frac=0.0)  # warmup spanning the whole run
def test_cosine_schedule_stays_within_its_bounds(
    total: int, warmup_frac: float, step_frac: float, base: float, min_frac: float
) -> None:
    warmup = int(warmup_frac * total)
    step = int(step_frac * total)
    min_lr = base * min_frac
    lr = cosine_schedule(step, total_steps=total, warmup_steps=warmup, base_lr=base, min_lr=min_lr)
    assert 0.0 <= lr <= base * (1 + 1e-12)
    if step >= warmup:
        assert lr >= min_lr * (1 - 1e-12)
    nxt = cosine_schedule(step + 1, total_steps=total, warmup_steps=warmup, base_lr=base, min_lr=min_lr)
    if step + 1 >= total:
        assert nxt == min_lr  # past the run (even when the warmup spans all of it): the final value
    elif step + 1 <= warmup:
        assert nxt >= lr  # warmup only rises, up to base_lr
    else:
        assert nxt <= lr * (1 + 1e-12)  # the cosine only falls
