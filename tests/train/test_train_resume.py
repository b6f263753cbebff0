"""The pieces together: an interrupted and resumed run ends bit-identical to an uninterrupted one."""

import random

import torch
from torch import nn

from tubemask.train import (
    CheckpointManager,
    JsonlLogger,
    NonFiniteGuard,
    WarmupCosine,
    build_adamw,
    read_jsonl,
    rng_state,
    set_rng_state,
)

TOTAL = 6


def run(directory, *, stop_after: int | None = None) -> nn.Module:
    torch.manual_seed(0)
    random.seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    optimizer = build_adamw(model, lr=1e-2, weight_decay=0.05)
    schedule = WarmupCosine(total_steps=TOTAL, warmup_steps=2, base_lr=1e-2, min_lr=1e-4)
    manager = CheckpointManager(directory / "ckpt", keep_last=2)
    guard = NonFiniteGuard(max_consecutive=3, checkpoint=manager.latest)
    start = 0
    state = manager.load_latest()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        guard.load_state_dict(state["guard"])
        set_rng_state(state["rng"])
        start = state["step"] + 1
    with JsonlLogger(directory / "log.jsonl", resume_step=start - 1) as log:
        for step in range(start, TOTAL):
            lr = schedule.step(optimizer, step)
            x = torch.randn(5, 4) * (1 + random.random())  # both global generators feed the batch
            loss = model(x).square().mean()
            optimizer.zero_grad(set_to_none=True)
            if guard.check(loss, step=step):
                loss.backward()
                optimizer.step()
            log.log(step, loss=loss, lr=lr)
            manager.save(
                step,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "guard": guard.state_dict(),
                    "rng": rng_state(),
                    "step": step,
                },
            )
            if stop_after is not None and step == stop_after:
                log.log(step + 1, loss=123.0)  # logged after the checkpoint, then the run "crashes"
                return model
    return model


def test_resume_is_bit_identical(tmp_path) -> None:
    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=2)
    resumed = run(tmp_path / "b")
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert read_jsonl(tmp_path / "a" / "log.jsonl") == read_jsonl(tmp_path / "b" / "log.jsonl")
    assert sorted(p.name for p in (tmp_path / "b" / "ckpt").iterdir()) == [
        "checkpoint-00000004.pt",
        "checkpoint-00000005.pt",
    ]
