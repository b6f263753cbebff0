"""Evaluation of a sharded model: the same number of forward calls on every rank.

Under FSDP2 a forward is a collective (each block all-gathers its parameters), so a rank that runs out of test batches
while another still has one leaves that one waiting forever. When a test set does not split evenly, the ranks with
fewer batches repeat their last batch, marked as padding, and throw the output away.

Example:
    ```python
    batches = list_of_my_batches
    calls = max_over_ranks(len(batches), ctx) if sharded else len(batches)
    for batch, padding in pad_calls(loader, calls):
        out = model(batch)
        if not padding:
            collect(out)
    ```
"""

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch

from tubemask.train.distributed import DistributedContext

__all__ = ["max_over_ranks", "pad_calls"]

T = TypeVar("T")


def max_over_ranks(value: int, ctx: DistributedContext) -> int:
    """The largest `value` of all processes (a collective when there are several)."""
    if not ctx.is_distributed:
        return value
    tensor = torch.tensor([value], device=ctx.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def pad_calls(batches: Iterable[T], calls: int) -> Iterator[tuple[T, bool]]:
    """`(batch, False)` for each batch, then `(last batch, True)` until `calls` batches were yielded in all.

    Raises:
        ValueError: when there are more batches than `calls`, or padding is needed but there is no batch to repeat.
    """
    last: Any = None
    count = 0
    for batch in batches:
        count += 1
        if count > calls:
            raise ValueError(f"pad_calls: more than calls={calls} batches")
        last = batch
        yield batch, False
    if count < calls and count == 0:
        raise ValueError(
            f"pad_calls: this rank has no batch but another has {calls}; give every rank at least one item"
        )
    for _ in range(calls - count):
        yield last, True
