"""VideoMAE pretraining on Something-Something V2: the UCF101 recipe with SSv2's data and settings.

    torchrun --nproc-per-node 8 recipes/pretrain_ssv2.py --data-root /data/ssv2 --model base

`--data-root` holds `something-something-v2-train.json`, `labels.json` and the videos `<id>.webm` (in
`--video-dir`, default `20bn-something-something-v2`). Paper settings (REFERENCE.md): tube mask 0.9, 16 frames
sampled as TSN segments (one random frame from each of 16 equal segments), no flip (motion direction is the label),
base lr 1.5e-4 x total batch / 256, 800 epochs, 40 warmup epochs. Without `--data-root` the built-in synthetic data is
used. The loop, checkpoints, resume and pictures are `recipes/pretrain_ucf101.py`'s; read that file for the details.
"""

from dataclasses import dataclass
from pathlib import Path

from pretrain_ucf101 import PAPER, PretrainConfig
from pretrain_ucf101 import main as pretrain

from tubemask.train.config import DatasetPreset
from tubemask.train.layouts import SSv2Files
from tubemask.train.run import script_main


@dataclass
class SSv2Config(SSv2Files, PretrainConfig):
    """Options of the UCF101 recipe and SSv2's files; SSv2 defaults."""

    output_dir: Path = Path("outputs/pretrain_ssv2")
    mask_ratio: float = 0.9
    """Share of tokens hidden from the encoder (SSv2: 0.9)."""


SSV2 = DatasetPreset(
    "Something-Something V2",
    read=SSv2Files.read,
    paper=dict(PAPER, base_lr=1.5e-4, epochs=800, batch_size=32),
    sampling="segment",  # TSN: one frame from each of --num-frames equal segments
)


def main(cfg: SSv2Config) -> dict:
    """Pretrain on Something-Something V2; returns the run's summary."""
    return pretrain(cfg, SSV2)


if __name__ == "__main__":
    script_main(main, SSv2Config)
