"""Motion-aware token selection at fine-tuning time (EVEREST) against every cube: FLOPs and CPU time, ViT-S.

Both sides are tubemask's `videomae_classifier("small")` with the same weights on the same 16x224x224 clips (batch
2, float32, 400 classes). Every cube: the plain classifier (VideoMAE fine-tuning). Motion-aware: the same model with
`selector=MotionAwareMasker(mask_ratio=DROP)`: each forward ranks the clip's cubes by motion energy and the encoder
sees the `1 - DROP` most moving ones (EVEREST's fine-tuning drops 0.4). Two figures: a training step (the selection,
forward, cross-entropy and backward) and an inference forward (no gradients, eval mode: the selection is in both).
Sides alternate for `--pairs` rounds; each speed-up is the median of the per-round ratios. FLOPs are counted
analytically (`common.encoder_flops`, x3 for a training step).

    python benchmarks/motion_aware_finetune.py [--drop 0.4] [--pairs 6] [--quick]
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.classification import videomae_classifier  # noqa: E402
from tubemask.models import SIZES  # noqa: E402
from tubemask.motion_aware import MotionAwareMasker  # noqa: E402
from tubemask.shapes import shape_checks_disabled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop", type=float, default=0.4, help="share of cubes dropped (EVEREST: 0.4)")
    common.add_cpu_run_options(parser, pairs=6)
    args = parser.parse_args()
    name, frames, side, pairs = common.cpu_run(args)
    size = SIZES[name]
    masker = MotionAwareMasker(mask_ratio=args.drop)
    torch.manual_seed(0)
    plain = videomae_classifier(size, num_classes=400, drop_path_rate=0.0, head_dropout=0.0)
    aware = videomae_classifier(size, num_classes=400, drop_path_rate=0.0, head_dropout=0.0, selector=masker)
    aware.load_state_dict(plain.state_dict())
    video = torch.randn(2, 3, frames, side, side, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 7])
    grid = plain.grid(video.shape)
    n = grid[0] * grid[1] * grid[2]
    kept = n - masker.num_masked(grid)

    def train_step(model: torch.nn.Module):
        def step() -> None:
            model.train().zero_grad(set_to_none=True)
            F.cross_entropy(model(video), labels).backward()

        return step

    def infer(model: torch.nn.Module):
        def forward() -> None:
            with torch.no_grad():
                model.eval()(video)

        return forward

    flops = {
        "every cube": common.encoder_flops(size, tokens=n),
        "motion-aware": common.encoder_flops(size, tokens=kept),
    }
    with shape_checks_disabled():
        train = common.alternate({"every cube": train_step(plain), "motion-aware": train_step(aware)}, pairs=pairs)
        test = common.alternate({"every cube": infer(plain), "motion-aware": infer(aware)}, pairs=pairs)
    print(
        f"ViT-{name} classifier, batch 2, {frames}x{side}x{side}, {n} cubes; every cube vs motion-aware selection of "
        f"the {kept} most moving (drop {args.drop}); {pairs} alternated rounds, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    print(f"  {'side':<14} {'GFLOP/step (2 clips)':>21} {'s/train step':>13} {'s/inference':>12}")
    for side_name in ("every cube", "motion-aware"):
        gflop = 3 * flops[side_name] * 2 / 1e9
        train_s, test_s = statistics.median(train[side_name]), statistics.median(test[side_name])
        print(f"  {side_name:<14} {gflop:21.1f} {train_s:13.3f} {test_s:12.3f}")
    print(f"ratio flops every-cube/motion-aware: {flops['every cube'] / flops['motion-aware']:.2f}")
    print(
        f"ratio train_step every-cube/motion-aware: {common.median_ratio(train['every cube'], train['motion-aware']):.2f}"
    )
    print(
        f"ratio inference every-cube/motion-aware: {common.median_ratio(test['every cube'], test['motion-aware']):.2f}"
    )


if __name__ == "__main__":
    main()
