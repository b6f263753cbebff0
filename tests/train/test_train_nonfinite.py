import pytest
import torch

from tubemask.train.nonfinite import NonFiniteGuard


def test_finite_losses_pass_and_reset_the_streak() -> None:
    guard = NonFiniteGuard(max_consecutive=3)
    assert guard.check(torch.tensor(1.0))
    assert not guard.check(torch.tensor(float("nan")), step=1)
    assert not guard.check(float("inf"), step=2)
    assert guard.consecutive == 2
    assert guard.check(0.5)
    assert guard.consecutive == 0 and guard.skipped == 2
    assert not guard.check(torch.tensor([1.0, float("nan")]))


def test_raises_after_k_in_a_row_naming_step_and_checkpoint(tmp_path) -> None:
    guard = NonFiniteGuard(max_consecutive=2, checkpoint=tmp_path / "checkpoint-00000100.pt")
    assert not guard.check(float("nan"), step=101)
    with pytest.raises(RuntimeError, match=r"2 steps in a row, ending at step 102.*checkpoint-00000100\.pt"):
        guard.check(float("nan"), step=102)


def test_checkpoint_may_be_a_callable_and_may_be_missing() -> None:
    latest = ["a.pt"]
    guard = NonFiniteGuard(max_consecutive=1, checkpoint=lambda: latest[0])
    latest[0] = "b.pt"
    with pytest.raises(RuntimeError, match="b.pt"):
        guard.check(float("nan"))
    with pytest.raises(RuntimeError, match="no checkpoint was saved yet"):
        NonFiniteGuard(max_consecutive=1).check(float("-inf"), step=0)


def test_state_dict_and_validation() -> None:
    guard = NonFiniteGuard(max_consecutive=5)
    guard.check(float("nan"))
    other = NonFiniteGuard(max_consecutive=5)
    other.load_state_dict(guard.state_dict())
    assert other.state_dict() == {"consecutive": 1, "skipped": 1}
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=0)
