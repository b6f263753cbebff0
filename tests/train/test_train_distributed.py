import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from recipe_helpers import exit_worker, free_port
from torch import nn

from tubemask.train.checkpoint import CheckpointManager
from tubemask.train.checkpointer import Checkpointer
from tubemask.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    cleanup,
    rank0_print,
    setup_distributed,
    wrap_ddp,
    wrap_fsdp2,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def single_process_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)


def reference_grads() -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = batch()
    nn.functional.mse_loss(model(x), y).backward()
    return [model.weight.grad, model.bias.grad]


class Probe(nn.Linear):
    """A linear layer that notes the dtype of its weight as its forward sees it (FSDP2 has gathered it by then)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.weight.dtype)
        return super().forward(x)


def two_blocks() -> nn.Module:
    net = nn.Module()
    net.blocks = nn.ModuleList([Probe(4, 4), Probe(4, 2)])
    return net


def unsupported_here(error: RuntimeError) -> bool:
    """The one known reason FSDP2 cannot run in this test: a torch whose gloo backend lacks a collective FSDP2 uses
    ("Backend gloo does not support reduce_scatter...", before torch 2.6), or a torch without FSDP2. Anything else is
    a failure."""
    message = str(error)
    return ("gloo" in message.lower() and "does not support" in message) or "has no FSDP2 fully_shard" in message


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    try:
        mean = all_reduce_mean(torch.tensor([float(rank), 10.0 * rank]))
        torch.manual_seed(0)  # same initial weights on every rank
        model = wrap_ddp(nn.Linear(4, 2), ctx)
        x, y = batch()
        shard = slice(rank * 4, (rank + 1) * 4)  # global batch 8 = 2 ranks x 4
        nn.functional.mse_loss(model(x[shard]), y[shard]).backward()
        grads = [model.module.weight.grad, model.module.bias.grad]

        torch.manual_seed(0)
        net = two_blocks()
        plain = [p.detach().clone() for p in net.parameters()]
        fsdp_error, fsdp_out, bf16 = "", [], {}
        try:
            wrap_fsdp2(net, ctx)
            nn.functional.mse_loss(net.blocks[1](net.blocks[0](x[shard])), y[shard]).backward()
            fsdp_out = [p.grad.full_tensor() for p in net.parameters()]

            torch.manual_seed(0)  # the same net, parameters gathered in bf16
            net = two_blocks()
            wrap_fsdp2(net, ctx, param_dtype=torch.bfloat16)
            out = net.blocks[1](net.blocks[0](x[shard]))
            nn.functional.mse_loss(out.float(), y[shard]).backward()
            state = net._get_fsdp_state() if hasattr(net, "_get_fsdp_state") else None  # torch >= 2.6
            policy = getattr(state, "_mp_policy", None)
            bf16 = {
                "seen": [str(d) for block in net.blocks for d in block.seen],
                "out": str(out.dtype),
                "grads": [p.grad.full_tensor() for p in net.parameters()],
                "grad_dtypes": [str(p.grad.dtype) for p in net.parameters()],
                "policy": None if policy is None else [str(policy.param_dtype), str(policy.reduce_dtype)],
            }
        except RuntimeError as error:
            if not unsupported_here(error):
                raise  # a real failure of wrap_fsdp2 (or of FSDP2): the test fails with it
            fsdp_error = f"{type(error).__name__}: {error}"
        torch.save(
            {
                "ctx": [ctx.rank, ctx.world_size, ctx.is_main],
                "mean": mean,
                "grads": grads,
                "plain": plain,
                "fsdp": fsdp_out,
                "bf16": bf16,
                "fsdp_error": fsdp_error,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        cleanup()
    exit_worker()


def test_single_process_context_is_a_no_op(single_process_env, capsys) -> None:
    ctx = setup_distributed("cpu")
    assert ctx == DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert ctx.is_main and not ctx.is_distributed
    t = torch.tensor([1.0, 2.0])
    out = all_reduce_mean(t)
    assert torch.equal(out, t) and out is not t
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, ctx) is model
    rank0_print("hello", end="!")
    assert capsys.readouterr().out == "hello!"
    with pytest.raises(RuntimeError, match="process group"):
        wrap_fsdp2(model, ctx)
    cleanup()


def test_setup_errors(single_process_env, monkeypatch) -> None:
    with pytest.raises(ValueError, match="device"):
        setup_distributed("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            setup_distributed("cuda")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        setup_distributed("cpu")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        setup_distributed("cpu")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one'"):
        setup_distributed("cpu")


def test_cuda_process_group_is_bound_to_the_local_gpu(single_process_env, monkeypatch) -> None:
    """Under torchrun on GPUs, `init_process_group` gets `device_id` = this rank's GPU (the NCCL communicator is then
    made for that device at once). Checked without GPUs: CUDA and the process group are stood in for."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: calls.append(("init", kwargs)))
    for name, value in dict(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(name, value)
    ctx = setup_distributed("cuda")
    assert ctx.device == torch.device("cuda", 1)
    assert calls == [
        ("set_device", 1),
        (
            "init",
            dict(backend="nccl", init_method="env://", rank=1, world_size=2, device_id=torch.device("cuda", 1)),
        ),
    ]


def test_wrap_fsdp2_takes_param_dtype_or_mp_policy_not_both(single_process_env) -> None:
    with pytest.raises(ValueError, match="param_dtype or mp_policy"):
        wrap_fsdp2(nn.Linear(2, 2), DistributedContext(), param_dtype=torch.bfloat16, mp_policy=object())


def test_rank0_print_is_silent_on_other_ranks(single_process_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RANK", "1")
    rank0_print("hidden")
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_two_gloo_processes_match_single_process(tmp_path) -> None:
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["ctx"] for r in results] == [[0, 2, True], [1, 2, False]]
    for r in results:
        torch.testing.assert_close(r["mean"], torch.tensor([0.5, 5.0]))
    expected = reference_grads()
    for r in results:
        for got, want in zip(r["grads"], expected, strict=True):
            torch.testing.assert_close(got, want)
    if results[0]["fsdp_error"]:
        pytest.skip(f"FSDP2 on CPU/gloo unavailable here: {results[0]['fsdp_error']}")
    # FSDP2: the sharded two-block model's full gradients equal single-process gradients on the global batch
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    x, y = batch()
    nn.functional.mse_loss(net(x), y).backward()
    for r in results:
        for got, want in zip(r["fsdp"], [p.grad for p in net.parameters()], strict=True):
            torch.testing.assert_close(got, want)
    # param_dtype=bf16: the forward sees bf16 parameters (gathered in bf16), the gradients are reduced into float32
    # shards, and they match the float32 gradients within bf16 rounding
    for r in results:
        bf16 = r["bf16"]
        assert bf16["seen"] == ["torch.bfloat16"] * 2 and bf16["out"] == "torch.bfloat16", bf16
        assert bf16["grad_dtypes"] == ["torch.float32"] * 4, bf16
        assert bf16["policy"] in (None, ["torch.bfloat16", "torch.float32"]), bf16
        for got, want in zip(bf16["grads"], [p.grad for p in net.parameters()], strict=True):
            torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)


def test_cleanup_waits_at_a_barrier_only_on_a_clean_exit(single_process_env, monkeypatch) -> None:
    """A clean exit: barrier, then destroy. While an exception propagates: destroy at once (another rank may be stuck in
    a collective this one never joins, so a barrier could hang where the failure should surface)."""
    barriers = []
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: barriers.append(1))
    for failing in (False, True):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        try:
            if failing:
                with pytest.raises(RuntimeError, match="rank failed"):
                    try:
                        raise RuntimeError("rank failed")
                    finally:
                        cleanup()
            else:
                cleanup()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        assert barriers == [1] and not dist.is_initialized(), failing


def resume_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """Under `--resume` each rank reads the newest checkpoint of its own view of the output directory: one shared
    folder, then one folder per rank (as on machines without a shared filesystem)."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = setup_distributed("cpu")
    try:
        shared = Checkpointer(os.path.join(out_dir, "shared"), ctx=ctx).load_latest()
        try:
            Checkpointer(os.path.join(out_dir, f"rank{rank}"), ctx=ctx).load_latest()
            split = "loaded"
        except ValueError as error:
            split = str(error)
        torch.save({"shared": shared, "split": split}, os.path.join(out_dir, f"resume{rank}.pt"))
    finally:
        cleanup()
    exit_worker()


@pytest.mark.slow
def test_resume_refuses_ranks_that_found_different_checkpoints(tmp_path) -> None:
    CheckpointManager(tmp_path / "shared").save(3, {"step": 3})
    CheckpointManager(tmp_path / "rank0").save(5, {"step": 5})  # rank 1's folder has none: it would start afresh
    mp.spawn(resume_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"resume{r}.pt", weights_only=True) for r in range(2)]
    assert [r["shared"] for r in results] == [{"step": 3}, {"step": 3}]
    for r in results:
        assert "rank 0: checkpoint-00000005.pt, rank 1: none" in r["split"], r["split"]
        assert "same --output-dir" in r["split"]
