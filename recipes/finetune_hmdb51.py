"""VideoMAE fine-tuning on HMDB51: the UCF101 recipe with HMDB51's data.

    torchrun --nproc-per-node 8 recipes/finetune_hmdb51.py --data-root /data/hmdb51 --model base \\
        --finetune outputs/pretrain_hmdb51/final.pt

`--data-root` holds one folder of `.avi` videos per class (`--video-dir`, default `videos`) and the official split
files `<class>_test_split{1,2,3}.txt` (`--split-dir`, default `testTrainMulti_7030_splits`): lines marked 1 are
trained on, lines marked 2 tested. REFERENCE.md lists no HMDB51-specific fine-tuning numbers, so the UCF101 settings
are used (base lr 5e-4, layer decay 0.7, 100 epochs, mixup/cutmix, RandAugment, 5 clips x 3 crops); change them with
the options. Without `--data-root` the built-in synthetic data is used. Everything else is
`recipes/finetune_ucf101.py`, loaded below; read that file for the details.
"""

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
class HMDB51Config(base.FinetuneConfig):
    """Options of the UCF101 recipe; HMDB51 defaults."""

    output_dir: Path = Path("outputs/finetune_hmdb51")
    video_dir: str = "videos"
    """Folder with one sub-folder of videos per class, inside --data-root."""
    split_dir: str = "testTrainMulti_7030_splits"
    """Folder of the split files, inside --data-root."""


def read_records(cfg: HMDB51Config, *, train: bool, is_main: bool) -> list:
    """The HMDB51 train (1) or test (2) videos of --split (or the synthetic data without --data-root)."""
    from tubemask.data import read_hmdb51, read_ucf101

    if cfg.data_root is None:
        return read_ucf101(base.synthetic_root(cfg, is_main=is_main), split=cfg.split, train=train)
    return read_hmdb51(cfg.data_root / cfg.video_dir, cfg.data_root / cfg.split_dir, split=cfg.split, train=train)


base.read_records = read_records
main = base.main

if __name__ == "__main__":
    main(tyro.cli(HMDB51Config))
