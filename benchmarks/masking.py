"""Mask sampling cost: tubemask's batched TubeMasker vs the official VideoMAE per-sample NumPy generator.

The peer is VideoMAE's `TubeMaskingGenerator` as the official data pipeline uses it: per sample, `np.hstack` of
zeros and ones, `np.random.shuffle`, `np.tile` over time; the batch is stacked and turned into a Bool tensor as the
collate does. tubemask draws the whole batch at once from a `torch.Generator` (`choose_k`: per row, a few random
bytes, skipping repeats and out-of-range values, no sort). Both sides produce the same product, a `Bool[256, 1568]`
tube mask; the script checks shape, dtype, counts and tube structure of both before timing.

Also reported: the floor of any torch sampler here (drawing the random words alone, and writing the 400 KB output),
and the masking cost as a share of a ViT-S train step (tubemask, 16x224x224, batch 2), per clip.

    python benchmarks/masking.py [--quick]
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.masking import TubeMasker, _draws_per_row  # noqa: E402
from tubemask.models import videomae_vit_s  # noqa: E402


class NumpyTubeMasking:
    """The official VideoMAE `TubeMaskingGenerator` (one sample per call; 1 = masked)."""

    def __init__(self, grid: tuple[int, int, int], mask_ratio: float) -> None:
        self.frames, height, width = grid
        self.per_frame = height * width
        self.masked_per_frame = int(mask_ratio * self.per_frame)

    def __call__(self) -> np.ndarray:
        mask_per_frame = np.hstack([np.zeros(self.per_frame - self.masked_per_frame), np.ones(self.masked_per_frame)])
        np.random.shuffle(mask_per_frame)  # noqa: NPY002  (the official code's global-state shuffle)
        return np.tile(mask_per_frame, (self.frames, 1)).flatten()


def numpy_batch(gen: NumpyTubeMasking, batch: int) -> torch.Tensor:
    """A batch as the official loader delivers it: one call per sample, stacked, as a Bool tensor."""
    return torch.from_numpy(np.stack([gen() for _ in range(batch)])).to(torch.bool)


def per_call(fn, calls: int) -> float:
    """Seconds per call of `fn` over `calls` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and one ViT-S step")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid, ratio, batch = (8, 14, 14), 0.9, args.batch
    rounds, calls = (5, 5) if args.quick else (15, 20)

    masker = TubeMasker(mask_ratio=ratio)
    generator = torch.Generator().manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    official = NumpyTubeMasking(grid, ratio)
    a, b = masker(batch, grid, generator=generator), numpy_batch(official, batch)
    for mask in (a, b):
        assert mask.shape == (batch, math.prod(grid)) and mask.dtype == torch.bool and mask.is_contiguous()
        slots = mask.view(batch, grid[0], -1)
        assert torch.equal(slots, slots[:, :1].expand_as(slots)), "a tube mask repeats one frame-grid over time"
    assert torch.equal(a.sum(1), b.sum(1)), "the two samplers disagree on the masked count"

    fns = {
        "numpy per-sample": lambda: numpy_batch(official, batch),
        "tubemask TubeMasker": lambda: masker(batch, grid, generator=generator),
    }
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in fns if r % 2 == 0 else reversed(list(fns)):
            times[name].append(per_call(fns[name], calls))
    speedup = common.median_ratio(times["numpy per-sample"], times["tubemask TubeMasker"])

    # the floor: the random words choose_k draws for this batch, writing the output tensor, one of its ~12 tensor ops
    per_row = _draws_per_row(grid[1] * grid[2], grid[1] * grid[2] - masker.num_masked(grid) // grid[0], 8)
    words = -(-batch * per_row // 8)  # 8-bit draws, 8 per word
    draws_like = torch.zeros(batch, per_row, dtype=torch.int64)  # choose_k runs about a dozen ops of this size
    floor = {
        "draw the random words": lambda: torch.empty(words, dtype=torch.int64).random_(
            -(2**63), None, generator=generator
        ),
        "write the output": lambda: torch.empty(batch, math.prod(grid), dtype=torch.bool).numpy().fill(False),
        "one op on the draws": lambda: torch.eq(draws_like, draws_like),
        "one empty torch op": lambda: torch.empty(0),
    }
    floor_s = {name: statistics.median(per_call(fn, calls * 10) for _ in range(rounds)) for name, fn in floor.items()}

    # share of a ViT-S train step (tubemask, batch 2), per clip
    model = videomae_vit_s().train()
    step_batch = 2
    video = common.make_video(step_batch)
    mask2 = masker(step_batch, model.grid(video.shape), generator=generator)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(video, mask2).loss.backward()

    step()
    step_s = statistics.median(common.time_call(step) for _ in range(1 if args.quick else 3))
    mask2_s = statistics.median(
        per_call(lambda: masker(step_batch, grid, generator=generator), calls * 5) for _ in range(rounds)
    )

    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads; "
        f"batch {batch}, grid {grid}, tube ratio {ratio}; {rounds} alternated rounds of {calls} calls"
    )
    print(f"  {'sampler':<22} {'median ms/batch':>15} {'us/clip':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<22} {med * 1e3:15.3f} {med / batch * 1e6:8.2f}")
    ours_clip = statistics.median(times["tubemask TubeMasker"]) / batch
    numpy_s = statistics.median(times["numpy per-sample"])
    print(f"  speed-up tubemask/numpy (median of per-round ratios): {speedup:.1f}x  (target >= 50x)")
    for name, sec in floor_s.items():
        print(f"  floor: {name:<24} {sec * 1e6:8.1f} us  (numpy / this = {numpy_s / sec:.0f}x)")
    print(f"  ViT-S train step (tubemask, batch {step_batch}): {step_s:.3f} s = {step_s / step_batch:.3f} s/clip")
    print(
        f"  masking share of the step, per clip at batch {batch}: {ours_clip / (step_s / step_batch):.5%}; "
        f"a batch-{step_batch} mask ({mask2_s * 1e6:.0f} us) vs the batch-{step_batch} step: "
        f"{mask2_s / step_s:.5%}  (target < 1%)"
    )
    print(f"ratio masking tubemask/numpy: {speedup:.2f}")


if __name__ == "__main__":
    main()
