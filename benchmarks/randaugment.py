"""RandAugment cost: tubemask's clip ops vs the same ops written plainly with torchvision, identical output.

Fine-tuning loaders spend most of their CPU time in RandAugment (`rand-m7-n4-mstd0.5-inc1`, VideoMAE's setting).
tubemask's `RANDAUGMENT_OPS` compute several ops by exact shortcuts (a shifted copy for translations, a gather for
rotations and shears, 256-entry tables for the value-wise ops, per-plane tables for autocontrast and equalize);
the peer is `TORCHVISION_OPS`, each op one torchvision call on the whole clip (what
a straightforward port of timm's RandAugment to tensors does). Both sides must return the same clip, value for value:
the script checks it before timing.

Input: a 16-frame 320 x 240 clip from `render_motion_clip`, channels-last uint8 as torchcodec decodes it. One torch
thread, process CPU time. Per op: magnitude 7, alternated pairs of calls, median time and median of the per-pair
ratios. Whole clips: `parse_randaugment("rand-m7-n4-mstd0.5-inc1")` over the same seeds with either op table,
alternated rounds; the last line is `ratio randaugment tubemask/torchvision: X.XX` for whole clips.

    python benchmarks/randaugment.py [--quick]
"""

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from tubemask.data import parse_randaugment
from tubemask.data.motion_clips import render_motion_clip
from tubemask.data.randaugment import RANDAUGMENT_OPS, TORCHVISION_OPS

SPEC = "rand-m7-n4-mstd0.5-inc1"


def cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


@contextmanager
def plain_ops() -> Iterator[None]:
    """Run RandAugment with the torchvision op table (the clip-level peer), restoring tubemask's after."""
    saved = dict(RANDAUGMENT_OPS)
    RANDAUGMENT_OPS.update(TORCHVISION_OPS)
    try:
        yield
    finally:
        RANDAUGMENT_OPS.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs, seeds and rounds (about 20 s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs, seeds, rounds = (5, 20, 2) if args.quick else (20, 60, 6)
    clip = render_motion_clip(0, num_frames=16, size=(240, 320), seed=0).contiguous(memory_format=torch.channels_last)
    print(f"clip {tuple(clip.shape)} uint8 channels-last, 1 thread, process CPU time; {pairs} alternated pairs per op")
    print(f"  {'op':22s} {'tubemask ms':>11s} {'torchvision ms':>14s} {'ratio':>6s}")
    for name in RANDAUGMENT_OPS:
        ours, plain = RANDAUGMENT_OPS[name], TORCHVISION_OPS[name]
        assert torch.equal(ours(clip, 7.0, 1.0), plain(clip, 7.0, 1.0)), f"{name}: the two ops disagree"
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        for k in range(pairs):
            order = (("ours", ours), ("plain", plain)) if k % 2 == 0 else (("plain", plain), ("ours", ours))
            for side, op in order:
                times[side].append(cpu_seconds(lambda op=op: op(clip, 7.0, 1.0)))
        ratio = statistics.median(p / o for o, p in zip(times["ours"], times["plain"], strict=True))
        ours_ms, plain_ms = (statistics.median(times[k]) * 1e3 for k in ("ours", "plain"))
        print(f"  {name:22s} {ours_ms:11.2f} {plain_ms:14.2f} {ratio:5.2f}x")

    augment = parse_randaugment(SPEC)

    def run_clips() -> list[torch.Tensor]:
        return [augment(clip, generator=torch.Generator().manual_seed(seed)) for seed in range(seeds)]

    fast = run_clips()
    with plain_ops():
        reference = run_clips()
    assert all(torch.equal(a, b) for a, b in zip(fast, reference, strict=True)), "whole clips disagree"
    per_clip: dict[str, list[float]] = {"ours": [], "plain": []}
    for r in range(rounds):
        for side in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
            if side == "plain":
                with plain_ops():
                    per_clip[side].append(cpu_seconds(run_clips) / seeds)
            else:
                per_clip[side].append(cpu_seconds(run_clips) / seeds)
    ratio = statistics.median(p / o for o, p in zip(per_clip["ours"], per_clip["plain"], strict=True))
    ours_ms, plain_ms = (statistics.median(per_clip[k]) * 1e3 for k in ("ours", "plain"))
    print(
        f"whole clips ({SPEC}, {seeds} seeds, {rounds} alternated rounds, identical clips): tubemask {ours_ms:.1f} ms, "
        f"torchvision {plain_ms:.1f} ms per clip"
    )
    print(f"ratio randaugment tubemask/torchvision: {ratio:.2f}")


if __name__ == "__main__":
    main()
