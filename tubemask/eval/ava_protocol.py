"""An AVA test pass scored as the official code scores it, under both per-frame rules, and its output files.

A detector's per-frame scores ([`score_person_boxes`][tubemask.eval.ava_scoring.score_person_boxes]) become the rows
of the official results file ([`reported_actions`][tubemask.eval.ava_files.reported_actions]), and those rows are
evaluated ([`evaluate_box_lists`][tubemask.eval.ava_files.evaluate_box_lists]) twice:

| figure | rule | whose |
|---|---|---|
| `map` | every (box, action) pair of a frame | VideoMAE's and SlowFast's evaluation: the protocol of the paper's table |
| `map_top50` | the 50 best pairs of each frame | the ActivityNet script (`get_ava_performance.py`) |

[`write_test_outputs`][tubemask.eval.ava_protocol.write_test_outputs] writes the rows as `detections.csv` and both
figures as `test_results.json`; `python -m tubemask.eval.ava` on that CSV gives the same figures.
[`read_test_annotations`][tubemask.eval.ava_protocol.read_test_annotations] reads what a test needs besides the
videos: the person boxes to classify, the ground truth, the label map and the exclusions.
"""

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from tubemask.data.ava import AVAFiles, AVAFrame, read_ava_exclusions, read_ava_label_map
from tubemask.data.ava_person_boxes import read_person_detections
from tubemask.eval.ava import FrameKey, FrameMAPResult, write_frame_map_report
from tubemask.eval.ava_files import (
    GroundTruthBox,
    ReportedAction,
    evaluate_box_lists,
    read_official_ground_truth,
    reported_actions,
    write_official_results,
)

__all__ = [
    "ACTIVITYNET_CAP",
    "AVATestAnnotations",
    "AVATestResult",
    "describe_test",
    "evaluate_official",
    "read_test_annotations",
    "write_test_outputs",
]

ACTIVITYNET_CAP = 50
"""(box, action) pairs per frame that the ActivityNet script keeps; VideoMAE's and SlowFast's evaluations keep all."""


@dataclass(frozen=True)
class AVATestAnnotations:
    """What an AVA test reads besides the videos.

    Attributes:
        person_boxes: per keyframe, the person detections to classify (score at least the threshold).
        ground_truth: per keyframe, one entry per ground-truth row, as the official evaluator counts them.
        label_map: the evaluated action ids and their names.
        excluded: keyframes left out of the evaluation.
    """

    person_boxes: dict[FrameKey, AVAFrame]
    ground_truth: dict[FrameKey, list[GroundTruthBox]]
    label_map: dict[int, str]
    excluded: set[FrameKey]

    @property
    def class_ids(self) -> list[int]:
        """The evaluated action ids, ascending."""
        return sorted(self.label_map)

    def describe(self, *, min_score: float, num_classes: int, source: object) -> str:
        """One log line: the keyframes with person boxes (from `source`, score `>= min_score`) and with ground
        truth, the classes evaluated of the head's `num_classes`, the excluded keyframes."""
        return (
            f"{len(self.person_boxes)} keyframes with person detections >= {min_score} ({source}), "
            f"{len(self.ground_truth)} with ground truth, {len(self.label_map)} evaluated of {num_classes} classes, "
            f"{len(self.excluded)} excluded timestamps"
        )


def read_test_annotations(files: AVAFiles, *, min_score: float, num_classes: int) -> AVATestAnnotations:
    """The person boxes with a score `>= min_score` (CSV, or JSON with `files.val_image_map`), the ground truth
    (`files.val_csv`), the label map and the exclusions (none when `files.exclusions` is None).

    Raises:
        SystemExit: a label-map class id above `num_classes` (the logits of the head), naming the file.
    """
    label_map = read_ava_label_map(files.label_map)
    if max(label_map) > num_classes:
        raise SystemExit(f"{files.label_map}: class id {max(label_map)} is above --num-classes {num_classes}")
    return AVATestAnnotations(
        person_boxes=read_person_detections(
            files.val_detections, image_map=files.val_image_map, min_score=min_score, num_classes=num_classes
        ),
        ground_truth=read_official_ground_truth(files.val_csv),
        label_map=label_map,
        excluded=read_ava_exclusions(files.exclusions) if files.exclusions is not None else set(),
    )


@dataclass(frozen=True)
class AVATestResult:
    """What [`evaluate_official`][tubemask.eval.ava_protocol.evaluate_official] returns.

    Attributes:
        rows: the results rows, one per person box and evaluated action, as `detections.csv` holds them.
        every_detection: frame mAP with every pair (VideoMAE / SlowFast: the paper's table).
        top50: frame mAP with the 50 best pairs per frame (the ActivityNet script).
    """

    rows: dict[FrameKey, list[ReportedAction]]
    every_detection: FrameMAPResult
    top50: FrameMAPResult

    @property
    def map(self) -> float:
        """The frame mAP comparable with the paper's table (every detection)."""
        return self.every_detection.mean_ap

    @property
    def map_top50(self) -> float:
        """The frame mAP of the ActivityNet script (top 50 pairs per frame)."""
        return self.top50.mean_ap


def evaluate_official(
    detections: Mapping[FrameKey, tuple[Tensor, Tensor]],
    ground_truth: Mapping[FrameKey, Sequence[GroundTruthBox]],
    *,
    class_ids: Sequence[int],
    excluded: Collection[FrameKey] = (),
) -> AVATestResult:
    """Frame mAP at IoU 0.5 of a detector's scores, through the official results rows, under both per-frame rules.

    Args:
        detections: per frame, `(boxes [r, 4], scores [r, C])` (normalised boxes; column `k - 1` is action id `k`).
        ground_truth: per frame, one entry per ground-truth row
            ([`read_official_ground_truth`][tubemask.eval.ava_files.read_official_ground_truth]).
        class_ids: the evaluated action ids (the label map's).
        excluded: frames left out on both sides.
    """
    rows = reported_actions(detections, class_ids)
    every, top50 = (
        evaluate_box_lists(rows, ground_truth, class_ids=class_ids, excluded=excluded, max_detections_per_frame=cap)
        for cap in (None, ACTIVITYNET_CAP)
    )
    return AVATestResult(rows, every, top50)


def write_test_outputs(
    out_dir: str | os.PathLike, result: AVATestResult, names: dict[int, str], **about: Any
) -> dict[str, Any]:
    """Write `detections.csv` (the official results format) and `test_results.json` into `out_dir`, atomically.

    The JSON holds `map` (every detection) with AP and ground-truth count per class, `map_top50` with its AP per
    class, the number of frames, the row count of the CSV (`detections_csv`), which rule each figure follows
    (`protocol`), and `about` (merged into `protocol` when it has a `protocol` dict). Returns the JSON's content.
    """
    out = Path(out_dir)
    count = write_official_results(out / "detections.csv", result.rows)
    protocol = dict(metric="frame mAP, Pascal-VOC AP at IoU 0.5, excluded timestamps left out")
    protocol.update(map="every detection: VideoMAE's and SlowFast's evaluation, the protocol of the paper's table")
    protocol.update(map_top50=f"the {ACTIVITYNET_CAP} best (box, action) pairs per frame: the ActivityNet script")
    protocol.update(about.pop("protocol", {}))
    top50 = {str(k): None if ap != ap else ap for k, ap in result.top50.per_class.items()}  # NaN -> None
    extra = dict(map_top50=result.map_top50, per_class_ap_top50=top50, detections_csv=count, protocol=protocol)
    return write_frame_map_report(out / "test_results.json", result.every_detection, names, **extra, **about)


def describe_test(result: AVATestResult, *, num_classes: int, rows: int) -> str:
    """One log line: both figures with their rules, the `num_classes` evaluated classes, the keyframes evaluated and
    the `rows` of `detections.csv`."""
    return (
        f"test: frame mAP@0.5 {result.map:.4f} (every detection, as VideoMAE / SlowFast: the paper's table), "
        f"{result.map_top50:.4f} (top {ACTIVITYNET_CAP} per frame, the ActivityNet script) over {num_classes} "
        f"classes, {result.every_detection.num_frames} keyframes; {rows} rows in detections.csv"
    )
