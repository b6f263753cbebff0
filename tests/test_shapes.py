"""tubemask.shapes: `typechecked` rejects a wrong shape, and `shape_checks_disabled` leaves nothing changed behind it
(nesting, exceptions, blocks open in several threads that close out of order)."""

import threading

import jaxtyping
import pytest
import torch
from jaxtyping import Float
from torch import Tensor

from tubemask.shapes import shape_checks_disabled, typechecked


@typechecked
def _pair_sum(a: Float[Tensor, "b n"], b: Float[Tensor, "b n"]) -> Float[Tensor, "b n"]:
    return a + b[:, :1]  # broadcasts, so a wrong `b` gets through only when the checks are off


def _checks_on() -> bool:
    try:
        _pair_sum(torch.zeros(2, 3), torch.zeros(2, 4))
    except Exception:  # jaxtyping's TypeCheckError (its class depends on the version)
        return True
    return False


@pytest.fixture(autouse=True)
def _switch_on():
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", False)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)


def test_checks_off_inside_and_back_on_after():
    assert _checks_on()
    with shape_checks_disabled():
        assert not _checks_on()
    assert _checks_on() and jaxtyping.config.jaxtyping_disable is False


def test_nested_blocks_restore_once_the_outer_one_closes():
    with shape_checks_disabled():
        with shape_checks_disabled():
            assert not _checks_on()
        assert not _checks_on()  # the inner block closing does not switch checks back on under the outer one
    assert _checks_on()


def test_an_exception_in_the_block_restores_the_switch():
    with pytest.raises(RuntimeError, match="boom"), shape_checks_disabled():
        raise RuntimeError("boom")
    assert _checks_on()


def test_a_switch_that_was_already_off_stays_off():
    jaxtyping.config.update("jaxtyping_disable", True)
    with shape_checks_disabled():
        pass
    assert jaxtyping.config.jaxtyping_disable is True


def test_blocks_in_two_threads_closing_out_of_order_leave_nothing_changed():
    # A opens, B opens, A closes, B closes: restoring "the value seen on entry" per block would leave the checks off
    # for good (B saw them off), and would switch them back on inside B's block when A closed.
    a_open, b_open, a_closed = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    errors: list[BaseException] = []

    def thread_a():
        try:
            with shape_checks_disabled():
                a_open.set()
                assert b_open.wait(10)
            a_closed.set()
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)
            a_closed.set()

    def thread_b():
        try:
            assert a_open.wait(10)
            with shape_checks_disabled():
                b_open.set()
                assert a_closed.wait(10)
                seen["inside b after a closed"] = jaxtyping.config.jaxtyping_disable
        except BaseException as error:
            errors.append(error)
            b_open.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors, errors
    assert seen == {"inside b after a closed": True}
    assert jaxtyping.config.jaxtyping_disable is False and _checks_on()
