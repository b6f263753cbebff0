"""How much each pretraining mask of the data-efficiency study leaks along the motion of the study's own clips.

A hidden cube leaks when the content it held sits, one time slot away, in a cube the encoder sees: a decoder can copy
it. [copy_along_motion][tubemask.eval.leakage.copy_along_motion] is the baseline that does just that, following a
block-matching flow (`BlockMatchingFlow`, the flow the motion-guided masker uses, rounded to whole cells by the
baseline). This prints how far the content of the clips that seed 100 pretrains on moves per time slot, and per mask
(at the frozen design's ratio) the share of hidden cubes the baseline copies and its error over the hidden cubes: a
mask that closes the leak makes the copy rare and the error high. Each mask is drawn with the generator seeded 0. For
the motion-aware designs of the study (steps 5 and 9), it prints how many cubes of a clip move at all and the share
of the encoder's and of the decoder's cubes that do.

    python benchmarks/study_leakage.py [--config docs/results/data_efficiency/confirm/config.json] [--clips N]
"""

import argparse
import json
from pathlib import Path

import torch

from tubemask.eval.data_efficiency import DataConfig, ModelConfig, PretrainOptions, normalise, render, study_grid
from tubemask.eval.leakage import copy_along_motion
from tubemask.masking import FrameMasker, RandomMasker, TubeMasker
from tubemask.motion_aware import MotionAwareMasker, cube_motion_energy
from tubemask.motion_guided import BlockMatchingFlow, MotionGuidedMasker

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "docs/results/data_efficiency/confirm/config.json")
    parser.add_argument("--clips", type=int, default=None, help="default: the labelled training set (the 1x pool)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = json.loads(args.config.read_text())
    d, m, p = DataConfig(**config["data"]), ModelConfig(**config["model"]), PretrainOptions(**config["pretrain"])
    count = args.clips or d.labels_per_class * d.num_classes
    video = normalise(render(d, count, seed=10_000 * (100 + 1)).clips)  # seed 100's labelled training clips
    grid = study_grid(m, d)
    flow = BlockMatchingFlow()(video, grid)  # [b t-1 h w 2], cells
    speed = flow.norm(dim=-1)
    print(
        f"{count} clips, grid {grid}: content moves {speed.mean():.3f} cells per time slot on average; "
        f"{(speed >= 0.5).float().mean():.1%} of the cells by half a cell or more, {(speed >= 1).float().mean():.1%} "
        f"by a whole cell or more"
    )
    maskers = {
        "tube": TubeMasker(p.mask_ratio),
        "random": RandomMasker(p.mask_ratio),
        "frame": FrameMasker(p.mask_ratio),
        "motion-guided": MotionGuidedMasker(p.mask_ratio),
    }
    print(f"  {'mask (ratio ' + str(p.mask_ratio) + ')':<22} {'copied':>7} {'copy MSE':>9}")
    for name, masker in maskers.items():
        video_arg = {"video": video} if masker.needs_video else {}
        mask = masker(count, grid, generator=torch.Generator().manual_seed(0), **video_arg)
        out = copy_along_motion(video, mask, flow, tubelet_size=m.tubelet_size, patch_size=m.patch_size)
        print(f"  {name:<22} {out['leaked']:>7.1%} {out['mse']:>9.4f}")
    moves = cube_motion_energy(video, grid) > 1e-6  # [b n]: the cube changes at all
    per_clip = moves.sum(dim=1).float()
    print(
        f"cubes that move, per clip: {per_clip.mean():.1f} of {moves.shape[1]} on average "
        f"(from {per_clip.min():.0f} to {per_clip.max():.0f})"
    )
    for name, masker in {
        "motion-aware 0.9, top split, 30% decoded (step 5)": MotionAwareMasker(0.9, query_ratio=0.3),
        "motion-aware 0.9, random split, 20% decoded (step 9)": MotionAwareMasker(
            0.9, query_ratio=0.2, visible="random"
        ),
    }.items():
        mask, decoder_mask = masker.decoder_mask(count, grid, generator=torch.Generator().manual_seed(0), video=video)
        seen, decoded = ~mask, ~decoder_mask
        print(
            f"  {name}: {(seen & moves).sum() / seen.sum():.1%} of the encoder's cubes move, "
            f"{(decoded & moves).sum() / decoded.sum():.1%} of the decoder's"
        )


if __name__ == "__main__":
    main()
