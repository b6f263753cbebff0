"""Annotation formats: from a dataset's list files to [`VideoRecord`][tubemask.data.annotations.VideoRecord]s.

| reader | format |
|---|---|
| [`read_list_file`][tubemask.data.annotations.read_list_file] | VideoMAE list files: `path label`, `path num_frames label` or `path` |
| [`read_ucf101`][tubemask.data.annotations.read_ucf101] | `UCF-101/<Class>/v_*.avi` + `ucfTrainTestlist/{classInd,trainlist0k,testlist0k}.txt` |
| [`read_hmdb51`][tubemask.data.annotations.read_hmdb51] | `<class>/<name>.avi` + `<class>_test_split{1,2,3}.txt` (`name.avi 0/1/2`) |
| [`read_ssv2`][tubemask.data.annotations.read_ssv2] | `something-something-v2-{train,validation}.json` + `labels.json`, videos `<id>.webm` |
| [`read_kinetics_csv`][tubemask.data.annotations.read_kinetics_csv] | `label,youtube_id,time_start,time_end,split` |

Labels are 0-based class indices; `label=None` marks an unlabelled video. A malformed line raises
[`AnnotationError`][tubemask.data.annotations.AnnotationError] naming the file and the 1-based line number.
Readers do not check that video files exist: the datasets report missing files as failures (see `docs/data.md`).
"""

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "AnnotationError",
    "VideoRecord",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_list_file",
    "read_ssv2",
    "read_ucf101",
]


class AnnotationError(ValueError):
    """A malformed annotation file or line; the message starts with `file:line:`."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a dataset.

    Attributes:
        path: The video file.
        label: 0-based class index, or None when unlabelled.
    """

    path: Path
    label: int | None = None


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    with path.open(encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]


def _int(path: Path, line: int, text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AnnotationError(path, line, f"{field} {text!r} is not an integer") from None


def read_list_file(list_path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[VideoRecord]:
    """Read a VideoMAE-style list file: one video per line, fields separated by whitespace.

    Accepted lines: `path label`, `path num_frames label` (the VideoMAE pretraining lists; `label` -1 means
    unlabelled) and `path` alone (unlabelled).

    Args:
        list_path: The list file.
        root: Directory that relative paths are resolved against (default: as written).

    Returns:
        One record per non-empty line.

    Raises:
        AnnotationError: A line has more than 3 fields or a non-integer label / frame count.
    """
    list_path = Path(list_path)
    records = []
    for n, line in _lines(list_path):
        fields = line.split()
        if len(fields) > 3:
            raise AnnotationError(list_path, n, f"expected 'path [num_frames] label', got {len(fields)} fields")
        label = None
        if len(fields) >= 2:
            if len(fields) == 3:
                _int(list_path, n, fields[1], "num_frames")
            label = _int(list_path, n, fields[-1], "label")
            label = None if label < 0 else label
        path = Path(fields[0])
        records.append(VideoRecord(Path(root) / path if root is not None else path, label))
    return records


def _check_split(split: int, path: Path | str) -> None:
    if split not in (1, 2, 3):
        raise ValueError(f"split={split}; {path} has splits 1, 2, 3")


def read_ucf101(root: str | os.PathLike, *, split: int = 1, train: bool = True) -> list[VideoRecord]:
    """Read the official UCF101 layout.

    `root` holds `UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and `ucfTrainTestlist/` with `classInd.txt`
    (`1 ApplyEyeMakeup`, 1-based), `trainlist0k.txt` (`Class/v_x.avi 1`) and `testlist0k.txt` (`Class/v_x.avi`).
    Any video extension written in the list files is used as is.

    Args:
        root: The dataset directory.
        split: 1, 2 or 3.
        train: The train list (True) or the test list.

    Returns:
        Records with 0-based labels (classInd index - 1).

    Raises:
        AnnotationError: A malformed line, an unknown class, or a train label that disagrees with its folder.
    """
    root = Path(root)
    _check_split(split, root / "ucfTrainTestlist")
    class_file = root / "ucfTrainTestlist" / "classInd.txt"
    classes: dict[str, int] = {}
    for n, line in _lines(class_file):
        fields = line.split()
        if len(fields) != 2:
            raise AnnotationError(class_file, n, f"expected 'index ClassName', got {line!r}")
        classes[fields[1]] = _int(class_file, n, fields[0], "class index") - 1
    list_file = root / "ucfTrainTestlist" / f"{'train' if train else 'test'}list0{split}.txt"
    records = []
    for n, line in _lines(list_file):
        fields = line.split()
        if len(fields) != (2 if train else 1):
            expected = "'Class/v_x.avi label'" if train else "'Class/v_x.avi'"
            raise AnnotationError(list_file, n, f"expected {expected}, got {line!r}")
        relative = fields[0]
        class_name = relative.split("/", 1)[0]
        if class_name not in classes or "/" not in relative:
            raise AnnotationError(list_file, n, f"class folder {class_name!r} is not in {class_file}")
        label = classes[class_name]
        if train and _int(list_file, n, fields[1], "label") - 1 != label:
            raise AnnotationError(
                list_file, n, f"label {fields[1]} disagrees with classInd.txt ({class_name} = {label + 1})"
            )
        records.append(VideoRecord(root / "UCF-101" / relative, label))
    return records


def read_hmdb51(
    video_root: str | os.PathLike, split_dir: str | os.PathLike, *, split: int = 1, train: bool = True
) -> list[VideoRecord]:
    """Read HMDB51 split files `<class>_test_split{k}.txt` (lines `name.avi 0|1|2`: 1 train, 2 test, 0 unused).

    Classes are the split-file prefixes in sorted order (0-based labels); videos live at
    `video_root/<class>/<name>.avi`.

    Args:
        video_root: Directory with one folder of videos per class.
        split_dir: Directory with the 153 split files.
        split: 1, 2 or 3.
        train: Lines marked 1 (True) or 2 (False).

    Returns:
        Records in class order, then file order.

    Raises:
        AnnotationError: No split file for `split`, or a malformed line.
    """
    video_root, split_dir = Path(video_root), Path(split_dir)
    _check_split(split, split_dir)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in split_dir.iterdir() if p.name.endswith(suffix))
    if not files:
        raise AnnotationError(split_dir, None, f"no '*{suffix}' split files")
    wanted = 1 if train else 2
    records = []
    for label, file in enumerate(files):
        class_name = file.name[: -len(suffix)]
        for n, line in _lines(file):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise AnnotationError(file, n, f"expected 'name.avi 0|1|2', got {line!r}")
            if int(fields[1]) == wanted:
                records.append(VideoRecord(video_root / class_name / fields[0], label))
    return records


def read_ssv2(
    annotation_dir: str | os.PathLike,
    video_dir: str | os.PathLike,
    *,
    subset: Literal["train", "validation"] = "train",
) -> list[VideoRecord]:
    """Read Something-Something-v2: `something-something-v2-<subset>.json` and `labels.json`.

    Each entry `{id, template, label, placeholders}` gets the label `labels[template without brackets]`
    (`"Putting [something] on a surface"` -> key `"Putting something on a surface"`); the video is
    `video_dir/<id>.webm`.

    Args:
        annotation_dir: Directory with the JSON files.
        video_dir: Directory with the `.webm` videos.
        subset: `"train"` or `"validation"`.

    Returns:
        Records in file order.

    Raises:
        AnnotationError: Invalid JSON, `labels.json` not an object of integer labels, an entry without `id` or a
            `template` string, or a template not in `labels.json` (the error names the entry by its 1-based position
            in the list).
    """
    annotation_dir, video_dir = Path(annotation_dir), Path(video_dir)
    if subset not in ("train", "validation"):
        raise ValueError(f"subset={subset!r}; allowed: 'train', 'validation'")
    labels_file = annotation_dir / "labels.json"
    entries_file = annotation_dir / f"something-something-v2-{subset}.json"
    names = _load_json(labels_file)
    if not isinstance(names, dict):
        raise AnnotationError(labels_file, None, 'expected a JSON object {"template": "label index", ...}')
    labels = {k: _int(labels_file, None, str(v), f"label of {k!r}") for k, v in names.items()}
    entries = _load_json(entries_file)
    if not isinstance(entries, list):
        raise AnnotationError(entries_file, None, "expected a JSON list of {id, template, label, placeholders}")
    records = []
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("template"), str):
            raise AnnotationError(entries_file, n, f"entry {n} lacks 'id' or a 'template' string: {entry!r:.200}")
        key = entry["template"].replace("[", "").replace("]", "")
        if key not in labels:
            raise AnnotationError(entries_file, n, f"template {key!r} of entry {n} is not in {labels_file}")
        records.append(VideoRecord(video_dir / f"{entry['id']}.webm", labels[key]))
    return records


def _load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise AnnotationError(path, error.lineno, f"invalid JSON: {error.msg}") from None


def read_kinetics_csv(
    csv_path: str | os.PathLike,
    video_root: str | os.PathLike,
    *,
    classes: list[str] | None = None,
    layout: Literal["nested", "flat", "auto"] = "auto",
) -> list[VideoRecord]:
    """Read a Kinetics CSV (`label,youtube_id,time_start,time_end,split`, with that header).

    The file of a row is `<youtube_id>_<start:06d>_<end:06d>.mp4`, under `video_root/<split>/<label>/`
    (`layout="nested"`) or directly in `video_root` (`"flat"`); `"auto"` picks nested if that folder exists.

    Args:
        csv_path: The annotation CSV.
        video_root: Directory with the videos.
        classes: Class names in label order; default: the sorted distinct labels of this file (pass the train
            file's classes when reading val/test so labels agree).
        layout: Where the files are.

    Returns:
        Records in file order.

    Raises:
        AnnotationError: Missing columns, non-integer times, or a label not in `classes`.
    """
    csv_path, video_root = Path(csv_path), Path(video_root)
    if layout not in ("nested", "flat", "auto"):
        raise ValueError(f"layout={layout!r}; allowed: 'nested', 'flat', 'auto'")
    if not csv_path.is_file():
        raise FileNotFoundError(f"annotation file {csv_path} does not exist")
    with csv_path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    required = ["label", "youtube_id", "time_start", "time_end", "split"]
    if not rows or [c.strip() for c in rows[0]][: len(required)] != required:
        raise AnnotationError(csv_path, 1, f"expected the header {','.join(required)}")
    body = [(n, row) for n, row in enumerate(rows[1:], start=2) if any(c.strip() for c in row)]
    for n, row in body:
        if len(row) < len(required):
            raise AnnotationError(csv_path, n, f"expected {len(required)} fields, got {len(row)}: {row!r}")
    names = classes if classes is not None else sorted({row[0].strip() for _, row in body})
    index = {name: i for i, name in enumerate(names)}
    records = []
    for n, row in body:
        label, youtube_id, start, end, split = (c.strip() for c in row[:5])
        if label not in index:
            raise AnnotationError(csv_path, n, f"label {label!r} is not one of the {len(names)} classes")
        name = f"{youtube_id}_{_int(csv_path, n, start, 'time_start'):06d}_{_int(csv_path, n, end, 'time_end'):06d}.mp4"
        nested = video_root / split / label / name
        use_nested = layout == "nested" or (layout == "auto" and nested.parent.is_dir())
        records.append(VideoRecord(nested if use_nested else video_root / name, index[label]))
    return records
