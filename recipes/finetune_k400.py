"""VideoMAE fine-tuning on Kinetics-400: the UCF101 recipe with K400's data.

    torchrun --nproc-per-node 8 recipes/finetune_k400.py --data-root /data/k400 --model base \\
        --finetune outputs/pretrain_k400/final.pt

`--data-root` holds `train.csv` and `val.csv` (`label,youtube_id,time_start,time_end,split`) and the clips, either
under `<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` or flat (then pass `--video-dir` with their folder);
the validation CSV is the test set, with the train CSV's class order. Settings (REFERENCE.md): 16 frames at stride 4,
test 5 clips x 3 crops; the other numbers are the UCF101 recipe's (REFERENCE.md gives no K400-specific fine-tuning
schedule), so set `--epochs`, `--base-lr`, `--layer-decay` and `--drop-path` for your budget. Without `--data-root` the
built-in synthetic data is used. Everything else is `recipes/finetune_ucf101.py`, loaded below; read that file for
the details.
"""

import csv
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

# Load the UCF101 recipe as a module (recipes are scripts, not a package) and swap in this dataset's pieces.
_spec = importlib.util.spec_from_file_location("finetune_ucf101", Path(__file__).with_name("finetune_ucf101.py"))
base = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = base
_spec.loader.exec_module(base)


@dataclass
class K400Config(base.FinetuneConfig):
    """Options of the UCF101 recipe; K400 defaults."""

    output_dir: Path = Path("outputs/finetune_k400")
    csv: str = "train.csv"
    """Training annotation CSV inside --data-root."""
    test_csv: str = "val.csv"
    """Test annotation CSV inside --data-root (labels follow the training CSV's classes)."""
    video_dir: str = "."
    """Folder inside --data-root that holds `<split>/<label>/<clip>.mp4` (or the clips themselves, flat)."""


def train_classes(cfg: K400Config) -> list[str]:
    """Class names in label order: the sorted distinct labels of the training CSV (as `read_kinetics_csv` orders
    them)."""
    with (cfg.data_root / cfg.csv).open(encoding="utf-8", newline="") as f:
        return sorted({row["label"].strip() for row in csv.DictReader(f) if (row.get("label") or "").strip()})


def read_records(cfg: K400Config, *, train: bool, is_main: bool) -> list:
    """The K400 clips of the train or validation CSV (or the synthetic data without --data-root)."""
    from tubemask.data import read_kinetics_csv, read_ucf101

    if cfg.data_root is None:
        return read_ucf101(base.synthetic_root(cfg, is_main=is_main), split=cfg.split, train=train)
    return read_kinetics_csv(
        cfg.data_root / (cfg.csv if train else cfg.test_csv), cfg.data_root / cfg.video_dir, classes=train_classes(cfg)
    )


def class_names(cfg: K400Config, records: list, num_classes: int) -> list[str]:
    """The training CSV's labels, in label order (the synthetic data: its folder names)."""
    if cfg.data_root is None:
        return ucf101_class_names(cfg, records, num_classes)
    names = train_classes(cfg)
    return [names[label] if label < len(names) else str(label) for label in range(num_classes)]


ucf101_class_names = base.class_names
base.read_records = read_records
base.class_names = class_names
main = base.main

if __name__ == "__main__":
    main(tyro.cli(K400Config))
