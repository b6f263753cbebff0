"""VideoMAE fine-tuning on Something-Something V2: the UCF101 recipe with SSv2's data and settings.

    torchrun --nproc-per-node 8 recipes/finetune_ssv2.py --data-root /data/ssv2 --model base \\
        --finetune outputs/pretrain_ssv2/final.pt

`--data-root` holds `something-something-v2-train.json`, `something-something-v2-validation.json`, `labels.json`
and the videos `<id>.webm` (in `--video-dir`, default `20bn-something-something-v2`); the validation set is the test
set. SSv2 settings (REFERENCE.md): 16 frames sampled as TSN segments (one random frame from each of 16 equal
segments; test views at staggered offsets), no flip (motion direction is the label), test 2 clips x 3 crops. The
other numbers are the UCF101 recipe's; change them with the options. Without `--data-root` the built-in synthetic data
is used. Everything else is `recipes/finetune_ucf101.py`, loaded below; read that file for the details.
"""

import importlib.util
import json
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
class SSv2Config(base.FinetuneConfig):
    """Options of the UCF101 recipe; SSv2 defaults."""

    output_dir: Path = Path("outputs/finetune_ssv2")
    video_dir: str = "20bn-something-something-v2"
    """Folder of the `<id>.webm` videos inside --data-root."""


def read_records(cfg: SSv2Config, *, train: bool, is_main: bool) -> list:
    """The SSv2 train or validation videos (or the synthetic data without --data-root)."""
    from tubemask.data import read_ssv2, read_ucf101

    if cfg.data_root is None:
        return read_ucf101(base.synthetic_root(cfg, is_main=is_main), split=cfg.split, train=train)
    return read_ssv2(cfg.data_root, cfg.data_root / cfg.video_dir, subset="train" if train else "validation")


def class_names(cfg: SSv2Config, records: list, num_classes: int) -> list[str]:
    """The templates of labels.json, by label (the synthetic data: its folder names)."""
    if cfg.data_root is None:
        return ucf101_class_names(cfg, records, num_classes)
    labels = json.loads((cfg.data_root / "labels.json").read_text(encoding="utf-8"))
    names = {int(index): template for template, index in labels.items()}
    return [names.get(label, str(label)) for label in range(num_classes)]


def frame_sampler(cfg: SSv2Config):
    """TSN segment sampling: one frame from each of --num-frames equal segments of the video."""
    from tubemask.data import SegmentSampler

    return SegmentSampler(num_segments=cfg.num_frames)


ucf101_class_names = base.class_names
base.PAPER = dict(base.PAPER, flip=0.0, test_clips=2, test_crops=3)
base.SYNTHETIC = dict(base.SYNTHETIC, flip=0.0, test_clips=2)
base.read_records = read_records
base.class_names = class_names
base.frame_sampler = frame_sampler
main = base.main

if __name__ == "__main__":
    main(tyro.cli(SSv2Config))
