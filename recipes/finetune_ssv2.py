"""VideoMAE fine-tuning on Something-Something V2: the UCF101 recipe with SSv2's data and settings.

    torchrun --nproc-per-node 8 recipes/finetune_ssv2.py --data-root /data/ssv2 --model base \\
        --finetune outputs/pretrain_ssv2/final.pt

`--data-root` holds `something-something-v2-train.json`, `something-something-v2-validation.json`, `labels.json`
and the videos `<id>.webm` (in `--video-dir`, default `20bn-something-something-v2`); the validation set is the test
set. SSv2 settings (REFERENCE.md): 16 frames sampled as TSN segments (one random frame from each of 16 equal
segments; test views at staggered offsets), no flip (motion direction is the label), test 2 clips x 3 crops; the rest
is `recipes/finetune_ucf101.py`'s (read it for the details). Without `--data-root` the built-in synthetic data is used.
"""

from dataclasses import dataclass
from pathlib import Path

from finetune_ucf101 import PAPER, FinetuneConfig
from finetune_ucf101 import main as finetune

from tubemask.train.config import DatasetPreset
from tubemask.train.layouts import SSv2Files
from tubemask.train.run import script_main


@dataclass
class SSv2Config(SSv2Files, FinetuneConfig):
    """Options of the UCF101 recipe and SSv2's files; SSv2 defaults."""

    output_dir: Path = Path("outputs/finetune_ssv2")


SSV2 = DatasetPreset(
    "Something-Something V2",
    read=SSv2Files.read,
    paper=dict(PAPER, flip=0.0, test_clips=2, test_crops=3),
    synthetic=dict(flip=0.0, test_clips=2),  # direction is the label: no flip, even on the synthetic stand-in
    sampling="segment",  # TSN: one frame from each of --num-frames equal segments
    class_names=SSv2Files.class_names,
)


def main(cfg: SSv2Config) -> dict:
    """Fine-tune on Something-Something V2; returns the run's summary."""
    return finetune(cfg, SSV2)


if __name__ == "__main__":
    script_main(main, SSv2Config)
