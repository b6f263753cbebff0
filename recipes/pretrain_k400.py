"""VideoMAE pretraining on Kinetics-400: the UCF101 recipe with K400's data and settings.

    torchrun --nproc-per-node 8 recipes/pretrain_k400.py --data-root /data/k400 --model base

`--data-root` holds `train.csv` (`label,youtube_id,time_start,time_end,split`) and the clips, either under
`train/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` or flat (then pass `--video-dir` with their folder). Paper settings (REFERENCE.md): tube mask
0.9, 16 frames at stride 4, base lr 1.5e-4 x total batch / 256 (the paper's total batch is 2048: 32 per GPU x 64
GPUs), 800 epochs (1600 for the longer schedule), 40 warmup epochs. Without `--data-root` the built-in synthetic data
is used, like the UCF101 recipe. Everything else (the loop, checkpoints, resume, pictures) is
`recipes/pretrain_ucf101.py`, loaded below; read that file for the details.
"""

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

# Load the UCF101 recipe as a module (recipes are scripts, not a package) and swap in this dataset's pieces.
_spec = importlib.util.spec_from_file_location("pretrain_ucf101", Path(__file__).with_name("pretrain_ucf101.py"))
base = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = base
_spec.loader.exec_module(base)


@dataclass
class K400Config(base.PretrainConfig):
    """Options of the UCF101 recipe; K400 defaults."""

    output_dir: Path = Path("outputs/pretrain_k400")
    mask_ratio: float = 0.9
    """Share of tokens hidden from the encoder (K400: 0.9)."""
    csv: str = "train.csv"
    """Annotation CSV inside --data-root."""
    video_dir: str = "."
    """Folder inside --data-root that holds `<split>/<label>/<clip>.mp4` (or the clips themselves, flat)."""


def read_records(cfg: K400Config, *, is_main: bool) -> list:
    """The K400 training clips listed in the CSV (or the synthetic data without --data-root)."""
    from tubemask.data import read_kinetics_csv, read_ucf101

    if cfg.data_root is None:
        return read_ucf101(base.synthetic_root(cfg, is_main=is_main), split=cfg.split, train=True)
    return read_kinetics_csv(cfg.data_root / cfg.csv, cfg.data_root / cfg.video_dir)


base.PAPER = dict(base.PAPER, base_lr=1.5e-4, epochs=800, batch_size=32)
base.read_records = read_records
main = base.main

if __name__ == "__main__":
    main(tyro.cli(K400Config))
