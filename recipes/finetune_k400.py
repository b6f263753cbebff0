"""VideoMAE fine-tuning on Kinetics-400: the UCF101 recipe with K400's data.

    torchrun --nproc-per-node 8 recipes/finetune_k400.py --data-root /data/k400 --model base \\
        --finetune outputs/pretrain_k400/final.pt

`--data-root` holds `train.csv` and `val.csv` (`label,youtube_id,time_start,time_end,split`) and the clips, either
under `<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` or flat (then pass `--video-dir` with their folder);
the validation CSV is the test set, with the train CSV's class order. REFERENCE.md gives 16 frames at stride 4 and
5 x 3 test views, no K400-specific fine-tuning schedule, so set `--epochs`, `--base-lr`, `--layer-decay` and `--drop-path` for your budget. The rest is
`recipes/finetune_ucf101.py`'s (read it for the details); without `--data-root` the built-in synthetic data is used.
"""

from dataclasses import dataclass
from pathlib import Path

from finetune_ucf101 import PAPER, FinetuneConfig
from finetune_ucf101 import main as finetune

from tubemask.train.config import DatasetPreset
from tubemask.train.layouts import KineticsFiles
from tubemask.train.run import script_main


@dataclass
class K400Config(KineticsFiles, FinetuneConfig):
    """Options of the UCF101 recipe and Kinetics' files; K400 defaults."""

    output_dir: Path = Path("outputs/finetune_k400")


K400 = DatasetPreset("Kinetics-400", read=KineticsFiles.read, paper=PAPER, class_names=KineticsFiles.class_names)


def main(cfg: K400Config) -> dict:
    """Fine-tune on Kinetics-400; returns the run's summary."""
    return finetune(cfg, K400)


if __name__ == "__main__":
    script_main(main, K400Config)
