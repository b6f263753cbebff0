"""AVA frame-mAP on the official files: one row per (box, action), as the ActivityNet evaluator reads them.

The ground truth `video_id,timestamp,x1,y1,x2,y2,action_id,person_id` and the results
`video_id,timestamp,x1,y1,x2,y2,action_id,score` both list one (box, action) pair per row. Unlike
[`read_ava_boxes`][tubemask.data.ava.read_ava_boxes], which merges the rows of one box into a multi-hot label (and so
merges two people with identical coordinates), the readers here keep every row: the official evaluator counts each
ground-truth row as one instance and scores exactly the (box, action) pairs a results file lists. A pair that is not
listed is not a detection (the score matrices of
[`frame_average_precision`][tubemask.eval.ava.frame_average_precision] cannot say so).

[`reported_actions`][tubemask.eval.ava_files.reported_actions] turns a detector's per-frame score matrices into such
rows and [`write_official_results`][tubemask.eval.ava_files.write_official_results] writes them, so a run can be
checked with the official script and with `python -m tubemask.eval.ava`.

[`evaluate_box_lists`][tubemask.eval.ava_files.evaluate_box_lists] follows the ActivityNet code: rows of actions outside
the label map are dropped; the per-frame cap keeps the highest-scoring pairs; detections without positive width and
height are dropped; per class, detections are matched greedily in descending score order to the highest-IoU
ground-truth box (IoU >= 0.5, each box matched once, no fallback to the second best); AP is Pascal VOC's
[`voc_average_precision`][tubemask.eval.ava.voc_average_precision] over the pooled detections.
"""

import csv
import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from tubemask.atomic import atomic_path
from tubemask.data.annotations import AnnotationError
from tubemask.eval.ava import FrameKey, FrameMAPResult, voc_average_precision

__all__ = [
    "GroundTruthBox",
    "ReportedAction",
    "evaluate_box_lists",
    "read_official_ground_truth",
    "read_official_results",
    "reported_actions",
    "write_official_results",
]

Box = tuple[float, float, float, float]
"""`(x1, y1, x2, y2)`, normalised."""


class GroundTruthBox(NamedTuple):
    """One ground-truth row: a person's box and one of their actions."""

    box: Box
    action_id: int


class ReportedAction(NamedTuple):
    """One results row: a box, an action and its score."""

    box: Box
    action_id: int
    score: float


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(encoding="utf-8", newline="") as f:
        return [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), start=1) if any(row)]


def _parse(path: Path, line: int, row: list[str], fields: str) -> tuple[FrameKey, Box, int, str]:
    """The frame key, box, action id and last field of a row of `fields`, or an error naming file and line."""
    if len(row) != 8:
        raise AnnotationError(path, line, f"expected 8 fields '{fields}', got {len(row)}: {row!r}")
    if not row[0]:
        raise AnnotationError(path, line, "empty video_id")
    names = fields.split(",")
    try:
        timestamp, action_id = int(row[1]), int(row[6])
        box = (float(row[2]), float(row[3]), float(row[4]), float(row[5]))
    except ValueError:
        bad = next(i for i in (1, 6, 2, 3, 4, 5) if not _parses(row[i], int if i in (1, 6) else float))
        raise AnnotationError(path, line, f"{names[bad]} {row[bad]!r} is not a number") from None
    if not all(math.isfinite(v) for v in box):
        raise AnnotationError(path, line, f"box {box} holds a non-finite coordinate")
    return (row[0], timestamp), box, action_id, row[7]


def _parses(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def read_official_ground_truth(path: str | os.PathLike) -> dict[FrameKey, list[GroundTruthBox]]:
    """Read AVA ground truth `video_id,timestamp,x1,y1,x2,y2,action_id,person_id`, every row kept.

    Returns:
        `{(video_id, timestamp): [GroundTruthBox, ...]}` in file order; two people with identical coordinates stay
        two boxes, as in the official evaluator.

    Raises:
        AnnotationError: naming the file and line of a row without 8 fields, with a non-integer timestamp, action or
            person id, a non-numeric coordinate, or `x2 < x1` / `y2 < y1`.
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    out: dict[FrameKey, list[GroundTruthBox]] = {}
    for n, row in _rows(path):
        key, box, action_id, person = _parse(path, n, row, "video_id,timestamp,x1,y1,x2,y2,action_id,person_id")
        if not _parses(person, int):
            raise AnnotationError(path, n, f"person_id {person!r} is not an integer")
        if box[2] < box[0] or box[3] < box[1]:
            raise AnnotationError(path, n, f"box {box} has x2 < x1 or y2 < y1 (expected x1,y1,x2,y2)")
        out.setdefault(key, []).append(GroundTruthBox(box, action_id))
    return out


def read_official_results(path: str | os.PathLike) -> dict[FrameKey, list[ReportedAction]]:
    """Read AVA results `video_id,timestamp,x1,y1,x2,y2,action_id,score`: one row per reported (box, action).

    Returns:
        `{(video_id, timestamp): [ReportedAction, ...]}` in file order. Boxes without positive width and height are
        kept here and dropped by the evaluation, as the official code does.

    Raises:
        AnnotationError: naming the file and line of a row without 8 fields, with a non-integer timestamp or action
            id, or a non-numeric (or non-finite) coordinate or score.
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    out: dict[FrameKey, list[ReportedAction]] = {}
    for n, row in _rows(path):
        key, box, action_id, score = _parse(path, n, row, "video_id,timestamp,x1,y1,x2,y2,action_id,score")
        if not _parses(score, float) or not math.isfinite(float(score)):
            raise AnnotationError(path, n, f"score {score!r} is not a finite number")
        out.setdefault(key, []).append(ReportedAction(box, action_id, float(score)))
    return out


def _written(value: float) -> float:
    """`value` as the results file holds it: 9 significant digits, which tell every float32 apart and keep their
    order, so ranking the written scores ranks the detector's float32 scores."""
    return float(f"{value:.9g}")


def reported_actions(
    detections: Mapping[FrameKey, tuple[Tensor, Tensor]], class_ids: Sequence[int]
) -> dict[FrameKey, list[ReportedAction]]:
    """The results rows of per-frame score matrices: one (box, action, score) per box and evaluated action.

    Args:
        detections: per frame, `(boxes [r, 4], scores [r, C])`: normalised `(x1, y1, x2, y2)` boxes and one score per
            class, column `k - 1` for action id `k` (what
            [`score_person_boxes`][tubemask.eval.ava_scoring.score_person_boxes] returns).
        class_ids: the actions to report (the label map's; the evaluation drops the others anyway).

    Returns:
        `{(video_id, timestamp): [ReportedAction, ...]}`, frames in sorted order, boxes in their order, actions in
        `class_ids` order; coordinates and scores rounded to what
        [`write_official_results`][tubemask.eval.ava_files.write_official_results] writes (9 significant digits), so
        evaluating these rows and evaluating the written file give the same figure.

    Raises:
        ValueError: naming the frame, for boxes that are not `[r, 4]`, scores that are not `[r, C]`, or a class id
            outside `1..C`.
    """
    ids = [int(c) for c in class_ids]
    out: dict[FrameKey, list[ReportedAction]] = {}
    for key in sorted(detections):
        boxes, scores = detections[key]
        r = boxes.shape[0]
        if boxes.dim() != 2 or boxes.shape[1] != 4 or scores.dim() != 2 or scores.shape[0] != r:
            raise ValueError(
                f"reported_actions: frame {key!r} has boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)}; "
                "expected [r, 4] and [r, classes]"
            )
        bad = [c for c in ids if not 1 <= c <= scores.shape[1]]
        if bad:
            raise ValueError(f"reported_actions: class ids {bad[:8]} are outside 1..{scores.shape[1]} (frame {key!r})")
        picked = scores[:, [c - 1 for c in ids]].double().tolist()  # [r][len(ids)]
        rows = out.setdefault(key, [])
        for box, row in zip(boxes.double().tolist(), picked, strict=True):
            written = tuple(_written(v) for v in box)
            rows.extend(ReportedAction(written, c, _written(v)) for c, v in zip(ids, row, strict=True))
    return out


def write_official_results(path: str | os.PathLike, detections: Mapping[FrameKey, Sequence[ReportedAction]]) -> int:
    """Write results rows as the official AVA results CSV `video_id,timestamp,x1,y1,x2,y2,action_id,score`
    (timestamps as 4 digits, as the AVA files and VideoMAE write them), atomically; returns the number of rows.

    Every value is written so that it reads back as the same float
    ([`read_official_results`][tubemask.eval.ava_files.read_official_results] then gives `detections` back).
    """
    count = 0
    with atomic_path(Path(path)) as tmp, Path(tmp).open("w", encoding="utf-8", newline="") as f:
        for (video_id, timestamp), rows in detections.items():
            stem = f"{video_id},{timestamp:04d}"
            for box, action_id, score in rows:
                f.write(f"{stem},{box[0]!r},{box[1]!r},{box[2]!r},{box[3]!r},{action_id},{score!r}\n")
            count += len(rows)
    return count


def _frame_matches(detections: list[ReportedAction], ground_truth: list[GroundTruthBox], iou_threshold: float):
    """Yield `(action_id, score, true positive)` for the detections of one frame, matched greedily per class."""
    from torchvision.ops import box_iou

    order = sorted(detections, key=lambda d: -d.score)  # stable: ties keep the file order
    if not ground_truth:
        for d in order:
            yield d.action_id, d.score, False
        return
    iou = box_iou(
        torch.tensor([d.box for d in order], dtype=torch.float64).view(-1, 4),
        torch.tensor([g.box for g in ground_truth], dtype=torch.float64),
    ).tolist()  # [r][g]
    of_class: dict[int, list[int]] = {}  # action id -> its ground-truth rows, in file order
    for j, g in enumerate(ground_truth):
        of_class.setdefault(g.action_id, []).append(j)
    taken: set[int] = set()  # ground-truth rows matched so far (each row is one (box, action) instance)
    for i, d in enumerate(order):
        same_class = of_class.get(d.action_id, ())
        best = max(same_class, key=iou[i].__getitem__, default=None)  # the first maximum on ties
        hit = best is not None and iou[i][best] >= iou_threshold and best not in taken
        if hit:
            taken.add(best)
        yield d.action_id, d.score, hit


def evaluate_box_lists(
    detections: Mapping[FrameKey, Sequence[ReportedAction]],
    ground_truth: Mapping[FrameKey, Sequence[GroundTruthBox]],
    *,
    class_ids: Collection[int],
    iou_threshold: float = 0.5,
    excluded: Collection[FrameKey] = (),
    max_detections_per_frame: int | None = None,
) -> FrameMAPResult:
    """AVA frame-mAP of listed (box, action, score) detections, by the ActivityNet evaluator's rules.

    Args:
        detections: per frame, the reported pairs (see
            [`read_official_results`][tubemask.eval.ava_files.read_official_results]).
        ground_truth: per frame, one entry per (person box, action) row.
        class_ids: the evaluated action ids (the label map's); rows of other actions are dropped on both sides.
        iou_threshold: minimum IoU of a true positive, in `(0, 1]`.
        excluded: frames dropped from both sides.
        max_detections_per_frame: keep only this many highest-scoring pairs of the evaluated classes per frame (the
            official script's 50; ties keep the file order), before zero-area boxes are dropped; `None` keeps all.

    Returns:
        A [FrameMAPResult][tubemask.eval.ava.FrameMAPResult] over `class_ids` (NaN for classes without ground truth).

    Raises:
        ValueError: for an `iou_threshold` outside `(0, 1]` or a cap below 1.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"evaluate_box_lists: iou_threshold must be in (0, 1], got {iou_threshold}")
    if max_detections_per_frame is not None and max_detections_per_frame < 1:
        raise ValueError(
            f"evaluate_box_lists: max_detections_per_frame must be >= 1 or None, got {max_detections_per_frame}"
        )
    ids = sorted(set(class_ids))
    wanted, excluded = set(ids), set(excluded)
    gts = {k: [g for g in v if g.action_id in wanted] for k, v in ground_truth.items() if k not in excluded}
    num_gt = {c: 0 for c in ids}
    for rows in gts.values():
        for g in rows:
            num_gt[g.action_id] += 1
    scores: dict[int, list[float]] = {c: [] for c in ids}
    hits: dict[int, list[bool]] = {c: [] for c in ids}
    frames = {k for k in detections if k not in excluded} | set(gts)
    for key in sorted(frames):
        rows = [d for d in detections.get(key, ()) if d.action_id in wanted]
        if max_detections_per_frame is not None:
            rows = sorted(rows, key=lambda d: -d.score)[:max_detections_per_frame]
        rows = [d for d in rows if d.box[0] < d.box[2] and d.box[1] < d.box[3]]  # zero or negative area: dropped
        for action_id, score, hit in _frame_matches(rows, gts.get(key, []), iou_threshold):
            scores[action_id].append(score)
            hits[action_id].append(hit)
    per_class = {
        c: voc_average_precision(
            torch.tensor(scores[c], dtype=torch.float64), torch.tensor(hits[c], dtype=torch.bool), num_gt[c]
        )
        for c in ids
    }
    valid = [ap for ap in per_class.values() if not math.isnan(ap)]
    return FrameMAPResult(
        mean_ap=sum(valid) / len(valid) if valid else float("nan"),
        per_class=per_class,
        num_ground_truth=num_gt,
        num_frames=len(frames),
        classes_without_ground_truth=tuple(c for c in ids if num_gt[c] == 0),
    )
