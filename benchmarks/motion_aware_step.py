"""Motion-aware token selection (EVEREST) against tube masking with full decoding: FLOPs and CPU step time, ViT-S.

Both sides are tubemask's `videomae_pretrain("small")` with the same weights on the same 16x224x224 clips (batch 2,
float32). Tube: a 0.9 tube mask, the decoder reconstructs every hidden cube (VideoMAE). Motion-aware: the encoder
sees the 10% most-moving cubes (`MotionAwareMasker(0.9, query_ratio=Q)`), the decoder reconstructs the next Q of
all cubes by dual masking and the rest is dropped; with `--visible random` (EVEREST's official split) the encoder's
10% are drawn at random among the `0.1 + Q` most-moving cubes and the decoder takes the others. A step is the mask
(the motion energy of the clip included), forward and backward. Sides alternate for `--pairs` rounds; the speed-up is the median of the per-round ratios.
FLOPs are counted analytically (`common.forward_flops`, x3 for forward + backward).

    python benchmarks/motion_aware_step.py [--query-ratio 0.3] [--visible {top,random}] [--pairs 6] [--quick]
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.masking import TubeMasker  # noqa: E402
from tubemask.models import SIZES, videomae_pretrain  # noqa: E402
from tubemask.motion_aware import MotionAwareMasker  # noqa: E402
from tubemask.shapes import shape_checks_disabled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query-ratio", type=float, default=0.3)
    parser.add_argument("--visible", choices=("top", "random"), default="top", help="MotionAwareMasker(visible=)")
    common.add_cpu_run_options(parser, pairs=6)
    args = parser.parse_args()
    name, frames, side, pairs = common.cpu_run(args)
    size = SIZES[name]
    torch.manual_seed(0)
    model = videomae_pretrain(size).train()
    video = torch.randn(2, 3, frames, side, side, generator=torch.Generator().manual_seed(1))
    grid = model.grid(video.shape)
    n = grid[0] * grid[1] * grid[2]
    tube = TubeMasker(0.9)
    aware = MotionAwareMasker(0.9, query_ratio=args.query_ratio, visible=args.visible)
    gen = torch.Generator().manual_seed(0)

    def tube_step() -> None:
        mask = tube(2, grid, generator=gen)
        model.zero_grad(set_to_none=True)
        model(video, mask, num_masked=tube.num_masked(grid)).loss.backward()

    def aware_step() -> None:
        mask, decoder_mask = aware.decoder_mask(2, grid, generator=gen, video=video)
        model.zero_grad(set_to_none=True)
        out = model(
            video,
            mask,
            decoder_mask=decoder_mask,
            num_masked=aware.num_masked(grid),
            num_queried=aware.num_queried(grid),
        )
        out.loss.backward()

    flops = {
        "tube": 3 * common.forward_flops(size, visible=n - tube.num_masked(grid), decoded=tube.num_masked(grid)),
        "motion-aware": 3
        * common.forward_flops(size, visible=n - aware.num_masked(grid), decoded=aware.num_queried(grid)),
    }
    with shape_checks_disabled():
        times = common.alternate({"tube": tube_step, "motion-aware": aware_step}, pairs=pairs)
    print(
        f"ViT-{name}, batch 2, {frames}x{side}x{side}, {n} cubes; tube 0.9 decoding all {tube.num_masked(grid)} hidden "
        f"cubes vs motion-aware 0.9 ({args.visible} split) decoding {aware.num_queried(grid)}; {pairs} alternated "
        f"rounds, torch {torch.__version__}, {args.threads} threads"
    )
    print(f"  {'side':<14} {'GFLOP/step (2 clips)':>21} {'s/step (median)':>16}")
    for side_name in ("tube", "motion-aware"):
        print(f"  {side_name:<14} {flops[side_name] * 2 / 1e9:21.1f} {statistics.median(times[side_name]):16.3f}")
    print(f"ratio flops tube/motion-aware: {flops['tube'] / flops['motion-aware']:.2f}")
    print(f"ratio step_time tube/motion-aware: {common.median_ratio(times['tube'], times['motion-aware']):.2f}")


if __name__ == "__main__":
    main()
