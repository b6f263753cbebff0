"""VideoMAE fine-tuning on Kinetics-400: the UCF101 recipe with K400's data.

    torchrun --nproc-per-node 8 recipes/finetune_k400.py --data-root /data/k400 --model base \\
        --finetune outputs/pretrain_k400/final.pt

`--data-root` holds `train.csv` and `val.csv` (`label,youtube_id,time_start,time_end,split`) and the clips, either
under `<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` or flat (then pass `--video-dir` with their folder);
the validation CSV is the test set, with the train CSV's class order. REFERENCE.md gives 16 frames at stride 4 and
5 x 3 test views, no K400-specific fine-tuning schedule, so set `--epochs`, `--base-lr`, `--layer-decay` and `--drop-path` for your budget. The rest is
`recipes/finetune_ucf101.py`'s (read it for the details); without `--data-root` the built-in synthetic data is used.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from finetune_ucf101 import PAPER, FinetuneConfig
from finetune_ucf101 import main as finetune

from tubemask.data import read_kinetics_csv
from tubemask.train.config import DatasetPreset
from tubemask.train.run import script_main


@dataclass
class K400Config(FinetuneConfig):
    """Options of the UCF101 recipe; K400 defaults."""

    output_dir: Path = Path("outputs/finetune_k400")
    csv: str = "train.csv"
    """Training annotation CSV inside --data-root."""
    test_csv: str = "val.csv"
    """Test annotation CSV inside --data-root (labels follow the training CSV's classes)."""
    video_dir: str = "."
    """Folder inside --data-root that holds `<split>/<label>/<clip>.mp4` (or the clips themselves, flat)."""


def train_classes(cfg: K400Config, *_: object) -> list[str]:
    """Class names in label order: the training CSV's sorted distinct labels (as `read_kinetics_csv` orders them)."""
    with (cfg.data_root / cfg.csv).open(encoding="utf-8", newline="") as f:
        return sorted({row["label"].strip() for row in csv.DictReader(f) if (row.get("label") or "").strip()})


def read(cfg: K400Config, train: bool) -> list:
    """The clips of the train or validation CSV, labelled by the training CSV's classes."""
    path = cfg.data_root / (cfg.csv if train else cfg.test_csv)
    return read_kinetics_csv(path, cfg.data_root / cfg.video_dir, classes=train_classes(cfg))


K400 = DatasetPreset("Kinetics-400", read=read, paper=PAPER, class_names=train_classes)


def main(cfg: K400Config) -> dict:
    """Fine-tune on Kinetics-400; returns the run's summary."""
    return finetune(cfg, K400)


if __name__ == "__main__":
    script_main(main, K400Config)
