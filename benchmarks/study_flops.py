"""Analytic pretraining FLOPs of the data-efficiency study's designs on its grid, and the compute-matched step counts.

The study (docs/data_efficiency.md) compares pretraining designs at the same number of steps; issue 19 also asks for
the same compute. This prints, per clip, the forward FLOPs of each design and the cost of one training step
(forward + backward = 3 x forward, plus a teacher's forward where the target needs one), counted by
`common.forward_flops` on the frozen design's model and grid (read from `--config`, the confirmatory study's
`config.json`), and how many steps of tube 0.75 with pixel targets cost what each design costs in all. The
motion-guided design is tube 0.75 in the model's count, and the HOG design differs only in its decoder head (27
values per cube instead of 384 pixels); their mask (block matching) and target (gradient histograms) run outside
the model and are not counted.

    python benchmarks/study_flops.py [--config docs/results/data_efficiency/confirm/config.json]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tubemask.eval.data_efficiency import (  # noqa: E402
    DataConfig,
    ModelConfig,
    PretrainOptions,
    make_masker,
    study_grid,
    vit_size,
)
from tubemask.hog import HOGTarget  # noqa: E402
from tubemask.models import ViTSize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def design_flops(p: PretrainOptions, size: ViTSize, grid: tuple[int, int, int], m: ModelConfig) -> dict[str, float]:
    """Per-clip FLOPs of one design: `forward` (the model), `step` (3 x forward, plus the teacher's forward)."""
    masker = make_masker(p)
    n = grid[0] * grid[1] * grid[2]
    hidden = masker.num_masked(grid)
    decoded = masker.num_queried(grid) if hasattr(masker, "num_queried") else hidden
    out = None  # a cube's pixels
    if p.target == "teacher":
        out = size.embed_dim  # the teacher's feature
    elif p.target == "hog":
        out = HOGTarget().width(tubelet_size=m.tubelet_size, patch_size=m.patch_size, channels=3)
    cube = dict(patch=m.patch_size, tubelet=m.tubelet_size)
    forward = common.forward_flops(size, visible=n - hidden, decoded=decoded, out=out, **cube)
    teacher = common.encoder_flops(size, tokens=n, **cube) if p.target == "teacher" else 0.0  # same size as student
    return {"visible": n - hidden, "decoded": decoded, "forward": forward, "step": 3 * forward + teacher}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "docs/results/data_efficiency/confirm/config.json")
    args = parser.parse_args()
    config = json.loads(args.config.read_text())
    m, frozen = ModelConfig(**config["model"]), PretrainOptions(**config["pretrain"])
    grid = study_grid(m, DataConfig(**config["data"]))
    size = vit_size(m)
    steps = frozen.steps
    designs = {
        "tube 0.75, pixels (frozen)": (frozen, 0),
        "motion-aware 0.9, query 0.3": (PretrainOptions(mask="motion_aware", mask_ratio=0.9, query_ratio=0.3), 0),
        "motion-aware 0.9, query 0.2, random split": (
            PretrainOptions(mask="motion_aware", mask_ratio=0.9, query_ratio=0.2, motion_visible="random"),
            0,
        ),
        "HOG targets (27 per cube; HOG not counted)": (PretrainOptions(target="hog"), 0),
        # the teacher is a tube-0.75 pixel encoder pretrained for the same steps: its pretraining counts too
        "teacher features (+ its pretraining)": (PretrainOptions(target="teacher"), steps),
    }
    base = design_flops(frozen, size, grid, m)
    print(
        f"grid {grid} ({grid[0] * grid[1] * grid[2]} cubes of {m.tubelet_size}x{m.patch_size}x{m.patch_size}), "
        f"encoder {m.embed_dim} x {m.depth}, decoder {m.decoder_dim} x {m.decoder_depth}; {steps} steps each"
    )
    print(f"  {'design':<42} {'visible':>7} {'decoded':>7} {'MFLOP fwd':>9} {'MFLOP step':>10} {'tube steps':>10}")
    for name, (p, extra_tube_steps) in designs.items():
        f = design_flops(p, size, grid, m)
        total = steps * f["step"] + extra_tube_steps * base["step"]
        matched = round(total / base["step"])
        row = f"{f['visible']:>7} {f['decoded']:>7} {f['forward'] / 1e6:9.1f} {f['step'] / 1e6:10.1f} {matched:>10}"
        print(f"  {name:<42} {row}")
    aware = design_flops(designs["motion-aware 0.9, query 0.3"][0], size, grid, m)
    print(f"motion-aware steps at the compute of {steps} tube steps: {round(steps * base['step'] / aware['step'])}")


if __name__ == "__main__":
    main()
