"""Train-step throughput: tubemask's MAEWrapper vs HF transformers' VideoMAEForPreTraining, identical weights and mask.

One step is `zero_grad`, forward and backward of a 16x224x224 clip batch with a 0.9 tube mask. The HF model is built
with SDPA attention and norm-pix loss, converted with `tubemask.interop.from_hf`, and both sides see the same clips
(HF in its `b t c h w` layout, made once outside the timing) and the same mask. Sides run alternately and the speed-up
is the median of the per-round ratios, so load from other processes hits both sides alike.

The dual-masking row (VideoMAE V2) lets tubemask's decoder reconstruct only the masked cubes outside a running-cell
decoder mask of ratio 0.5; HF cannot do that, so it is compared with HF's full decoding in clips per second.

`--compile` adds a row for tubemask under `torch.compile` (inductor, CPU C++ codegen), timed in the same alternation
after a warm-up that compiles forward and backward (the compile time is printed). It is an extra row, not the
identical-math headline, which stays HF eager vs tubemask eager. The compiled call runs with jaxtyping's runtime shape
checks switched off (their `isinstance` hooks are not traceable, see `tests/test_compile.py`).

`--precision bf16` runs every forward of both models under `torch.autocast("cpu", dtype=torch.bfloat16)` (the
recipes' `--precision bf16`; parameters, gradients and targets stay float32) and adds a row for HF in plain fp32, so
the run shows both the speed-up at the same precision and what bf16 buys. It pays on CPUs with bf16 matrix units
(Intel AMX, `amx_bf16` in `/proc/cpuinfo`); elsewhere, measure before relying on it.

GFLOP/s count the model FLOPs analytically (`benchmarks/common.py: forward_flops`, the useful work: only visible cubes
embedded) times 3 for forward + backward, the same count for both sides; the share is against the best `torch.mm`
rate in the run's precision measured in the same run.

    python benchmarks/step_vs_hf.py [--quick] [--models small,base] [--pairs N] [--compile] [--precision bf16]
"""

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.masking import RunningCellMasker  # noqa: E402
from tubemask.shapes import shape_checks_disabled  # noqa: E402
from tubemask.tokens import masked_count  # noqa: E402


def train_step(
    model: torch.nn.Module, forward: Callable[[], Any], precision: str, *, shape_checks: bool = True
) -> Callable[[], None]:
    """One timed step of `model`: zero_grad, `forward()` (whose output has `.loss`) under `common.autocast(precision)`
    (and with jaxtyping's runtime shape checks off when `shape_checks` is False: compiled models), backward."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with common.autocast(precision), contextlib.nullcontext() if shape_checks else shape_checks_disabled():
            loss = forward().loss
        loss.backward()

    return step


def bench_model(name: str, *, batch: int, pairs: int, compile_: bool = False, precision: str = "fp32") -> dict:
    """Time HF, tubemask and tubemask with dual masking on preset `name`; return the rows and the ratios.

    With `precision="bf16"` every side runs under CPU bf16 autocast and an extra `hf fp32` side runs without it.
    """
    pair = common.make_pair(name)
    size = pair.size
    grid = pair.ours.grid((batch, 3, *common.CLIP))
    video = common.make_video(batch)
    video_hf = video.permute(0, 2, 1, 3, 4).contiguous()  # HF takes b t c h w
    mask = common.tube_mask(batch, grid)
    decoder_mask = RunningCellMasker(mask_ratio=0.5)(batch, grid, generator=torch.Generator().manual_seed(1))
    n = grid[0] * grid[1] * grid[2]
    masked = masked_count(mask)
    visible = n - masked
    decoded_dual = masked_count(mask & ~decoder_mask)

    with torch.no_grad(), common.autocast(precision):
        out, ref = pair.ours(video, mask), pair.hf(video_hf, bool_masked_pos=mask)
    diff = (out.pred.float() - ref.logits.float()).abs().max().item()
    print(
        f"[{name}] parity ({precision}): loss tubemask {out.loss.item():.6f} hf {ref.loss.item():.6f}, "
        f"max |pred diff| {diff:.2e}"
    )

    def hf_forward():
        return pair.hf(video_hf, bool_masked_pos=mask)

    steps = {
        "hf": train_step(pair.hf, hf_forward, precision),
        "tubemask": train_step(pair.ours, lambda: pair.ours(video, mask), precision),
        "tubemask dual": train_step(pair.ours, lambda: pair.ours(video, mask, decoder_mask), precision),
    }
    if precision != "fp32":
        steps["hf fp32"] = train_step(pair.hf, hf_forward, "fp32")
    compile_s = None
    if compile_:
        compiled = torch.compile(pair.ours)
        step_compiled = train_step(pair.ours, lambda: compiled(video, mask), precision, shape_checks=False)
        t0 = time.perf_counter()
        step_compiled()  # compiles forward and backward
        compile_s = time.perf_counter() - t0
        with torch.no_grad(), shape_checks_disabled(), common.autocast(precision):
            loss_c = compiled(video, mask).loss.item()
        print(f"[{name}] torch.compile: first step {compile_s:.0f} s; loss compiled {loss_c:.6f}")
        steps["tubemask compiled"] = step_compiled

    times = common.alternate(steps, pairs=pairs)
    full = 3 * batch * common.forward_flops(size, visible=visible, decoded=masked)
    dual = 3 * batch * common.forward_flops(size, visible=visible, decoded=decoded_dual)
    flops = {"hf": full, "tubemask": full, "tubemask dual": dual, "tubemask compiled": full, "hf fp32": full}
    ratio = common.median_ratio(times["hf"], times["tubemask"])
    ratio_compiled = common.median_ratio(times["hf"], times["tubemask compiled"]) if compile_ else None
    ratio_dual = common.median_ratio(times["hf"], times["tubemask dual"])
    bf16_gain = None
    if precision != "fp32":
        bf16_gain = {
            "hf": common.median_ratio(times["hf fp32"], times["hf"]),
            "tubemask": common.median_ratio(times["hf fp32"], times["tubemask"]),
            "tubemask dual": common.median_ratio(times["hf fp32"], times["tubemask dual"]),
        }
    header = (
        f"[{name}] {precision}, batch {batch}, grid {grid}, {visible} visible / {masked} masked tokens per clip, "
        f"dual masking decodes {decoded_dual}; {pairs} alternated rounds"
    )
    rows = [(side, statistics.median(ts), flops[side]) for side, ts in times.items()]
    per_round = [h / o for h, o in zip(times["hf"], times["tubemask"], strict=True)]
    return {
        "header": header,
        "rows": rows,
        "batch": batch,
        "identical": ratio,
        "dual": ratio_dual,
        "per_round": per_round,
        "compiled": ratio_compiled,
        "bf16_gain": bf16_gain,
    }


def report(result: dict, peak: float) -> None:
    """Print one model's table; shares are against `peak` GFLOP/s."""
    print(result["header"])
    print(f"  {'side':<14} {'median s/step':>13} {'clips/s':>8} {'model GFLOP':>11} {'GFLOP/s':>8} {'of peak':>7}")
    for side, med, flops in result["rows"]:
        rate = flops / med / 1e9
        print(
            f"  {side:<14} {med:13.3f} {result['batch'] / med:8.2f} {flops / 1e9:11.1f} {rate:8.1f} {rate / peak:7.1%}"
        )
    print(
        f"  speed-up tubemask/hf identical math (median of per-round ratios): {result['identical']:.2f}x  "
        f"(target >= 1.15x); per round: {', '.join(f'{r:.2f}' for r in result['per_round'])}"
    )
    print(
        f"  speed-up tubemask dual masking/hf full decoding, clips/s:           {result['dual']:.2f}x  (target >= 1.8x)"
    )
    if result["compiled"] is not None:
        print(f"  extra row, tubemask torch.compile (inductor) vs hf eager, same math: {result['compiled']:.2f}x")
    if result["bf16_gain"] is not None:
        gains = ", ".join(f"{side} {gain:.2f}x" for side, gain in result["bf16_gain"].items())
        print(f"  bf16 autocast vs hf fp32 (median of per-round ratios): {gains}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: ViT-S only, 3 rounds")
    parser.add_argument("--models", default=None, help="comma-separated presets (default small,base; quick: small)")
    parser.add_argument("--pairs", type=int, default=None, help="alternated rounds per model (default 6; quick 3)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="add a torch.compile (inductor) row for tubemask")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32 (default) or CPU bf16 autocast on both sides, plus an hf fp32 row",
    )
    args = parser.parse_args()
    models = (args.models or ("small" if args.quick else "small,base")).split(",")
    pairs = args.pairs or (3 if args.quick else 6)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]
    peak_start = common.matmul_peak_gflops(dtype=dtype)
    results = {
        name: bench_model(name, batch=args.batch, pairs=pairs, compile_=args.compile, precision=args.precision)
        for name in models
    }
    peak_end = common.matmul_peak_gflops(dtype=dtype)
    peak = max(peak_start, peak_end)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.precision} mm peak (2048^2 torch.mm, "
        "best of 5) "
        f"{peak_start:.0f} GFLOP/s at the start, {peak_end:.0f} at the end; shares use the larger, {peak:.0f}"
    )
    for result in results.values():
        report(result, peak)
    print(f"total {time.perf_counter() - start:.0f} s")
    for name, r in results.items():
        extra = f", compiled {r['compiled']:.2f}x" if r["compiled"] is not None else ""
        if r["bf16_gain"] is not None:
            extra += f", tubemask bf16 vs hf fp32 {r['bf16_gain']['tubemask']:.2f}x"
        print(
            f"summary {name} ({args.precision}): identical math {r['identical']:.2f}x, "
            f"dual masking {r['dual']:.2f}x{extra}"
        )
    final = results["base"] if "base" in results else results[models[-1]]
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"  # a bf16 figure never reads as the fp32 one
    print(f"ratio tubemask/hf{suffix}: {final['identical']:.2f}")


if __name__ == "__main__":
    main()
