"""Shared helpers of the benchmarks: model pairs with identical weights, timing, FLOP counts.

Not a test module and not part of the package: the benchmark scripts import it as `common` (run them as
`python benchmarks/NAME.py`). Timings on a shared machine are noisy, so comparisons run the two sides alternately
(A, B, A, B, ...) and report the median of the per-pair ratios, which cancels slow drifts that hit both sides.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tubemask.models import SIZES, ViTSize

__all__ = [
    "CLIP",
    "ModelPair",
    "hf_config",
    "make_pair",
    "make_video",
    "tube_mask",
    "forward_flops",
    "matmul_peak_gflops",
    "cuda_matmul_peak_tflops",
    "autocast",
    "time_call",
    "alternate",
    "median_ratio",
]

CLIP = (16, 224, 224)  # frames, height, width of a VideoMAE pretraining clip
TUBELET, PATCH = 2, 16


def hf_config(size: ViTSize, *, frames: int = CLIP[0], image: int = CLIP[1]):
    """An HF `VideoMAEConfig` with the widths of `size`, SDPA attention and norm-pix loss (VideoMAE's recipe)."""
    from transformers import VideoMAEConfig

    return VideoMAEConfig(
        image_size=image,
        patch_size=PATCH,
        num_channels=3,
        num_frames=frames,
        tubelet_size=TUBELET,
        hidden_size=size.embed_dim,
        num_hidden_layers=size.depth,
        num_attention_heads=size.num_heads,
        intermediate_size=4 * size.embed_dim,
        decoder_hidden_size=size.decoder_dim,
        decoder_num_hidden_layers=size.decoder_depth,
        decoder_num_attention_heads=size.decoder_heads,
        decoder_intermediate_size=4 * size.decoder_dim,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        use_mean_pooling=True,
        norm_pix_loss=True,
        attn_implementation="sdpa",
    )


@dataclass
class ModelPair:
    """An HF `VideoMAEForPreTraining` and the tubemask `MAEWrapper` holding the same weights."""

    name: str
    size: ViTSize
    hf: nn.Module
    ours: nn.Module


def make_pair(name: str, *, seed: int = 0) -> ModelPair:
    """Build the HF model for preset `name` ("small", "base", ...) and convert it to tubemask."""
    from transformers import VideoMAEForPreTraining

    from tubemask.interop import from_hf

    size = SIZES[name]
    torch.manual_seed(seed)
    hf = VideoMAEForPreTraining(hf_config(size))
    ours = from_hf(hf)
    return ModelPair(name, size, hf.train(), ours.train())


def make_video(batch: int, *, frames: int = CLIP[0], image: int = CLIP[1], seed: int = 0) -> torch.Tensor:
    """A normalised-looking clip batch `[b c t h w]` (standard normal values)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, image, image, generator=g)


def tube_mask(batch: int, grid: tuple[int, int, int], *, ratio: float = 0.9, seed: int = 0) -> torch.Tensor:
    """A tube mask from tubemask's TubeMasker (True = masked)."""
    from tubemask.masking import TubeMasker

    return TubeMasker(mask_ratio=ratio)(batch, grid, generator=torch.Generator().manual_seed(seed))


def _block_flops(n: int, d: int) -> float:
    return 24 * n * d * d + 4 * n * n * d


def encoder_flops(
    size: ViTSize, *, tokens: int, embedded: int | None = None, patch: int = PATCH, tubelet: int = TUBELET
) -> float:
    """Forward FLOPs of one clip through the cube embedding and the encoder on `tokens` tokens (a classifier's trunk:
    its pooling and linear head are negligible). `embedded`: the cubes embedded (default: `tokens`); `patch`,
    `tubelet`: the cube's size (default: VideoMAE's 16 x 16 x 2)."""
    embedded = tokens if embedded is None else embedded
    flops = 2 * embedded * tubelet * patch * patch * 3 * size.embed_dim
    return float(flops + size.depth * _block_flops(tokens, size.embed_dim))


def forward_flops(
    size: ViTSize,
    *,
    visible: int,
    decoded: int,
    embedded: int | None = None,
    patch: int = PATCH,
    tubelet: int = TUBELET,
    out: int | None = None,
) -> float:
    """Forward FLOPs of one clip: cube embedding, encoder on `visible` tokens, decoder on `visible + decoded`, head.

    Counts 2 FLOPs per multiply-add; per block `24*n*d^2 + 4*n^2*d` (MLP ratio 4). `embedded` is the number of cubes
    embedded (default: only the visible ones, the useful work); `patch`, `tubelet` the cube's size (default: VideoMAE's
    16 x 16 x 2); `out` the head's width per decoded cube (default: the cube's pixels, a pixel target).
    """
    out = tubelet * patch * patch * 3 if out is None else out
    flops = encoder_flops(size, tokens=visible, embedded=embedded, patch=patch, tubelet=tubelet)
    flops += 2 * visible * size.embed_dim * size.decoder_dim
    flops += size.decoder_depth * _block_flops(visible + decoded, size.decoder_dim)
    flops += 2 * decoded * size.decoder_dim * out
    return float(flops)


def add_cpu_run_options(parser, *, pairs: int) -> None:
    """The options of a CPU benchmark that alternates two sides: `--pairs`, `--model`, `--threads`, `--quick`."""
    parser.add_argument("--pairs", type=int, default=pairs)
    parser.add_argument("--model", default="small", choices=sorted(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: ViT-tiny on 8x64x64 clips, 2 rounds")


def cpu_run(args) -> tuple[str, int, int, int]:
    """`(model name, frames, side, rounds)` of a run with `add_cpu_run_options`'s options; sets the thread count."""
    torch.set_num_threads(args.threads)
    return ("tiny", 8, 64, 2) if args.quick else (args.model, CLIP[0], CLIP[1], args.pairs)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, *, dtype: torch.dtype = torch.float32) -> float:
    """Best `torch.mm` rate of an `n x n` product in `dtype` on this machine's CPU now, in GFLOP/s.

    CPU only: it times with the host clock and never synchronises a device, so on CUDA it would time kernel launches,
    not products. Its tensors are made on the CPU whatever the default device; use
    `cuda_matmul_peak_tflops` (CUDA events) on a GPU.
    """
    a = torch.randn(n, n, dtype=dtype, device="cpu")
    b = torch.randn(n, n, dtype=dtype, device="cpu")
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def cuda_matmul_peak_tflops(
    n: int = 8192, repeats: int = 10, warmup: int = 3, *, dtype: torch.dtype = torch.bfloat16, device: str = "cuda"
) -> tuple[float, float]:
    """Best and median rate of an `n x n` `torch.mm` in `dtype` on a CUDA device, in TFLOP/s, timed with CUDA events.

    The yardstick for a model's FLOP utilisation measured in the same process: what this GPU, its clocks and this
    torch's cuBLAS reach on a large dense product now (the spec sheet's peak is rarely reached). Each product is
    bracketed by two events on the current stream and waited for, after `warmup` untimed products.
    """
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"cuda_matmul_peak_tflops needs a CUDA device, got device={device!r}")
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(warmup):
        torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(a, b)
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)
    flops = 2 * n**3
    return flops / min(seconds) / 1e12, flops / statistics.median(seconds) / 1e12


def autocast(precision: str, device: str = "cpu") -> torch.autocast:
    """The benchmarks' precision switch: bf16 autocast on `device` for `"bf16"`, a disabled autocast for `"fp32"`."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}; allowed: 'fp32', 'bf16'")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def time_call(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call by `clock` (default wall time; `time.process_time` for this process's CPU time)."""
    t0 = clock()
    fn()
    return clock() - t0


def alternate(
    fns: dict[str, Callable[[], object]],
    *,
    pairs: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time every function in turn by `clock`, `pairs` rounds (the order flips every round), after `warmup` untimed
    rounds."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(pairs):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(time_call(fns[name], clock))
    return times


def median_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of `slow[i] / fast[i]` (how many times faster `fast` is)."""
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))
