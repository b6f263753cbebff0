"""VideoMAE pretraining on HMDB51: the UCF101 recipe with HMDB51's data.

    torchrun --nproc-per-node 8 recipes/pretrain_hmdb51.py --data-root /data/hmdb51 --model base

`--data-root` holds one folder of `.avi` videos per class (`--video-dir`, default `videos`) and the official split
files `<class>_test_split{1,2,3}.txt` (`--split-dir`, default `testTrainMulti_7030_splits`). No public pretraining
script exists for HMDB51 (REFERENCE.md); this uses the UCF101 settings (tube mask 0.75, base lr 3e-4, 40 warmup
epochs, 16 frames at stride 4, multi-scale crop, no flip) with the paper's longer schedule for the smaller dataset,
4800 epochs. Without `--data-root` the built-in synthetic data is used. The loop, checkpoints, resume and pictures are
`recipes/pretrain_ucf101.py`'s; read that file for the details.
"""

from dataclasses import dataclass
from pathlib import Path

from pretrain_ucf101 import PAPER, PretrainConfig
from pretrain_ucf101 import main as pretrain

from tubemask.train.config import DatasetPreset
from tubemask.train.layouts import HMDB51Files
from tubemask.train.run import script_main


@dataclass
class HMDB51Config(HMDB51Files, PretrainConfig):
    """Options of the UCF101 recipe and HMDB51's files; HMDB51 defaults."""

    output_dir: Path = Path("outputs/pretrain_hmdb51")


HMDB51 = DatasetPreset("HMDB51", read=HMDB51Files.read, paper=dict(PAPER, epochs=4800))


def main(cfg: HMDB51Config) -> dict:
    """Pretrain on HMDB51; returns the run's summary."""
    return pretrain(cfg, HMDB51)


if __name__ == "__main__":
    script_main(main, HMDB51Config)
