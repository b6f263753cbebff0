"""Mask sampling cost against a training step: a plain report, no target.

Times `draw_mask` with each built-in masker on VideoMAE's token grid (8x14x14, ratio 0.9; running cell 0.5) at the
step's batch and at `--batch`, and one ViT-S train step (tubemask, 16x224x224, batch 2), and prints each masker's cost
as a share of the step. Mask sampling is far below 1% of a step, so the sampler is written to be read, not tuned (a
speed target against the official NumPy generator was withdrawn in issue 16).

    python benchmarks/masking.py [--quick] [--batch 256] [--threads 2]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.masking import FrameMasker, RandomMasker, RunningCellMasker, TubeMasker, draw_mask  # noqa: E402
from tubemask.models import videomae_pretrain  # noqa: E402


def seconds_per_call(fn, calls: int, rounds: int) -> float:
    """Median over `rounds` of the mean seconds per call of `calls` back-to-back calls."""
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_round.append((time.perf_counter() - t0) / calls)
    return statistics.median(per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and one ViT-S step")
    parser.add_argument("--batch", type=int, default=256, help="the larger batch to time the maskers at")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, calls = (3, 10) if args.quick else (9, 20)
    generator = torch.Generator().manual_seed(0)

    model = videomae_pretrain("small").train()
    step_batch = 2
    video = common.make_video(step_batch)
    grid = model.grid(video.shape)  # (8, 14, 14)
    mask = draw_mask(TubeMasker(mask_ratio=0.9), step_batch, grid, generator=generator)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(video, mask).loss.backward()

    step()
    step_s = statistics.median(common.time_call(step) for _ in range(1 if args.quick else 3))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; grid {grid}; median of {rounds} rounds")
    print(f"ViT-S train step (tubemask, batch {step_batch}): {step_s:.3f} s")
    print(f"  {'masker':<18} {'batch':>6} {'us/call':>10} {'share of the step':>18}")
    maskers = [TubeMasker(0.9), FrameMasker(0.5), RandomMasker(0.9), RunningCellMasker(0.5)]
    for masker in maskers:
        for batch in (step_batch, args.batch):
            sec = seconds_per_call(lambda m=masker, b=batch: draw_mask(m, b, grid, generator=generator), calls, rounds)
            share = sec / step_s * step_batch / batch  # per clip: the mask's cost over the step's
            print(f"  {type(masker).__name__:<18} {batch:>6} {sec * 1e6:10.1f} {share:18.5%}")


if __name__ == "__main__":
    main()
