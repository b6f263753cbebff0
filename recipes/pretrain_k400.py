"""VideoMAE pretraining on Kinetics-400: the UCF101 recipe with K400's data and settings.

    torchrun --nproc-per-node 8 recipes/pretrain_k400.py --data-root /data/k400 --model base

`--data-root` holds `train.csv` (`label,youtube_id,time_start,time_end,split`) and the clips, either under
`train/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` or flat (then pass `--video-dir` with their folder). Paper
settings (REFERENCE.md): tube mask 0.9, 16 frames at stride 4, base lr 1.5e-4 x total batch / 256 (the paper's total
batch is 2048: 32 per GPU x 64 GPUs), 800 epochs (1600 for the longer schedule), 40 warmup epochs. Without
`--data-root` the built-in synthetic data is used. The loop, checkpoints, resume and pictures are
`recipes/pretrain_ucf101.py`'s; read that file for the details.
"""

from dataclasses import dataclass
from pathlib import Path

from pretrain_ucf101 import PAPER, PretrainConfig
from pretrain_ucf101 import main as pretrain

from tubemask.train.config import DatasetPreset
from tubemask.train.layouts import KineticsFiles
from tubemask.train.run import script_main


@dataclass
class K400Config(KineticsFiles, PretrainConfig):
    """Options of the UCF101 recipe and Kinetics' files; K400 defaults."""

    output_dir: Path = Path("outputs/pretrain_k400")
    mask_ratio: float = 0.9
    """Share of tokens hidden from the encoder (K400: 0.9)."""


K400 = DatasetPreset(
    "Kinetics-400", read=KineticsFiles.read, paper=dict(PAPER, base_lr=1.5e-4, epochs=800, batch_size=32)
)


def main(cfg: K400Config) -> dict:
    """Pretrain on Kinetics-400; returns the run's summary."""
    return pretrain(cfg, K400)


if __name__ == "__main__":
    script_main(main, K400Config)
