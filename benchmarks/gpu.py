"""ViT-B pretraining step on one CUDA GPU: bf16 autocast, largest batch that fits, eager and torch.compile, MFU.

A step is zero_grad, forward under `torch.autocast("cuda", torch.bfloat16)`, backward and a fused AdamW update of
`videomae_vit_b()` on 16x224x224 clips with a 0.9 tube mask (sampled on the GPU). The batch is found by doubling from
`--start-batch` up to `--max-batch` until CUDA runs out of memory. Model FLOP utilisation counts the analytic model FLOPs
(`benchmarks/common.py: forward_flops`, x3 for the train step) against `--peak-tflops` (default 989: dense bf16 of an
H100/H200 SXM). An optional loader row times tubemask's synthetic-clip pipeline if `tubemask.data` imports (it is not
needed for the model rows; torchcodec may be absent). Runs in well under 5 minutes.

    python benchmarks/gpu.py [--quick] [--peak-tflops 989] [--max-batch 256] [--no-compile]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.masking import TubeMasker  # noqa: E402
from tubemask.models import SIZES, videomae_vit_b  # noqa: E402


def _no_shape_checks() -> None:
    """Switch off jaxtyping's runtime shape checks: they cost Python time per call and break compiled graphs."""
    try:
        import jaxtyping

        jaxtyping.config.update("jaxtyping_disable", True)
    except (ImportError, AttributeError):
        pass


def make_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, grid: tuple[int, int, int]):
    video = torch.randn(batch, 3, *common.CLIP, device="cuda")
    masker = TubeMasker(mask_ratio=0.9)

    def step() -> None:
        mask = masker(batch, grid, device="cuda")
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(video, mask).loss
        loss.backward()
        opt.step()

    return step


def fits(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, grid: tuple[int, int, int]) -> bool:
    try:
        make_step(model, opt, batch, grid)()
        torch.cuda.synchronize()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def timed(step, steps: int, warmup: int) -> float:
    """Seconds per step, CUDA-synchronised."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def loader_row(batch: int) -> None:
    """Optional: time tubemask's data pipeline on synthetic clips (skipped when tubemask.data cannot be used)."""
    try:
        from tubemask.data import synthetic  # noqa: F401  (imports torchcodec-free parts only)
    except Exception as error:  # any import problem means: skip this row
        print(f"  loader: skipped ({type(error).__name__}: {error})")
        return
    print("  loader: tubemask.data imports; decoding throughput is measured by the data benchmarks, not here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="max batch 64, fewer steps")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU, TFLOP/s")
    parser.add_argument("--start-batch", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return
    start = time.perf_counter()
    _no_shape_checks()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    max_batch = min(args.max_batch, 64) if args.quick else args.max_batch
    steps = args.steps or (5 if args.quick else 15)
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"peak {args.peak_tflops:.0f} TFLOP/s bf16 (--peak-tflops)"
    )

    model = videomae_vit_b().cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05, fused=True)
    grid = model.grid((1, 3, *common.CLIP))
    batch = None
    b = args.start_batch
    while b <= max_batch:
        ok = fits(model, opt, b, grid)
        print(f"  batch {b}: {'fits' if ok else 'out of memory'}")
        if not ok:
            break
        batch = b
        b *= 2
    if batch is None:
        print(f"  even batch {args.start_batch} does not fit: nothing measured")
        return
    n = grid[0] * grid[1] * grid[2]
    masked = TubeMasker(mask_ratio=0.9).num_masked(grid)
    train_flops = 3 * common.forward_flops(SIZES["base"], visible=n - masked, decoded=masked)

    rows = {}
    torch.cuda.reset_peak_memory_stats()
    rows["eager"] = timed(make_step(model, opt, batch, grid), steps, warmup=3)
    peak_mem = torch.cuda.max_memory_allocated() / 2**30
    if not args.no_compile:
        try:
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            compiled_step = make_step(compiled, opt, batch, grid)
            compiled_step()
            torch.cuda.synchronize()
            print(f"  torch.compile: first step (compilation) {time.perf_counter() - t0:.0f} s")
            rows["compiled"] = timed(compiled_step, steps, warmup=2)
        except Exception as error:  # report and keep the eager figures
            print(f"  torch.compile failed: {type(error).__name__}: {str(error)[:300]}")

    print(
        f"ViT-B/16 pretraining step, bf16 autocast, fused AdamW, batch {batch}, 16x224x224, tube 0.9, "
        f"{train_flops / 1e9:.0f} model GFLOP per clip; peak memory eager {peak_mem:.1f} GiB"
    )
    print(f"  {'mode':<9} {'s/step':>8} {'clips/s':>8} {'TFLOP/s':>8} {'MFU':>6}")
    mfu = {}
    for mode, sec in rows.items():
        tflops = train_flops * batch / sec / 1e12
        mfu[mode] = tflops / args.peak_tflops
        print(f"  {mode:<9} {sec:8.3f} {batch / sec:8.1f} {tflops:8.1f} {mfu[mode]:6.1%}")
    loader_row(batch)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"ratio mfu: {max(mfu.values()):.2f}")


if __name__ == "__main__":
    main()
