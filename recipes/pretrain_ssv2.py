"""VideoMAE pretraining on Something-Something V2: the UCF101 recipe with SSv2's data and settings.

    torchrun --nproc-per-node 8 recipes/pretrain_ssv2.py --data-root /data/ssv2 --model base

`--data-root` holds `something-something-v2-train.json`, `labels.json` and the videos `<id>.webm` (in
`--video-dir`, default `20bn-something-something-v2`). Paper settings (REFERENCE.md): tube mask 0.9, 16 frames
sampled as TSN segments (one random frame from each of 16 equal segments), no flip (motion direction is the label),
base lr 1.5e-4 x total batch / 256, 800 epochs, 40 warmup epochs. Without `--data-root` the built-in synthetic data is
used. Everything else is `recipes/pretrain_ucf101.py`, loaded below; read that file for the details.
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
class SSv2Config(base.PretrainConfig):
    """Options of the UCF101 recipe; SSv2 defaults."""

    output_dir: Path = Path("outputs/pretrain_ssv2")
    mask_ratio: float = 0.9
    """Share of tokens hidden from the encoder (SSv2: 0.9)."""
    video_dir: str = "20bn-something-something-v2"
    """Folder of the `<id>.webm` videos inside --data-root."""


def read_records(cfg: SSv2Config, *, is_main: bool) -> list:
    """The SSv2 training videos (or the synthetic data without --data-root)."""
    from tubemask.data import read_ssv2, read_ucf101

    if cfg.data_root is None:
        return read_ucf101(base.synthetic_root(cfg, is_main=is_main), split=cfg.split, train=True)
    return read_ssv2(cfg.data_root, cfg.data_root / cfg.video_dir, subset="train")


def frame_sampler(cfg: SSv2Config):
    """TSN segment sampling: one frame from each of --num-frames equal segments of the video."""
    from tubemask.data import SegmentSampler

    return SegmentSampler(num_segments=cfg.num_frames)


base.PAPER = dict(base.PAPER, base_lr=1.5e-4, epochs=800, batch_size=32)
base.read_records = read_records
base.frame_sampler = frame_sampler
main = base.main

if __name__ == "__main__":
    main(tyro.cli(SSv2Config))
