"""Peak memory of one train step: tubemask's MAEWrapper vs HF's VideoMAEForPreTraining (ViT-B, identical weights).

CPU: `tracemalloc` does not see torch's allocations, so each side runs in a fresh subprocess that builds its model,
takes one untimed warm-up step, frees the gradients, trims the heap, then resets the kernel's resident-set high-water
mark (`/proc/self/clear_refs`, Linux) and runs one step (zero_grad, forward, backward). The figure is the high-water
mark (`VmHWM`) minus the resident set before the step: activations, gradients and temporaries, not the weights.
The step keeps only the loss of the model's output (as the recipes' loop does), so neither side's predictions and
targets outlive their use in the backward. glibc's
mmap threshold is pinned (`MALLOC_MMAP_THRESHOLD_`) so freed tensors go back to the kernel and RSS tracks live memory.
CUDA (`--device cuda`): `torch.cuda.max_memory_allocated` over the step, minus the allocation before it.
`--precision bf16` runs both forwards under bf16 autocast (float32 weights and gradients, as the recipes do).
`--grad-checkpointing` recomputes block activations in the backward on both sides (tubemask:
`MAEWrapper.set_grad_checkpointing()`, encoder and decoder; HF: `gradient_checkpointing_enable()`, its encoder and
decoder layers), as the recipes' `--grad-checkpointing` does.

    python benchmarks/memory.py [--quick] [--model base] [--device cpu|cuda] [--precision fp32|bf16]
        [--grad-checkpointing]
"""

import argparse
import contextlib
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def worker(
    side: str, model: str, batch: int, device: str, precision: str = "fp32", grad_checkpointing: bool = False
) -> dict[str, float]:
    """Measure one side in this process; returns MiB figures. Progress goes to stderr (the parent passes it through),
    so a run cut off by a timeout shows how far each worker got."""
    if device == "cpu":
        torch.set_num_threads(2)  # the 2-core machine's budget; on CUDA the host threads only build the models
    started = time.perf_counter()
    print(f"[memory worker {side}] building the models", file=sys.stderr, flush=True)
    pair = common.make_pair(model)
    print(f"[memory worker {side}] built in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    grid = pair.ours.grid((batch, 3, *common.CLIP))
    net = pair.hf if side == "hf" else pair.ours
    del pair
    _trim()
    net = net.to(device).train()
    if grad_checkpointing:
        if side == "hf":
            net.gradient_checkpointing_enable()
        else:
            net.set_grad_checkpointing(True)
    video = common.make_video(batch).to(device)
    if side == "hf":
        video = video.permute(0, 2, 1, 3, 4).contiguous()
    mask = common.tube_mask(batch, grid).to(device)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        with common.autocast(precision, device):  # keep only the loss, as a training loop does (the recipes)
            loss = (net(video, bool_masked_pos=mask) if side == "hf" else net(video, mask)).loss
        loss.backward()

    step()
    net.zero_grad(set_to_none=True)
    _trim()
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        return {"peak_mib": peak / 2**20, "base_mib": before / 2**20}
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    peak = _status_kib("VmHWM") - before
    return {"peak_mib": peak / 1024, "base_mib": before / 1024}


def run_side(side: str, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--device",
        args.device,
        "--precision",
        args.precision,
        *(["--grad-checkpointing"] if args.grad_checkpointing else []),
    ]
    # The worker's stderr joins its stdout; its progress lines are echoed as they come (a run cut off by a timeout
    # shows how far it got), the rest is kept for the result (last line) or the failure report.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as worker_run:
        lines = []
        for line in worker_run.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("[memory worker"):
                print(f"  {lines[-1]}", flush=True)
    returncode = worker_run.returncode
    try:
        if returncode != 0 or not lines:
            raise ValueError("no result")
        return json.loads(lines[-1])
    except ValueError:  # a crash (out of memory, import error, ...), or output that is not the worker's JSON line
        tail = "\n".join(f"    {line}" for line in lines[-40:])
        print(f"memory.py: the {side} worker failed (exit {returncode}); the end of its output:\n{tail}", flush=True)
        raise SystemExit(
            f"memory.py: the {side} worker ({args.device}, {args.precision}, ViT-{args.model}, batch {args.batch}) "
            f"failed with exit status {returncode}; its output is printed above"
        ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one subprocess per side (default: 2 each, alternated)")
    parser.add_argument("--model", default="base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast on both sides")
    parser.add_argument(
        "--grad-checkpointing", action="store_true", help="recompute block activations in backward, both sides"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(args.worker, args.model, args.batch, args.device, args.precision, args.grad_checkpointing)
            )
        )
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return
    repeats = 1 if args.quick else 2
    results: dict[str, list[dict[str, float]]] = {"hf": [], "tubemask": []}
    for r in range(repeats):
        for side in ("hf", "tubemask") if r % 2 == 0 else ("tubemask", "hf"):
            results[side].append(run_side(side, args))
    print(
        f"torch {torch.__version__}, ViT-{args.model} train step, batch {args.batch}, 16x224x224, tube mask 0.9, "
        f"device {args.device}, {args.precision}{', gradient checkpointing' if args.grad_checkpointing else ''}; "
        f"{repeats} fresh subprocess(es) per side"
    )
    print(f"  {'side':<10} {'step peak MiB (median)':>22} {'all runs':>20} {'resident before MiB':>20}")
    peaks = {}
    for side, runs in results.items():
        peaks[side] = statistics.median(x["peak_mib"] for x in runs)
        all_runs = ", ".join(f"{x['peak_mib']:.0f}" for x in runs)
        base = statistics.median(x["base_mib"] for x in runs)
        print(f"  {side:<10} {peaks[side]:22.0f} {all_runs:>20} {base:20.0f}")
    ratio = peaks["tubemask"] / peaks["hf"]
    print(f"  tubemask/hf peak step memory: {ratio:.2f}  (target <= 1.0)")
    print(f"ratio memory tubemask/hf: {ratio:.2f}")


if __name__ == "__main__":
    main()
