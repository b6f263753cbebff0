"""Person detections to classify at AVA test time, in the two formats the public detection code ships.

| format | files | reader |
|---|---|---|
| SlowFast CSV | `ava_detection_val_boxes_and_labels.csv`: `video_id,timestamp,x1,y1,x2,y2,,score`, normalised | [`read_ava_boxes`][tubemask.data.ava.read_ava_boxes] with `kind="detections"` |
| AlphAction / VideoMAE JSON | `boxes/ava_val_det_person_bbox.json`: a list of `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` in pixels, with the image map `annotations/ava_val_v2.2_min.json` (COCO-style `"images": [{"id", "movie", "timestamp", "width", "height"}, ...]`) | [`read_alphaction_person_boxes`][tubemask.data.ava_person_boxes.read_alphaction_person_boxes] |

[`read_person_detections`][tubemask.data.ava_person_boxes.read_person_detections] picks the reader by the file. A
pickle (`.pkl`, as some code bases ship proposals) is never unpickled: unpickling runs code from the file. It is
refused with the steps to convert it to the CSV.
"""

import json
import math
import os
from pathlib import Path

import torch

from tubemask.data.annotations import AnnotationError
from tubemask.data.ava import AVA_NUM_CLASSES, AVAFrame, FrameKey, read_ava_boxes

__all__ = ["read_alphaction_person_boxes", "read_person_detections"]

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pk")
_CONVERT = (
    "convert it, in a trusted environment, to the CSV `video_id,timestamp,x1,y1,x2,y2,,score` (normalised boxes, "
    "one row per person box); e.g. for a dict {'video_id,timestamp': array [n, 5] of normalised x1, y1, x2, y2, "
    "score} (mmaction2's AVA proposals): `import pickle; d = pickle.load(open(PKL, 'rb')); "
    "open(CSV, 'w').writelines(f'{k},{x1},{y1},{x2},{y2},,{s}\\n' for k, a in d.items() for x1, y1, x2, y2, s in "
    "a.tolist())`, then pass the CSV"
)


def _refuse_pickle(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(2)
    if path.suffix.lower() in _PICKLE_SUFFIXES or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise ValueError(
            f"{path}: a pickle is not read (unpickling runs code from the file, it is untrusted); {_CONVERT}"
        )


def _load_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    _refuse_pickle(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(path, getattr(error, "lineno", None), f"not valid JSON ({error})") from None


def _number(path: Path, where: str, field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(path, None, f"{where}: {field} {value!r} is not a finite number")
    return float(value)


def _image_map(path: Path) -> dict[int, tuple[FrameKey, float, float]]:
    """image id -> ((movie, timestamp), width, height) from a COCO-style AVA annotation file's `images` list."""
    data = _load_json(path, "image map")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise AnnotationError(
            path, None, "expected a COCO-style object with an 'images' list (AlphAction's ava_val_v2.2_min.json)"
        )
    out: dict[int, tuple[FrameKey, float, float]] = {}
    for n, image in enumerate(images):
        where = f"images[{n}]"
        if not isinstance(image, dict) or not {"id", "movie", "timestamp", "width", "height"} <= image.keys():
            raise AnnotationError(path, None, f"{where} needs 'id', 'movie', 'timestamp', 'width', 'height': {image!r}")
        ident, timestamp = image["id"], image["timestamp"]
        if not isinstance(ident, int) or not isinstance(timestamp, int) or not isinstance(image["movie"], str):
            raise AnnotationError(path, None, f"{where}: id and timestamp must be integers, movie a string: {image!r}")
        width, height = (_number(path, where, k, image[k]) for k in ("width", "height"))
        if width <= 0 or height <= 0:
            raise AnnotationError(path, None, f"{where}: width {width:g} and height {height:g} must be positive")
        out[ident] = ((image["movie"], timestamp), width, height)
    return out


def read_alphaction_person_boxes(
    boxes_path: str | os.PathLike,
    image_map_path: str | os.PathLike,
    *,
    min_score: float = 0.0,
    num_classes: int = AVA_NUM_CLASSES,
) -> dict[FrameKey, AVAFrame]:
    """Read AlphAction's person detections (the boxes VideoMAE's AVA evaluation classifies).

    A box `[x, y, w, h]` in pixels of image `image_id` (a keyframe of the image map, of size `width x height`)
    becomes the normalised `(x / width, y / height, (x + w) / width, (y + h) / height)`, clipped to [0, 1]; boxes
    without positive width and height after clipping are dropped, as VideoMAE's loader does. Rows with
    `score < min_score` are dropped (VideoMAE keeps `score >= 0.8`); a box listed twice keeps its highest score; a
    frame left without boxes is left out.

    Args:
        boxes_path: The JSON list (`ava_val_det_person_bbox.json`).
        image_map_path: The COCO-style annotation file whose `images` map image ids to keyframes
            (`ava_val_v2.2_min.json`).
        min_score: Lowest detection score kept.
        num_classes: The label width of the returned frames (their labels are all False).

    Returns:
        `{(video_id, timestamp): AVAFrame}` sorted by key, boxes in file order, scores the detector's.

    Raises:
        AnnotationError: naming the file and entry of malformed JSON, a missing field, a non-numeric or negative
            size, an image id missing from the image map, or a `category_id` other than 1 (person; the object boxes
            file holds other categories).
        FileNotFoundError: a file does not exist.
        ValueError: a file is a pickle (see the module docstring).
    """
    boxes_path, image_map_path = Path(boxes_path), Path(image_map_path)
    images = _image_map(image_map_path)
    entries = _load_json(boxes_path, "person boxes")
    if not isinstance(entries, list):
        raise AnnotationError(boxes_path, None, "expected a JSON list of {image_id, category_id, bbox, score} objects")
    frames: dict[FrameKey, dict[tuple[float, ...], float]] = {}
    for n, entry in enumerate(entries):
        where = f"entry {n}"
        if not isinstance(entry, dict) or not {"image_id", "bbox", "score"} <= entry.keys():
            raise AnnotationError(boxes_path, None, f"{where} needs 'image_id', 'bbox', 'score': {entry!r}")
        if entry.get("category_id", 1) != 1:
            raise AnnotationError(
                boxes_path,
                None,
                f"{where}: category_id {entry['category_id']!r} is not a person (1); is this the object boxes file?",
            )
        if entry["image_id"] not in images:
            raise AnnotationError(
                boxes_path, None, f"{where}: image_id {entry['image_id']!r} is not in the image map {image_map_path}"
            )
        bbox = entry["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise AnnotationError(boxes_path, None, f"{where}: bbox {bbox!r} is not [x, y, w, h]")
        x, y, w, h = (_number(boxes_path, where, f"bbox[{i}]", v) for i, v in enumerate(bbox))
        score = _number(boxes_path, where, "score", entry["score"])
        if score < min_score:
            continue
        key, width, height = images[entry["image_id"]]
        box = tuple(min(max(v, 0.0), 1.0) for v in (x / width, y / height, (x + w) / width, (y + h) / height))
        if not (box[0] < box[2] and box[1] < box[3]):
            continue
        boxes = frames.setdefault(key, {})
        boxes[box] = max(score, boxes.get(box, score))
    out = {}
    for key in sorted(frames):
        boxes = frames[key]
        out[key] = AVAFrame(
            key[0],
            key[1],
            torch.tensor(list(boxes), dtype=torch.float32).view(-1, 4),
            torch.zeros(len(boxes), num_classes, dtype=torch.bool),
            torch.tensor(list(boxes.values()), dtype=torch.float32),
        )
    return out


def read_person_detections(
    path: str | os.PathLike,
    *,
    image_map: str | os.PathLike | None = None,
    min_score: float = 0.0,
    num_classes: int = AVA_NUM_CLASSES,
) -> dict[FrameKey, AVAFrame]:
    """Person detections from a SlowFast CSV or an AlphAction JSON (with its `image_map`), by the file's suffix.

    Raises:
        ValueError: a pickle (with how to convert it), a JSON without `image_map`, or another suffix.
        FileNotFoundError: a file does not exist.
        AnnotationError: a malformed file (see the readers).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"person detections {path} do not exist")
    _refuse_pickle(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_ava_boxes(path, kind="detections", num_classes=num_classes, min_score=min_score)
    if suffix == ".json":
        if image_map is None:
            raise ValueError(
                f"{path}: AlphAction's JSON person boxes need their image map (ava_val_v2.2_min.json, "
                "--val-image-map) to tell each image_id's keyframe and frame size"
            )
        return read_alphaction_person_boxes(path, image_map, min_score=min_score, num_classes=num_classes)
    raise ValueError(
        f"{path}: person detections must be a SlowFast .csv or an AlphAction .json (with its image map), "
        f"not {suffix or 'a file without a suffix'}"
    )
