"""Where each dataset keeps its files, as config options: mixins for the recipes' config dataclasses.

A recipe for another dataset is the UCF101 recipe with a [DatasetPreset][tubemask.train.config.DatasetPreset] and a
config that mixes in that dataset's file options, e.g. `class HMDB51Config(HMDB51Files, PretrainConfig)`. The
pretraining and fine-tuning recipes of one dataset share the mixin, so its options read the same in both. A mixin's
methods read `data_root` (and `split`) from the config they are mixed into.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tubemask.data import VideoRecord, cached_synthetic_ucf101, read_hmdb51, read_kinetics_csv, read_ssv2, read_ucf101

__all__ = ["HMDB51Files", "KineticsFiles", "SSv2Files", "synthetic_ucf101_records"]


@dataclass
class HMDB51Files:
    """HMDB51 under --data-root: one folder of `.avi` videos per class and the official split files
    `<class>_test_split{1,2,3}.txt` (1 = train, 2 = test)."""

    video_dir: str = "videos"
    """Folder with one sub-folder of videos per class, inside --data-root."""
    split_dir: str = "testTrainMulti_7030_splits"
    """Folder of the split files, inside --data-root."""

    def read(self: Any, train: bool) -> list[VideoRecord]:
        """The videos of --split's train (or test) list."""
        root: Path = self.data_root
        return read_hmdb51(root / self.video_dir, root / self.split_dir, split=self.split, train=train)


@dataclass
class KineticsFiles:
    """Kinetics-400 under --data-root: `train.csv` / `val.csv` (`label,youtube_id,time_start,time_end,split`) and the
    clips under `<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` or flat in --video-dir."""

    csv: str = "train.csv"
    """Training annotation CSV inside --data-root."""
    test_csv: str = "val.csv"
    """Test annotation CSV inside --data-root (labels follow the training CSV's classes)."""
    video_dir: str = "."
    """Folder inside --data-root that holds `<split>/<label>/<clip>.mp4` (or the clips themselves, flat)."""

    def class_names(self: Any, *_: object) -> list[str]:
        """Class names in label order: the training CSV's sorted distinct labels (as `read_kinetics_csv` orders
        them)."""
        with (self.data_root / self.csv).open(encoding="utf-8", newline="") as f:
            return sorted({row["label"].strip() for row in csv.DictReader(f) if (row.get("label") or "").strip()})

    def read(self: Any, train: bool) -> list[VideoRecord]:
        """The clips of the train (or test) CSV, labelled by the training CSV's classes."""
        path = self.data_root / (self.csv if train else self.test_csv)
        return read_kinetics_csv(path, self.data_root / self.video_dir, classes=KineticsFiles.class_names(self))


@dataclass
class SSv2Files:
    """Something-Something V2 under --data-root: `something-something-v2-{train,validation}.json`, `labels.json`
    and the `<id>.webm` videos in --video-dir."""

    video_dir: str = "20bn-something-something-v2"
    """Folder of the `<id>.webm` videos inside --data-root."""

    def read(self: Any, train: bool) -> list[VideoRecord]:
        """The train (or validation) videos."""
        return read_ssv2(self.data_root, self.data_root / self.video_dir, subset="train" if train else "validation")

    def class_names(self: Any, records: list, num_classes: int) -> list[str]:
        """The templates of labels.json, by label."""
        labels = json.loads((self.data_root / "labels.json").read_text(encoding="utf-8"))
        names = {int(index): template for template, index in labels.items()}
        return [names.get(label, str(label)) for label in range(num_classes)]


def synthetic_ucf101_records(cfg: Any, run: Any, cache_dir: Path, *, train: bool) -> list[VideoRecord]:
    """The train (or test) list of --split of the built-in synthetic motion dataset, which the pretraining and
    fine-tuning recipes share: `cfg.synthetic_videos_per_class` videos per class, a moving shape on a black
    background (every non-zero pixel belongs to the moving object, so the masked content is predictable from what
    stays visible), each exactly one clip long (`num_frames x sampling_rate` frames of `input_size` pixels).
    Generated once on rank 0 into `cache_dir`, one folder per settings, while the other ranks wait."""
    settings = dict(
        videos_per_class=cfg.synthetic_videos_per_class,
        num_frames=cfg.num_frames * cfg.sampling_rate,
        size=cfg.input_size,
        background="black",
        seed=0,
    )
    root = run.rank0_first(lambda: cached_synthetic_ucf101(cache_dir, **settings))
    return read_ucf101(root, split=cfg.split, train=train)
