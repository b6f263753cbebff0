"""VideoMAE fine-tuning on HMDB51: the UCF101 recipe with HMDB51's data.

    torchrun --nproc-per-node 8 recipes/finetune_hmdb51.py --data-root /data/hmdb51 --model base \\
        --finetune outputs/pretrain_hmdb51/final.pt

`--data-root` holds one folder of `.avi` videos per class (`--video-dir`, default `videos`) and the official split
files `<class>_test_split{1,2,3}.txt` (`--split-dir`, default `testTrainMulti_7030_splits`): lines marked 1 are
trained on, lines marked 2 tested. REFERENCE.md lists no HMDB51-specific fine-tuning numbers, so the UCF101 settings
are used (base lr 5e-4, layer decay 0.7, 100 epochs, mixup/cutmix, RandAugment, 5 clips x 3 crops); change them with
the options. Without `--data-root` the built-in synthetic data is used. Everything else is
`recipes/finetune_ucf101.py`'s; read that file for the details.
"""

from dataclasses import dataclass
from pathlib import Path

from finetune_ucf101 import PAPER, FinetuneConfig
from finetune_ucf101 import main as finetune

from tubemask.train.config import DatasetPreset
from tubemask.train.layouts import HMDB51Files
from tubemask.train.run import script_main


@dataclass
class HMDB51Config(HMDB51Files, FinetuneConfig):
    """Options of the UCF101 recipe and HMDB51's files; HMDB51 defaults."""

    output_dir: Path = Path("outputs/finetune_hmdb51")


HMDB51 = DatasetPreset("HMDB51", read=HMDB51Files.read, paper=PAPER)


def main(cfg: HMDB51Config) -> dict:
    """Fine-tune on HMDB51; returns the run's summary."""
    return finetune(cfg, HMDB51)


if __name__ == "__main__":
    script_main(main, HMDB51Config)
