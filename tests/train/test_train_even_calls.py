"""Evaluation of a sharded model: every rank makes the same number of forward calls (pad_calls, max_over_ranks), so
a rank with fewer batches never leaves another waiting in an FSDP2 all-gather."""

import os
import time

import pytest
import torch
import torch.multiprocessing as mp
from recipe_helpers import exit_worker, free_port
from torch import nn

from tubemask.train.distributed import DistributedContext, cleanup, setup_distributed, wrap_fsdp2
from tubemask.train.even_calls import max_over_ranks, pad_calls

DEADLINE_S = 60
BATCHES_PER_RANK = (1, 3)


def test_pad_calls_repeats_the_last_batch_as_padding() -> None:
    assert list(pad_calls(["a", "b"], 4)) == [("a", False), ("b", False), ("b", True), ("b", True)]
    assert list(pad_calls(iter(["a", "b"]), 2)) == [("a", False), ("b", False)]
    assert list(pad_calls([], 0)) == []
    assert max_over_ranks(3, DistributedContext()) == 3  # one process: no collective


def test_pad_calls_errors() -> None:
    with pytest.raises(ValueError, match="more than calls=1 batches"):
        list(pad_calls(["a", "b"], 1))
    with pytest.raises(ValueError, match="no batch but another has 2"):
        list(pad_calls([], 2))


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 8), nn.Linear(8, 3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def rank_batches(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(10 + rank)
    return [torch.randn(2, 4, generator=g) for _ in range(BATCHES_PER_RANK[rank])]


def evaluate_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    try:
        torch.manual_seed(0)  # the same weights on every rank before sharding
        model = wrap_fsdp2(TwoBlocks(), ctx, block_attr="blocks")
        batches = rank_batches(rank)
        calls = max_over_ranks(len(batches), ctx)
        outputs, flags = [], []
        with torch.no_grad():
            for batch, padding in pad_calls(batches, calls):
                out = model(batch)  # a collective: each block all-gathers its parameters
                flags.append(padding)
                if not padding:
                    outputs.append(out)
        torch.save({"calls": calls, "flags": flags, "outputs": outputs}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup()
    exit_worker()


def run_two_processes(worker, out_dir: str) -> None:
    """Start `worker(rank, 2, port, out_dir)` in 2 processes; kill them and fail if they are not done in time."""
    context = mp.start_processes(worker, args=(2, free_port(), out_dir), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"2 processes did not finish within {DEADLINE_S} s (a rank waits in a collective?)")


@pytest.mark.slow
def test_padded_sharded_evaluation_finishes_and_matches_one_process(tmp_path) -> None:
    run_two_processes(evaluate_worker, str(tmp_path))
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["calls"] for r in results] == [3, 3]
    assert results[0]["flags"] == [False, True, True] and results[1]["flags"] == [False, False, False]
    torch.manual_seed(0)
    plain = TwoBlocks()
    with torch.no_grad():
        for rank, result in enumerate(results):
            want = [plain(batch) for batch in rank_batches(rank)]
            assert len(result["outputs"]) == len(want)
            for got, expected in zip(result["outputs"], want, strict=True):
                torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
