import argparse
import random

import numpy as np
import pytest
import torch
from torch import nn

from tubemask.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def trained_state(step: int) -> tuple[nn.Module, torch.optim.Optimizer, dict]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    model(torch.randn(4, 3)).square().mean().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "name": "run", "none": None}
    return model, opt, state


def partial_save(obj, f, *args, **kwargs) -> None:
    """A torch.save that dies half-way through writing, as a crash or full disk would."""
    if hasattr(f, "write"):
        f.write(b"PK\x03\x04 partial")
    else:
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 partial")
    raise OSError("simulated crash mid-write")


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_round_trip_with_weights_only_including_optimizer(tmp_path) -> None:
    model, opt, state = trained_state(7)
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["name"] == "run" and loaded["none"] is None
    fresh = nn.Linear(3, 2)
    fresh.load_state_dict(loaded["model"])
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2, betas=(0.9, 0.95))
    fresh_opt.load_state_dict(loaded["optimizer"])
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)
    # one more identical step on both keeps them identical (optimizer moments restored)
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q)
    assert leftovers(tmp_path / "sub") == []


def test_crash_mid_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert leftovers(tmp_path) == []


def test_manager_prunes_to_keep_last_and_loads_latest(tmp_path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    assert manager.latest() is None and manager.load_latest() is None
    for step in range(1, 6):
        manager.save(step, {"step": step})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000004.pt", "checkpoint-00000005.pt"]
    assert manager.latest() == tmp_path / "checkpoint-00000005.pt"
    assert manager.load_latest()["step"] == 5


def test_manager_never_deletes_before_new_file_is_durable(tmp_path, monkeypatch) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1, prefix="mae")
    manager.save(3, {"step": 3})
    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(OSError):
        manager.save(4, {"step": 4})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["mae-00000003.pt"]
    assert manager.load_latest()["step"] == 3


def test_manager_keeps_the_file_it_just_wrote_even_if_older(tmp_path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(10, {"step": 10})
    path = manager.save(5, {"step": 5})
    assert path.exists()


def test_manager_validates_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="prefix"):
        CheckpointManager(tmp_path, prefix="a/b")
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        CheckpointManager(tmp_path).save(-1, {"step": -1})
    assert not list(tmp_path.iterdir())


def test_corrupt_and_foreign_files_raise_errors_naming_the_file(tmp_path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)

    good = save_checkpoint(tmp_path / "good.pt", {"w": torch.arange(1000.0)})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)

    pickled = tmp_path / "pickled.pth"
    torch.save({"args": argparse.Namespace(lr=1.0)}, pickled)  # a full-pickle checkpoint, as official ones have
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(pickled)

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")

    listed = tmp_path / "listed.pt"
    torch.save([torch.zeros(2)], listed)  # loads with weights_only=True, but is not a checkpoint dict
    with pytest.raises(CheckpointError, match="checkpoint .*listed.pt holds a list, expected a dict"):
        load_checkpoint(listed)


def test_save_refuses_states_that_would_not_load(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"state\['extra'\]\['args'\]"):
        save_checkpoint(tmp_path / "x.pt", {"extra": {"args": argparse.Namespace()}})
    with pytest.raises(TypeError, match="ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"a": np.zeros(2)})
    with pytest.raises(TypeError, match=r"checkpoint key state\['meta'\]\[\(1, 2\)\] has type tuple"):
        save_checkpoint(tmp_path / "x.pt", {"meta": {(1, 2): 0}})
    assert not (tmp_path / "x.pt").exists()


def draws() -> tuple:
    return (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.rand(3).tolist(),  # noqa: NPY002 (the global generator is what is being checkpointed)
        np.random.normal(),  # noqa: NPY002
        torch.rand(3).tolist(),
    )


def test_rng_round_trip_reproduces_draws(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    random.gauss(0.0, 1.0)  # leave a cached gaussian in both generators
    np.random.normal()  # noqa: NPY002
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = draws()
    draws()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draws() == expected


def test_set_rng_state_names_missing_parts() -> None:
    with pytest.raises(KeyError, match="numpy"):
        set_rng_state({"python": {}, "torch": torch.get_rng_state()})
