"""AVA frame-mAP: the Pascal-VOC-style detection metric of the official AVA v2.2 evaluation (Gu et al., arXiv 1705.08421).

Each evaluated frame is a key `(video_id, timestamp)`. For every evaluated class separately, the detections of each
frame are matched to that frame's ground-truth boxes of the class greedily in descending score order: a detection is a
true positive when its highest-IoU ground-truth box overlaps it by at least `iou_threshold` (0.5) and is not yet taken;
otherwise, including when its best box is already taken (there is no fallback to the second best), it is a false
positive. The detections of all frames are then pooled and ranked by score, and the class's AP is the area under the
interpolated precision-recall curve with all points (Pascal VOC 2010+). frame-mAP is the mean over the evaluated
classes that have ground truth (the 60 classes of the AVA label map).

Boxes are normalised `(x1, y1, x2, y2)`; IoU comes from `torchvision.ops.box_iou`, computed in float64. A ground-truth
box counts once for each of its labels. Frames of the exclusion list are dropped from both sides; detections in frames
without any ground truth are false positives.
"""

import argparse
import json
import math
import numbers
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.atomic import atomic_path
from tubemask.shapes import typechecked

__all__ = [
    "FrameKey",
    "FrameMAPResult",
    "voc_average_precision",
    "frame_average_precision",
    "write_frame_map_report",
    "main",
]

FrameKey = tuple[str, int]
"""A frame of AVA: `(video_id, timestamp in seconds)`."""


@dataclass(frozen=True)
class FrameMAPResult:
    """What [frame_average_precision][tubemask.eval.ava.frame_average_precision] returns.

    Attributes:
        mean_ap: mean AP over the evaluated classes that have ground truth; NaN when none has.
        per_class: AP per evaluated class id (1-based); NaN for a class without ground truth, which is left out of
            `mean_ap`.
        num_ground_truth: ground-truth instances per evaluated class id (boxes carrying that label).
        num_frames: frames evaluated (keys of either mapping, after the exclusions).
        classes_without_ground_truth: evaluated class ids with no ground truth (NaN in `per_class`).
    """

    mean_ap: float
    per_class: dict[int, float]
    num_ground_truth: dict[int, int]
    num_frames: int
    classes_without_ground_truth: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict:
        """A JSON-ready dict: class ids as strings, NaN as `None`."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "mean_ap": clean(self.mean_ap),
            "per_class": {str(k): clean(v) for k, v in self.per_class.items()},
            "num_ground_truth": {str(k): v for k, v in self.num_ground_truth.items()},
            "num_frames": self.num_frames,
            "classes_without_ground_truth": list(self.classes_without_ground_truth),
        }


@typechecked
def voc_average_precision(
    scores: Float[Tensor, " n"], true_positive: Bool[Tensor, " n"], num_ground_truth: int
) -> float:
    """Pascal VOC average precision (all points) of ranked detections of one class.

    Detections are ranked by descending score (stable: ties keep their order). With `cumTP`, `cumFP` counted down the
    ranking, precision is `cumTP / (cumTP + cumFP)` and recall `cumTP / num_ground_truth`. The curve is padded with
    recall 0 / precision 0 in front and recall 1 / precision 0 at the end, precision is made non-increasing from the
    right, and AP is the sum of `(r[i] - r[i-1]) * p[i]` over the points where recall changes. Computed in float64.

    Args:
        scores: one score per detection.
        true_positive: True where the detection matched a ground-truth box.
        num_ground_truth: ground-truth instances of the class.

    Returns:
        AP in `[0, 1]`; 0 when there are no detections; NaN when `num_ground_truth == 0`.

    Raises:
        ValueError: for NaN scores, a negative `num_ground_truth`, or more true positives than ground truth.
    """
    if num_ground_truth < 0:
        raise ValueError(f"voc_average_precision: num_ground_truth must be >= 0, got {num_ground_truth}")
    if bool(scores.isnan().any()):
        raise ValueError(f"voc_average_precision: scores hold {int(scores.isnan().sum())} NaN values")
    hits = int(true_positive.sum())
    if hits > num_ground_truth:
        raise ValueError(
            f"voc_average_precision: {hits} true positives but only {num_ground_truth} ground-truth instances"
        )
    if num_ground_truth == 0:
        return float("nan")
    if scores.numel() == 0:
        return 0.0
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    tp = true_positive[order].double().cpu()
    cum_tp = tp.cumsum(0)
    cum_fp = (1.0 - tp).cumsum(0)
    precision = cum_tp / (cum_tp + cum_fp)
    recall = cum_tp / num_ground_truth
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    recall = torch.cat([zero, recall, one])
    precision = torch.cat([zero, precision, zero])
    precision = precision.flip(0).cummax(0).values.flip(0)  # running max from the right: non-increasing envelope
    changes = torch.nonzero(recall[1:] != recall[:-1]).squeeze(1) + 1
    return float(((recall[changes] - recall[changes - 1]) * precision[changes]).sum())


def _check_key(key: object, where: str) -> None:
    if not (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str)
        and isinstance(key[1], numbers.Integral)
        and not isinstance(key[1], bool)
    ):
        raise ValueError(f"frame_average_precision: {where} key {key!r} is not a (video_id: str, timestamp: int) pair")


def _check_boxes(boxes: object, key: FrameKey, where: str) -> Tensor:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"frame_average_precision: {where}[{key!r}] boxes must be a float [r, 4] tensor, got {shape}")
    boxes = boxes.detach().double().cpu()
    if not bool(boxes.isfinite().all()):
        raise ValueError(f"frame_average_precision: {where}[{key!r}] boxes hold non-finite values")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"frame_average_precision: {where}[{key!r}] box {i} = {boxes[i].tolist()} has x2 < x1 or y2 < y1; "
            "boxes are (x1, y1, x2, y2)"
        )
    return boxes


def _frame_entry(value: object, key: FrameKey, where: str, second: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ValueError(f"frame_average_precision: {where}[{key!r}] must be a (boxes, {second}) tuple")
    boxes = _check_boxes(value[0], key, where)
    other = value[1]
    if not isinstance(other, Tensor) or other.dim() != 2 or other.shape[0] != boxes.shape[0]:
        shape = tuple(other.shape) if isinstance(other, Tensor) else type(other).__name__
        raise ValueError(
            f"frame_average_precision: {where}[{key!r}] {second} must be a [{boxes.shape[0]}, classes] tensor "
            f"(one row per box), got {shape}"
        )
    return boxes, other.detach().cpu()


def _check_classes(columns: int, first: tuple[int, str] | None, key: FrameKey, where: str) -> tuple[int, str]:
    """The class count of the first entry seen (with its name), checked against every later entry."""
    if first is not None and columns != first[0]:
        raise ValueError(
            f"frame_average_precision: {where}[{key!r}] has {columns} class columns, {first[1]} has {first[0]}"
        )
    return first if first is not None else (columns, f"{where}[{key!r}]")


def _frame_matches(det_boxes: Tensor, scores: Tensor, gt_boxes: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """True positives `[r, C]` of one frame, every class at once.

    For class c a detection's candidate box is its highest-IoU ground-truth box of class c (first on ties); among the
    detections whose candidate overlaps by at least the threshold, the first in descending-score order (stable) takes
    it and the others are false positives: the greedy matching, without its loop.
    """
    from torchvision.ops import box_iou

    r, num_classes = scores.shape
    if r == 0 or gt_boxes.shape[0] == 0:
        return torch.zeros(r, num_classes, dtype=torch.bool)
    iou = box_iou(det_boxes, gt_boxes)  # [r g], float64
    of_class = labels.T.contiguous()[:, None, :]  # [C 1 g]; contiguous g: a fast reduction below
    per_class = torch.where(of_class, iou[None], torch.full((), -1.0, dtype=iou.dtype))  # [C r g]
    best = per_class.argmax(dim=2)  # [C r]; the first maximum on ties
    best_iou = per_class.gather(2, best[:, :, None]).squeeze(2)  # [C r]
    candidate = best_iou >= iou_threshold  # False for classes without ground truth here (best_iou = -1)
    rank = torch.empty(num_classes, r, dtype=torch.long)
    order = torch.sort(scores.T, dim=1, descending=True, stable=True).indices  # [C r]
    rank.scatter_(1, order, torch.arange(r).expand(num_classes, r).contiguous())
    sentinel = torch.full_like(rank, r)  # larger than any rank: never the first
    first = torch.full((num_classes, gt_boxes.shape[0]), r, dtype=torch.long)
    first.scatter_reduce_(1, best, torch.where(candidate, rank, sentinel), reduce="amin")
    return (candidate & (rank == first.gather(1, best))).T


def _top_detections(scores: Tensor, columns: Tensor, k: int) -> Tensor:
    """Mask `[r, C]` of the `k` highest (box, class) scores among `columns` (the official reader's per-frame cap)."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    sub = scores[:, columns]
    flat = sub.reshape(-1)
    if flat.numel() <= k:
        keep[:, columns] = True
        return keep
    top = torch.sort(flat, descending=True, stable=True).indices[:k]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[top] = True
    keep[:, columns] = chosen.reshape(sub.shape)
    return keep


def frame_average_precision(
    detections: Mapping[FrameKey, tuple[Tensor, Tensor]],
    ground_truth: Mapping[FrameKey, tuple[Tensor, Tensor]],
    *,
    class_ids: Sequence[int] | None = None,
    iou_threshold: float = 0.5,
    excluded: Collection[FrameKey] = (),
    max_detections_per_frame: int | None = None,
) -> FrameMAPResult:
    """AVA frame-mAP (see the module docstring for the matching rule).

    Example:
        ```python
        result = frame_average_precision(
            {("vid", 902): (boxes, scores)},  # [r, 4] normalised boxes, [r, 80] scores (column k-1 = class id k)
            {("vid", 902): (gt_boxes, gt_labels)},  # [g, 4], multi-hot [g, 80]
            class_ids=evaluated_ids,  # the 60 ids of the AVA v2.2 label map
            excluded=excluded_timestamps,
        )
        print(result.mean_ap)
        ```

    Args:
        detections: per frame, `(boxes [r, 4], scores [r, C])`: normalised `(x1, y1, x2, y2)` boxes and one score per
            class, column `k - 1` for class id `k` (AVA: sigmoid times the person detector's box score).
        ground_truth: per frame, `(boxes [g, 4], labels [g, C])`: multi-hot labels, bool or float 0 / 1.
        class_ids: 1-based class ids to evaluate; `None` evaluates all of `1..C`.
        iou_threshold: minimum IoU of a true positive, in `(0, 1]`.
        excluded: frame keys dropped from both mappings (AVA's excluded timestamps).
        max_detections_per_frame: keep only this many highest-scoring (box, class) pairs of the evaluated classes per
            frame before matching, as the official script's reader does with 50; `None` keeps all.

    Returns:
        A [FrameMAPResult][tubemask.eval.ava.FrameMAPResult].

    Raises:
        ValueError: naming the frame key and field for malformed entries (shapes, boxes with `x2 < x1` or `y2 < y1`,
            NaN scores, labels other than 0 / 1, class counts that differ between frames), for an `iou_threshold`
            outside `(0, 1]`, for class ids outside `1..C` or repeated, and when `C` cannot be told (both mappings
            empty and no `class_ids`).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"frame_average_precision: iou_threshold must be in (0, 1], got {iou_threshold}")
    if max_detections_per_frame is not None and max_detections_per_frame < 1:
        raise ValueError(
            f"frame_average_precision: max_detections_per_frame must be >= 1 or None, got {max_detections_per_frame}"
        )
    excluded = set(excluded)
    first: tuple[int, str] | None = None  # (class count, the entry it was read from)
    dets: dict[FrameKey, tuple[Tensor, Tensor]] = {}
    for key, value in detections.items():
        _check_key(key, "detections")
        boxes, scores = _frame_entry(value, key, "detections", "scores")
        if not scores.is_floating_point():
            raise ValueError(f"frame_average_precision: detections[{key!r}] scores must be floats, got {scores.dtype}")
        if bool(scores.isnan().any()):
            raise ValueError(f"frame_average_precision: detections[{key!r}] scores hold NaN values")
        first = _check_classes(scores.shape[1], first, key, "detections")
        if key not in excluded:
            dets[key] = (boxes, scores.double())
    gts: dict[FrameKey, tuple[Tensor, Tensor]] = {}
    for key, value in ground_truth.items():
        _check_key(key, "ground_truth")
        boxes, labels = _frame_entry(value, key, "ground_truth", "labels")
        if labels.dtype != torch.bool:
            if not bool(((labels == 0) | (labels == 1)).all()):
                raise ValueError(
                    f"frame_average_precision: ground_truth[{key!r}] labels must be bool or 0 / 1, got other values"
                )
            labels = labels == 1
        first = _check_classes(labels.shape[1], first, key, "ground_truth")
        if key not in excluded:
            gts[key] = (boxes, labels)

    if first is None:
        if class_ids is None:
            raise ValueError("frame_average_precision: no frames and no class_ids; cannot tell the classes")
        num_classes = max(class_ids, default=0)
    else:
        num_classes = first[0]
    ids = list(range(1, num_classes + 1)) if class_ids is None else [int(c) for c in class_ids]
    unknown = [c for c in ids if not 1 <= c <= num_classes]
    if unknown:
        raise ValueError(
            f"frame_average_precision: class ids {unknown[:8]} are outside 1..{num_classes} (scores and labels have "
            f"{num_classes} columns; id k is column k-1)"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"frame_average_precision: class_ids repeat values: {sorted(ids)}")
    columns = torch.tensor([c - 1 for c in ids], dtype=torch.long)

    frames = sorted(set(dets) | set(gts))  # a fixed order: the result does not depend on the mappings' order
    num_gt = torch.zeros(num_classes, dtype=torch.long)
    pooled_scores: list[Tensor] = []
    pooled_tp: list[Tensor] = []
    pooled_keep: list[Tensor] = []
    empty_boxes = torch.zeros(0, 4, dtype=torch.float64)
    for key in frames:
        gt_boxes, labels = gts.get(key, (empty_boxes, torch.zeros(0, num_classes, dtype=torch.bool)))
        num_gt += labels.sum(0)
        if key not in dets:
            continue
        boxes, scores = dets[key]
        pooled_scores.append(scores)
        pooled_tp.append(_frame_matches(boxes, scores, gt_boxes, labels, iou_threshold))
        if max_detections_per_frame is not None:
            pooled_keep.append(_top_detections(scores, columns, max_detections_per_frame))
    scores = torch.cat(pooled_scores) if pooled_scores else torch.zeros(0, num_classes, dtype=torch.float64)
    tp = torch.cat(pooled_tp) if pooled_tp else torch.zeros(0, num_classes, dtype=torch.bool)
    keep = torch.cat(pooled_keep) if pooled_keep else torch.ones_like(tp)

    per_class: dict[int, float] = {}
    counts: dict[int, int] = {}
    for c in ids:
        column = keep[:, c - 1]
        counts[c] = int(num_gt[c - 1])
        per_class[c] = voc_average_precision(scores[column, c - 1], tp[column, c - 1], counts[c])
    valid = [ap for ap in per_class.values() if not math.isnan(ap)]
    return FrameMAPResult(
        mean_ap=sum(valid) / len(valid) if valid else float("nan"),
        per_class=per_class,
        num_ground_truth=counts,
        num_frames=len(frames),
        classes_without_ground_truth=tuple(c for c in ids if counts[c] == 0),
    )


def write_frame_map_report(
    path: str | os.PathLike, result: FrameMAPResult, names: dict[int, str], **about: Any
) -> dict[str, Any]:
    """Write `result` as JSON to `path` atomically: frame mAP, AP and ground-truth count per evaluated class (keyed
    `"<id> <name>"`), the number of frames, and `about` (the protocol, the step, the weights ...); returns it."""
    per_class = {
        f"{k} {names.get(k, '')}".strip(): None if math.isnan(ap) else ap for k, ap in sorted(result.per_class.items())
    }
    report = {
        "map": result.mean_ap,
        "per_class_ap": per_class,
        "ground_truth_per_class": {str(k): n for k, n in sorted(result.num_ground_truth.items())},
        "num_frames": result.num_frames,
        **about,
    }
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tubemask.eval.ava",
        description="AVA frame-mAP of an official results CSV (one row per box and action), as the ActivityNet "
        "evaluator computes it. Prints AP per class, then, as the last line, "
        '{"mAP": m, "per_class": {"<id>": ap}} over the label map classes that have ground truth.',
    )
    parser.add_argument("--groundtruth", required=True, help="video_id,timestamp,x1,y1,x2,y2,action_id,person_id")
    parser.add_argument("--detections", required=True, help="video_id,timestamp,x1,y1,x2,y2,action_id,score")
    parser.add_argument("--labelmap", required=True, help="pbtxt of the evaluated classes")
    parser.add_argument("--exclusions", default=None, help="video_id,timestamp rows left out of both sides")
    parser.add_argument(
        "--max-detections-per-frame",
        type=int,
        default=None,
        help="keep the top N (box, action) pairs per frame (the ActivityNet script uses 50; default: all)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The evaluator CLI (see `python -m tubemask.eval.ava --help`); returns the exit code (2 for bad input)."""
    from tubemask.data.ava import read_ava_exclusions, read_ava_label_map
    from tubemask.eval.ava_files import evaluate_box_lists, read_official_ground_truth, read_official_results

    parser = _parser()
    args = parser.parse_args(argv)
    if args.max_detections_per_frame is not None and args.max_detections_per_frame < 1:
        parser.error(f"--max-detections-per-frame must be >= 1, got {args.max_detections_per_frame}")
    try:
        names = read_ava_label_map(args.labelmap)
        excluded = read_ava_exclusions(args.exclusions) if args.exclusions is not None else set()
        ground_truth = read_official_ground_truth(args.groundtruth)
        detections = read_official_results(args.detections)
    except (OSError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    result = evaluate_box_lists(
        detections,
        ground_truth,
        class_ids=list(names),
        excluded=excluded,
        max_detections_per_frame=args.max_detections_per_frame,
    )
    per_class = {c: ap for c, ap in sorted(result.per_class.items()) if not math.isnan(ap)}
    if not per_class:
        print(f"{parser.prog}: error: no ground truth of any label map class in {args.groundtruth}", file=sys.stderr)
        return 2
    for c, ap in per_class.items():
        print(f"AP {c:>3} {names[c]}: {ap:.4f} ({result.num_ground_truth[c]} ground truth)")
    print(f"frame-mAP@0.5IOU: {result.mean_ap:.4f} over {len(per_class)} classes, {result.num_frames} frames")
    print(json.dumps({"mAP": result.mean_ap, "per_class": {str(c): ap for c, ap in per_class.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
