"""AVA action detection annotations: keyframes with person boxes and actions, the label map, the exclusions.

AVA (Gu et al., arXiv 1705.08421) labels one keyframe per second of 15-minute movie excerpts (seconds 902 to 1798 of
each movie, cut at 900 s) with person boxes and multi-label actions (80 ids; 60 evaluated). Files read here:

| reader | format (no header) |
|---|---|
| [`read_ava_boxes`][tubemask.data.ava.read_ava_boxes] | ground truth `video_id,timestamp,x1,y1,x2,y2,action_id,person_id`; person detections `video_id,timestamp,x1,y1,x2,y2,,score` (7th field empty, `-1` or an action id; or 7 fields ending with the score) |
| [`read_ava_label_map`][tubemask.data.ava.read_ava_label_map] | pbtxt `item { name: "bend/bow (at the waist)" id: 1 }` (`label_id` also accepted) |
| [`read_ava_exclusions`][tubemask.data.ava.read_ava_exclusions] | `video_id,timestamp` |

Boxes are `x1 y1 x2 y2` normalised to [0, 1]; labels are multi-hot with column `k - 1` for action id `k`.
The keyframe clips and their boxes are loaded by [`AVADataset`][tubemask.data.ava_dataset.AVADataset].
"""

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.data.annotations import AnnotationError

__all__ = [
    "AVA_NUM_CLASSES",
    "AVAFileOptions",
    "AVAFiles",
    "AVAFrame",
    "BoxKind",
    "FrameKey",
    "read_ava_boxes",
    "read_ava_exclusions",
    "read_ava_label_map",
]

AVA_NUM_CLASSES = 80
"""Action ids of AVA v2.x are 1..80 (the ActivityNet challenge evaluates 60 of them, listed in its label map)."""

FrameKey = tuple[str, int]
"""A keyframe: `(video_id, timestamp)`, the timestamp in whole seconds of the movie (902..1798 in AVA)."""

BoxKind = Literal["auto", "ground_truth", "detections"]
"""The box file formats of [`read_ava_boxes`][tubemask.data.ava.read_ava_boxes]."""

_COORDS = ("x1", "y1", "x2", "y2")
_COORD_SLACK = 1e-4  # rounding noise tolerated (and clamped away) at the [0, 1] bounds of normalised coordinates


@dataclass(frozen=True, eq=False)
class AVAFrame:
    """One annotated keyframe: its person boxes, their actions and their scores (compared by identity: `==` on
    tensors is element-wise).

    Attributes:
        video_id: The movie (the file is `<video_root>/<video_id>.<ext>`).
        timestamp: Seconds from the start of the movie.
        boxes: `[r 4]` boxes `x1 y1 x2 y2` normalised to [0, 1], in the file's first-seen order.
        labels: `[r c]` multi-hot actions: column `k - 1` is action id `k`; all False for an unlabelled detection.
        scores: `[r]` 1.0 for ground truth, the detector's confidence for person detections.
    """

    video_id: str
    timestamp: int
    boxes: Float[Tensor, "r 4"]
    labels: Bool[Tensor, "r c"]
    scores: Float[Tensor, " r"]

    def __post_init__(self) -> None:
        # checked by hand, not by jaxtyping: a full AVA train file builds ~200k frames
        r = self.boxes.shape[0]
        ok = self.boxes.shape == (r, 4) and self.labels.ndim == 2 and self.labels.shape[0] == r
        if not ok or self.scores.shape != (r,) or self.labels.dtype != torch.bool:
            raise ValueError(
                f"AVAFrame {self.key}: boxes {tuple(self.boxes.shape)}, labels {self.labels.dtype} "
                f"{tuple(self.labels.shape)}, scores {tuple(self.scores.shape)}; expected [r 4], bool [r c], [r]"
            )

    @property
    def key(self) -> FrameKey:
        """`(video_id, timestamp)`."""
        return (self.video_id, self.timestamp)


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    with path.open(encoding="utf-8", newline="") as f:
        return [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), start=1) if any(row)]


def _number(path: Path, line: int, text: str, field: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise AnnotationError(path, line, f"{field} {text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise AnnotationError(path, line, f"{field} {text!r} is not a finite number")
    return value


def _is_detection_row(row: list[str]) -> bool:
    return len(row) == 7 or (len(row) == 8 and row[6] in ("", "-1"))


def read_ava_boxes(
    path: str | os.PathLike,
    *,
    kind: BoxKind = "auto",
    num_classes: int = AVA_NUM_CLASSES,
    min_score: float = 0.0,
) -> dict[FrameKey, AVAFrame]:
    """Read an AVA box file: ground truth or person detections, one row per (box, action).

    Rows of the same keyframe with the same box are one box whose actions are OR-ed (ground truth lists one row per
    action of a person). Boxes keep their first-seen order within a frame; frames keep the file's order.

    `kind` tells the formats apart:

    - `"ground_truth"`: 8 fields `video_id,timestamp,x1,y1,x2,y2,action_id,person_id`; every score is 1.0.
    - `"detections"`: `video_id,timestamp,x1,y1,x2,y2,action,score` with `action` empty or `-1` (a person box
      without a label) or an action id; or 7 fields `video_id,timestamp,x1,y1,x2,y2,score`. Rows with
      `score < min_score` are dropped (the VideoMAE protocol keeps `score >= 0.8`); a box listed on several rows keeps
      its highest score; a frame whose rows are all dropped is left out.
    - `"auto"` (default): detections if the first row has 7 fields or an empty / `-1` 7th field, else ground truth;
      every later row must then have that format.

    Args:
        path: The CSV file.
        kind: `"auto"`, `"ground_truth"` or `"detections"`.
        num_classes: Action ids allowed are `1..num_classes`; the label width.
        min_score: Lowest detection score kept (ignored for ground truth).

    Returns:
        `{(video_id, timestamp): AVAFrame}` in file order.

    Raises:
        AnnotationError: A row with the wrong number of fields (or of the other format than the file's), a
            non-numeric timestamp, coordinate, action id, person id or score, a coordinate outside [0, 1],
            `x2 < x1` or `y2 < y1`, or an action id outside `1..num_classes`. The message names the file and line.
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    if kind not in ("auto", "ground_truth", "detections"):
        raise ValueError(f"kind={kind!r}; allowed: 'auto', 'ground_truth', 'detections'")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    rows = _rows(path)
    if kind == "auto":
        kind = "detections" if rows and _is_detection_row(rows[0][1]) else "ground_truth"
    detections = kind == "detections"
    frames: dict[FrameKey, dict[tuple[float, ...], list]] = {}  # key -> box -> [label ids, score]
    for n, row in rows:
        if detections and len(row) not in (7, 8):
            raise AnnotationError(
                path, n, f"expected 7 or 8 fields 'video_id,timestamp,x1,y1,x2,y2,[action],score', got {len(row)}"
            )
        if not detections and (len(row) != 8 or row[6] in ("", "-1")):
            hint = " (a detection row: pass kind='detections')" if _is_detection_row(row) else ""
            raise AnnotationError(
                path, n, f"expected 8 fields 'video_id,timestamp,x1,y1,x2,y2,action_id,person_id'{hint}, got {row!r}"
            )
        if not row[0]:
            raise AnnotationError(path, n, "empty video_id")
        timestamp = _number(path, n, row[1], "timestamp", int)
        try:  # the fast path of ~1M rows; the per-field one only to name a bad field
            box = (float(row[2]), float(row[3]), float(row[4]), float(row[5]))
        except ValueError:
            box = tuple(_number(path, n, row[2 + i], name, float) for i, name in enumerate(_COORDS))
        if not all(-_COORD_SLACK <= value <= 1 + _COORD_SLACK for value in box):  # also rejects nan and inf
            name, value = next((k, v) for k, v in zip(_COORDS, box, strict=True) if not 0 <= v <= 1)
            raise AnnotationError(path, n, f"{name}={value} is outside [0, 1] (boxes are normalised)")
        if box[2] < box[0] or box[3] < box[1]:
            raise AnnotationError(path, n, f"box {box} has x2 < x1 or y2 < y1 (expected x1,y1,x2,y2)")
        action = row[6] if len(row) == 8 else ""
        action_id = None if action in ("", "-1") else _number(path, n, action, "action_id", int)
        if action_id is not None and not 1 <= action_id <= num_classes:
            raise AnnotationError(path, n, f"action_id {action_id} is outside 1..{num_classes}")
        if detections:
            score = float(_number(path, n, row[-1], "score", float))
            if score < min_score:
                continue
        else:
            _number(path, n, row[7], "person_id", int)
            score = 1.0
        entry = frames.setdefault((row[0], timestamp), {}).setdefault(box, [set(), score])
        if action_id is not None:
            entry[0].add(action_id)
        entry[1] = max(entry[1], score)
    out = {}
    for (video_id, timestamp), boxes in frames.items():
        labels = torch.zeros(len(boxes), num_classes, dtype=torch.bool)
        for i, (ids, _) in enumerate(boxes.values()):
            labels[i, [k - 1 for k in ids]] = True
        out[(video_id, timestamp)] = AVAFrame(
            video_id,
            timestamp,
            torch.tensor(list(boxes), dtype=torch.float32).clamp_(0, 1).view(-1, 4),
            labels,
            torch.tensor([score for _, score in boxes.values()], dtype=torch.float32),
        )
    return out


_ITEM = re.compile(r"\bitem\s*\{([^{}]*)\}", re.S)
_FIELD = re.compile(r'(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|[^\s"{}]+)')


def read_ava_label_map(path: str | os.PathLike) -> dict[int, str]:
    """Read an AVA label map (protobuf text): `item { name: "bend/bow (at the waist)" id: 1 }` per class.

    Items may span several lines; the id may be called `id` or `label_id`; other fields (`label_type: PERSON_MOVEMENT`)
    and `#` comments are ignored.

    Args:
        path: The `.pbtxt` file (e.g. `ava_action_list_v2.2_for_activitynet_2019.pbtxt`, the 60 evaluated classes).

    Returns:
        `{action id: name}` in file order.

    Raises:
        AnnotationError: An item without a quoted name or an integer id, a duplicate id, or no item at all (the
            message names the line where the item starts).
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label map {path} does not exist")
    text = "\n".join(line.split("#", 1)[0] if '"' not in line else line for line in path.read_text().splitlines())
    names: dict[int, str] = {}
    for item in _ITEM.finditer(text):
        line = text.count("\n", 0, item.start()) + 1
        fields = dict(m.groups() for m in _FIELD.finditer(item.group(1)))
        name, ident = fields.get("name"), fields.get("id", fields.get("label_id"))
        if name is None or not name.startswith('"') or ident is None:
            raise AnnotationError(path, line, f"item needs a quoted 'name' and an 'id' (or 'label_id'), got {fields}")
        number = _number(path, line, ident, "id", int)
        if number in names:
            raise AnnotationError(path, line, f"id {number} is listed twice ({names[number]!r} and {name})")
        names[number] = re.sub(r"\\(.)", r"\1", name[1:-1])
    if not names:
        raise AnnotationError(path, None, "no 'item { name: ... id: ... }' entries")
    return names


def read_ava_exclusions(path: str | os.PathLike) -> set[FrameKey]:
    """Read the keyframes left out of evaluation: `video_id,timestamp` rows.

    Raises:
        AnnotationError: A row without exactly 2 fields or with a non-integer timestamp.
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    keys = set()
    for n, row in _rows(path):
        if len(row) != 2 or not row[0]:
            raise AnnotationError(path, n, f"expected 'video_id,timestamp', got {row!r}")
        keys.add((row[0], _number(path, n, row[1], "timestamp", int)))
    return keys


@dataclass(frozen=True)
class AVAFiles:
    """Where an AVA run reads its videos and annotations.

    Attributes:
        video_dir: folder of the videos, `<video_id>.<ext>`.
        train_csv: ground-truth boxes to train on (None for an evaluation only).
        val_csv: ground-truth boxes to test against.
        val_detections: person detections to classify at test time: SlowFast's CSV or AlphAction's JSON
            ([`read_person_detections`][tubemask.data.ava_person_boxes.read_person_detections]).
        label_map: pbtxt of the evaluated classes.
        exclusions: timestamps left out of the evaluation (None: none).
        time_offset: movie second at which each file starts (900 for AVA's 15-minute cuts, 0 for full movies).
        val_image_map: the COCO-style image map of JSON person detections (None for the CSV).
    """

    video_dir: Path
    train_csv: Path | None
    val_csv: Path
    val_detections: Path
    label_map: Path
    exclusions: Path | None
    time_offset: float = 900.0
    val_image_map: Path | None = None

    @classmethod
    def from_root(
        cls, root: str | os.PathLike, *, train: bool = True, time_offset: float = 900.0, **overrides: Path | None
    ) -> "AVAFiles":
        """The layout SlowFast and the VideoMAE detection code use under `root` (`videos/`, `annotations/` with the
        v2.2 file names), each file replaced by a non-None entry of `overrides` (same names as the attributes).

        Args:
            root: the AVA folder.
            train: whether the training ground truth is needed (False: `train_csv` is None and not looked for).
            time_offset: see the attribute.
            overrides: paths given for `video_dir`, `train_csv`, `val_csv`, `val_detections`, `label_map`,
                `exclusions`, `val_image_map`.

        Raises:
            FileNotFoundError: naming the option (`--train-csv` ...) of a missing file or folder, an exclusions file
                given in `overrides` included; only a missing default exclusions file means no exclusions. The
                image map (default `annotations/ava_val_v2.2_min.json`) is needed when the person detections are a
                `.json`.
        """
        notes = Path(root) / "annotations"
        defaults = dict(
            video_dir=Path(root) / "videos",
            train_csv=notes / "ava_train_v2.2.csv",
            val_csv=notes / "ava_val_v2.2.csv",
            val_detections=notes / "ava_detection_val_boxes_and_labels.csv",
            label_map=notes / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
            exclusions=notes / "ava_val_excluded_timestamps_v2.2.csv",
            val_image_map=notes / "ava_val_v2.2_min.json",
        )
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise TypeError(f"AVAFiles.from_root: unknown overrides {unknown}; allowed: {sorted(defaults)}")
        paths = {k: Path(overrides[k]) if overrides.get(k) is not None else v for k, v in defaults.items()}
        needed = {
            "video_dir": True,
            "train_csv": train,
            "val_csv": True,
            "val_detections": True,
            "label_map": True,
            "exclusions": overrides.get("exclusions") is not None,
            "val_image_map": paths["val_detections"].suffix.lower() == ".json" or overrides.get("val_image_map"),
        }
        for name, path in paths.items():
            if needed[name] and not path.exists():
                option = "--" + name.replace("_", "-")
                raise FileNotFoundError(f"{option}: {path} does not exist (see the AVA layout in the recipe's --help)")
        return cls(
            **paths
            | {
                "train_csv": paths["train_csv"] if train else None,
                "exclusions": paths["exclusions"] if paths["exclusions"].exists() else None,
                "val_image_map": paths["val_image_map"] if needed["val_image_map"] else None,
                "time_offset": float(time_offset),
            }
        )


@dataclass
class AVAFileOptions:
    """AVA's file options, as a mixin for a recipe's config dataclass (as `tubemask.train.layouts` does for the
    classification datasets): `--data-root` and each file under it, overridable."""

    data_root: Path | None = None
    """AVA layout (videos/ + annotations/); absent: the built-in synthetic AVA."""
    video_dir: Path | None = None
    """Folder of the videos, `<video_id>.<ext>` (default: <data-root>/videos)."""
    train_csv: Path | None = None
    """Ground-truth boxes to train on (default: annotations/ava_train_v2.2.csv)."""
    val_csv: Path | None = None
    """Ground-truth boxes to test against (default: annotations/ava_val_v2.2.csv)."""
    val_detections: Path | None = None
    """Person boxes to classify: a CSV (default: annotations/ava_detection_val_boxes_and_labels.csv) or a JSON."""
    val_image_map: Path | None = None
    """Image ids of JSON person detections (default: annotations/ava_val_v2.2_min.json)."""
    time_offset: float = 900.0
    """Movie second at which each video file starts: 900 for AVA's 15-minute cuts, 0 for full movies."""
    label_map: Path | None = None
    """pbtxt of the evaluated classes (default: annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt)."""
    exclusions: Path | None = None
    """Timestamps left out of the evaluation (default: annotations/ava_val_excluded_timestamps_v2.2.csv)."""

    def files_under_root(self, *, train: bool) -> AVAFiles:
        """[AVAFiles.from_root][tubemask.data.ava.AVAFiles.from_root] of `data_root` with the options' overrides
        (`train`: whether the training ground truth is needed).

        Raises:
            SystemExit: naming the option of a missing file (see `from_root`).
        """
        names = ("video_dir", "train_csv", "val_csv", "val_detections", "label_map", "exclusions", "val_image_map")
        overrides = {name: getattr(self, name) for name in names}
        try:
            return AVAFiles.from_root(self.data_root, train=train, time_offset=self.time_offset, **overrides)
        except FileNotFoundError as error:
            raise SystemExit(str(error)) from None
