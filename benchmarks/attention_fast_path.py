"""Train step with the CPU flash-attention fast path (an autograd Function) vs plain `F.scaled_dot_product_attention`.

The question (STYLE.md rule 13, issue 16): does the fast path that tubemask.layers carried until 2026-12-04 move a
step-level figure? (It did not, and was removed: results/performance-history.md, "CPU flash-attention fast path".) It called
SDPA's private CPU flash op `aten._scaled_dot_product_flash_attention_for_cpu` through an autograd Function whose
backward stacked the q/k/v gradients token-major in one copy, and, under bf16, ran sequences of up to 256 tokens in
float32 when a backward followed (so its bf16 numbers depended on grad mode). The candidate is copied here
(`_CPUFlashAttention`, `fast_qkv_attention`) so the figure can be reproduced after the library dropped it; the
reference is `tubemask.layers.qkv_attention` (plain SDPA). Each side is installed by replacing
`tubemask.layers.qkv_attention`, the function every `Attention` module calls, so both sides run the same model object.

One step is `zero_grad`, forward under `common.autocast(precision)`, backward and an AdamW step, of a 16x224x224 clip
batch: the pretraining model (`tubemask.models` builders, tube mask 0.9) and, with `--classifier`, the fine-tuning
classifier (`videomae_classifier`, all 1568 tokens, cross-entropy). Sides alternate A, B, B, A, ... and the figure is
the median of the per-round ratios `sdpa / fast` (above 1: the fast path is faster), with the per-round spread.

    python benchmarks/attention_fast_path.py [--models small,base] [--pairs N] [--batch B] [--precision fp32|bf16]
        [--classifier] [--threads T] [--clock cpu|wall]

Default: 1 thread and the process's CPU time, because on the shared 2-core machine wall time under other jobs' load
swung the per-round ratio from 0.36 to 2.0 (2 threads, load 4-5).
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

import tubemask.layers  # noqa: E402
from tubemask.classification import videomae_classifier  # noqa: E402
from tubemask.models import SIZES, videomae_pretrain  # noqa: E402

SDPA = tubemask.layers.qkv_attention  # the library's path: plain F.scaled_dot_product_attention, the reference
_BF16_AS_FP32_MAX_TOKENS = 256


def _split_heads(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    b, n, three_d = qkv.shape
    return qkv.view(b, n, 3, num_heads, three_d // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


class _CPUFlashAttention(torch.autograd.Function):
    """The candidate as tubemask.layers had it (commit 4868250): the CPU flash op, gradients stacked into `[b n 3d]`."""

    @staticmethod
    def forward(ctx, qkv: Tensor, num_heads: int, as_float32: bool) -> Tensor:
        b, n, three_d = qkv.shape
        dtype = qkv.dtype
        if as_float32:
            qkv = qkv.float()
        q, k, v = _split_heads(qkv, num_heads)
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)
        ctx.save_for_backward(qkv, out, logsumexp)
        ctx.num_heads = num_heads
        ctx.dtype = dtype
        return out.transpose(1, 2).reshape(b, n, three_d // 3).to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        qkv, out, logsumexp = ctx.saved_tensors
        b, n, three_d = qkv.shape
        q, k, v = _split_heads(qkv, ctx.num_heads)
        grad_heads = grad.to(qkv.dtype).reshape(b, n, ctx.num_heads, -1).transpose(1, 2)
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_heads, q, k, v, out, logsumexp, 0.0, False
        )
        return torch.stack([g.transpose(1, 2) for g in grads], dim=2).view(b, n, three_d).to(ctx.dtype), None, None


def fast_qkv_attention(qkv: Tensor, num_heads: int, *, dropout_p: float = 0.0, upcast: bool = True) -> Tensor:
    """The candidate's dispatch (CPU, no dropout); `upcast=False` drops the bf16 -> float32 rule for short sequences."""
    if qkv.device.type != "cpu" or dropout_p != 0.0:
        return SDPA(qkv, num_heads, dropout_p=dropout_p)
    as_float32 = (
        upcast
        and qkv.dtype == torch.bfloat16
        and qkv.shape[1] <= _BF16_AS_FP32_MAX_TOKENS
        and torch.is_grad_enabled()
        and qkv.requires_grad
    )
    return _CPUFlashAttention.apply(qkv, num_heads, as_float32)


def fast_no_upcast(qkv: Tensor, num_heads: int, *, dropout_p: float = 0.0) -> Tensor:
    return fast_qkv_attention(qkv, num_heads, dropout_p=dropout_p, upcast=False)


def check_equal(batch: int = 2, n: int = 160, dim: int = 384, heads: int = 6) -> None:
    """The candidate gives SDPA's fp32 output and gradient bit for bit (so the timing compares the same math)."""
    torch.manual_seed(0)
    qkv = torch.randn(batch, n, 3 * dim, requires_grad=True)
    grad = torch.randn(batch, n, dim)
    outs = [f(qkv, heads) for f in (SDPA, fast_qkv_attention)]
    grads = [torch.autograd.grad(o, qkv, grad)[0] for o in outs]
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1]), "candidate differs from SDPA"


def make_step(
    model: torch.nn.Module, loss_fn: Callable[[], Tensor], attention: Callable, precision: str
) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.05)

    def step() -> None:
        tubemask.layers.qkv_attention = attention
        try:
            optimizer.zero_grad(set_to_none=True)
            with common.autocast(precision):
                loss = loss_fn()
            loss.backward()
            optimizer.step()
        finally:
            tubemask.layers.qkv_attention = SDPA

    return step


def bench(
    label: str, model: torch.nn.Module, loss_fn: Callable[[], Tensor], *, precision: str, pairs: int, clock: str
) -> dict[str, float]:
    model.train()
    sides = {"sdpa": SDPA, "fast": fast_qkv_attention}
    if precision == "bf16":
        sides["fast, no fp32 upcast"] = fast_no_upcast
    # one optimizer per side over the same parameters: the AdamW state stays warm and the step's work is the same
    steps = {name: make_step(model, loss_fn, fn, precision) for name, fn in sides.items()}
    # CPU time: a busy shared machine disturbs it far less than wall time when the step runs on one thread
    times = common.alternate(
        steps, pairs=pairs, warmup=2, clock=time.process_time if clock == "cpu" else time.perf_counter
    )
    print(
        f"[{label}] {precision}, {pairs} alternated rounds, {clock} clock; median s/step: "
        + ", ".join(f"{name} {statistics.median(ts):.3f}" for name, ts in times.items())
    )
    result = {}
    for name in sides:
        if name == "sdpa":
            continue
        per_round = sorted(s / f for s, f in zip(times["sdpa"], times[name], strict=True))
        ratio = statistics.median(per_round)
        q1, _, q3 = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else (ratio, ratio, ratio)
        print(
            f"  sdpa/{name}: median {ratio:.3f} (quartiles {q1:.3f}-{q3:.3f}, range "
            f"{per_round[0]:.3f}-{per_round[-1]:.3f})"
        )
        result[name] = ratio
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small,base")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time (default) or wall")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--classifier", action="store_true", help="also the fine-tuning classifier (all tokens)")
    parser.add_argument("--no-pretrain", action="store_true", help="only the classifier")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"tubemask from {Path(tubemask.__file__).parent}, "
        f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    check_equal()
    start = time.perf_counter()
    video = common.make_video(args.batch)
    for name in args.models.split(","):
        if not args.no_pretrain:
            torch.manual_seed(0)
            model = videomae_pretrain(SIZES[name])
            mask = common.tube_mask(args.batch, model.grid(video.shape))
            bench(
                f"pretrain {name}, batch {args.batch}",
                model,
                lambda m=model, mask=mask: m(video, mask).loss,
                precision=args.precision,
                pairs=args.pairs,
                clock=args.clock,
            )
        if args.classifier:
            torch.manual_seed(0)
            clf = videomae_classifier(name, num_classes=400)
            labels = torch.arange(args.batch) % 400
            bench(
                f"classifier {name}, batch {args.batch}, all tokens",
                clf,
                lambda m=clf, y=labels: F.cross_entropy(m(video), y),
                precision=args.precision,
                pairs=args.pairs,
                clock=args.clock,
            )
    print(
        f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; total "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
