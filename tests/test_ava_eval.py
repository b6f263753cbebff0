"""AVA frame-mAP: hand-computed cases, the official matching rule, exclusions, input errors, and property tests."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.eval.ava import FrameMAPResult, frame_average_precision, voc_average_precision


def _boxes(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _onehot(rows: list[list[int]], num_classes: int) -> torch.Tensor:
    """Multi-hot labels from 1-based class ids per box."""
    out = torch.zeros(len(rows), num_classes, dtype=torch.bool)
    for i, ids in enumerate(rows):
        for c in ids:
            out[i, c - 1] = True
    return out


def _scores(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, None]


A = (0.0, 0.0, 0.4, 0.4)
B = (0.6, 0.6, 1.0, 1.0)
FAR = (0.45, 0.0, 0.55, 0.1)  # overlaps neither A nor B


# --- voc_average_precision ------------------------------------------------------------------------------------------


def test_voc_ap_hand_computed_three_detections():
    # ranked: TP, FP, TP with 2 ground-truth instances
    # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    # padded recall [0, .5, .5, 1, 1], precision [0, 1, .5, 2/3, 0] -> envelope [1, 1, 2/3, 2/3, 0]
    # recall changes at i = 1 and i = 3: AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    scores = torch.tensor([0.7, 0.9, 0.8])  # given out of order on purpose
    tp = torch.tensor([True, True, False])
    assert voc_average_precision(scores, tp, 2) == pytest.approx(5 / 6, abs=1e-12)


def test_voc_ap_edge_cases():
    assert voc_average_precision(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3) == 0.0
    assert math.isnan(voc_average_precision(torch.zeros(0), torch.zeros(0, dtype=torch.bool), 0))
    # one of two instances found, first: recall stops at 1/2 -> AP 1/2
    assert voc_average_precision(torch.tensor([0.9, 0.1]), torch.tensor([True, False]), 2) == pytest.approx(0.5)
    # FP first, then TP: precision 1/2 at recall 1 -> AP 1/2
    assert voc_average_precision(torch.tensor([0.9, 0.1]), torch.tensor([False, True]), 1) == pytest.approx(0.5)


def test_voc_ap_errors():
    with pytest.raises(ValueError, match="NaN"):
        voc_average_precision(torch.tensor([float("nan")]), torch.tensor([True]), 1)
    with pytest.raises(ValueError, match="2 true positives but only 1"):
        voc_average_precision(torch.tensor([0.5, 0.4]), torch.tensor([True, True]), 1)
    with pytest.raises(ValueError, match="num_ground_truth must be >= 0"):
        voc_average_precision(torch.tensor([0.5]), torch.tensor([False]), -1)


def _numpy_voc_ap(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """Independent formula: every true positive adds 1/num_gt recall at the best precision reached at or after it."""
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    ap = 0.0
    for i in range(len(hits)):
        if hits[i]:
            ap += precision[i:].max() / num_gt
    return ap


@settings(max_examples=60)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 30), extra_gt=st.integers(0, 5), ties=st.booleans())
def test_voc_ap_matches_independent_numpy(seed, n, extra_gt, ties):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, n).astype(np.float64) if ties else rng.random(n)
    tp = rng.random(n) < 0.5
    num_gt = int(tp.sum()) + extra_gt
    got = voc_average_precision(torch.from_numpy(scores), torch.from_numpy(tp), num_gt)
    if num_gt == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(_numpy_voc_ap(scores, tp, num_gt), abs=1e-12)


# --- frame_average_precision: hand-made cases ------------------------------------------------------------------------


def test_frame_map_hand_computed_over_two_frames():
    # class 1: frame f1 has GT A, frame f2 has GT B. Detections pooled: A@.9 (TP), FAR@.8 (FP), B@.7 (TP) -> AP 5/6
    gt = {("v", 1): (_boxes(A), _onehot([[1]], 1)), ("v", 2): (_boxes(B), _onehot([[1]], 1))}
    det = {("v", 1): (_boxes(A, FAR), _scores([0.9, 0.8])), ("v", 2): (_boxes(B), _scores([0.7]))}
    result = frame_average_precision(det, gt)
    assert result.per_class[1] == pytest.approx(5 / 6)
    assert result.mean_ap == pytest.approx(5 / 6)
    assert result.num_ground_truth == {1: 2}
    assert result.num_frames == 2


def test_best_ground_truth_already_taken_is_a_false_positive():
    # two overlapping GT boxes of class 1; the second detection's best box (G1, IoU .765) is taken by the first
    # detection, and although G2 overlaps it by .667 >= .5 there is no fallback: FP. Precision 1, 1/2; recall 1/2, 1/2
    g1, g2 = (0.0, 0.0, 0.6, 1.0), (0.2, 0.0, 0.8, 1.0)
    d2 = (0.08, 0.0, 0.68, 1.0)
    gt = {("v", 0): (_boxes(g1, g2), _onehot([[1], [1]], 1))}
    det = {("v", 0): (_boxes(g1, d2), _scores([0.9, 0.8]))}
    assert frame_average_precision(det, gt).per_class[1] == pytest.approx(0.5)
    # ranked the other way round, d2 takes G1 and the exact copy of G1 finds it taken: the same AP
    det = {("v", 0): (_boxes(g1, d2), _scores([0.8, 0.9]))}
    assert frame_average_precision(det, gt).per_class[1] == pytest.approx(0.5)


def test_iou_threshold_is_inclusive_and_checked():
    half = (0.0, 0.0, 0.2, 0.4)  # IoU with A = 0.5 exactly
    gt = {("v", 0): (_boxes(A), _onehot([[1]], 1))}
    det = {("v", 0): (_boxes(half), _scores([0.9]))}
    assert frame_average_precision(det, gt).per_class[1] == pytest.approx(1.0)
    assert frame_average_precision(det, gt, iou_threshold=0.51).per_class[1] == 0.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="iou_threshold must be in"):
            frame_average_precision(det, gt, iou_threshold=bad)


def test_multi_label_box_counts_once_per_label_and_classes_are_separate():
    # GT A has classes 1 and 3; B has class 2. For class 2 the detection of A (a FP) outranks B's (a TP): AP 1/2
    gt = {("v", 0): (_boxes(A, B), _onehot([[1, 3], [2]], 3))}
    scores = torch.tensor([[0.9, 0.4, 0.8], [0.2, 0.3, 0.05]])
    det = {("v", 0): (_boxes(A, B), scores)}
    result = frame_average_precision(det, gt)
    assert result.num_ground_truth == {1: 1, 2: 1, 3: 1}
    assert result.per_class == {1: pytest.approx(1.0), 2: pytest.approx(0.5), 3: pytest.approx(1.0)}
    assert result.mean_ap == pytest.approx(2.5 / 3)


def test_exclusion_drops_both_sides():
    gt = {("v", 0): (_boxes(A), _onehot([[1]], 1)), ("v", 1): (_boxes(B), _onehot([[1]], 1))}
    det = {("v", 0): (_boxes(A), _scores([0.9])), ("v", 1): (_boxes(FAR), _scores([0.95]))}
    assert frame_average_precision(det, gt).per_class[1] == pytest.approx(0.25)  # FP first, recall 1/2 at 1/2
    result = frame_average_precision(det, gt, excluded={("v", 1)})
    assert result.per_class[1] == pytest.approx(1.0)
    assert result.num_ground_truth == {1: 1}
    assert result.num_frames == 1


def test_detections_without_ground_truth_frame_are_false_positives():
    gt = {("v", 0): (_boxes(A), _onehot([[1]], 1))}
    det = {("v", 0): (_boxes(A), _scores([0.5])), ("w", 7): (_boxes(A), _scores([0.9]))}
    result = frame_average_precision(det, gt)
    assert result.per_class[1] == pytest.approx(0.5)
    assert result.num_frames == 2


def test_class_without_ground_truth_is_nan_and_left_out():
    gt = {("v", 0): (_boxes(A), _onehot([[1]], 3))}
    det = {("v", 0): (_boxes(A, B), torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.7, 0.3]]))}
    result = frame_average_precision(det, gt, class_ids=[1, 2])
    assert result.per_class[1] == pytest.approx(1.0)
    assert math.isnan(result.per_class[2])
    assert set(result.per_class) == {1, 2}  # class 3 is not evaluated
    assert result.mean_ap == pytest.approx(1.0)
    assert result.classes_without_ground_truth == (2,)
    as_dict = result.to_dict()
    assert as_dict["per_class"] == {"1": pytest.approx(1.0), "2": None}
    assert as_dict["classes_without_ground_truth"] == [2]


def test_class_with_ground_truth_but_no_detections_scores_zero():
    gt = {("v", 0): (_boxes(A), _onehot([[1, 2]], 2))}
    det = {("v", 1): (_boxes(A), torch.tensor([[0.9, 0.4]]))}  # another frame only
    result = frame_average_precision(det, gt)
    assert result.per_class == {1: 0.0, 2: 0.0}
    empty = frame_average_precision({}, gt)
    assert empty.per_class == {1: 0.0, 2: 0.0}
    nothing = frame_average_precision({}, {}, class_ids=[1, 2])
    assert math.isnan(nothing.mean_ap) and nothing.num_frames == 0


def test_float_labels_and_perfect_detections():
    gt = {("v", t): (_boxes(A, B), torch.tensor([[1.0, 0.0], [1.0, 1.0]])) for t in range(3)}
    det = {("v", t): (_boxes(A, B), torch.tensor([[0.9, 0.1], [0.8, 0.95]])) for t in range(3)}
    result = frame_average_precision(det, gt)
    assert result.per_class == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert isinstance(result, FrameMAPResult) and result.mean_ap == pytest.approx(1.0)


def test_max_detections_per_frame_keeps_the_top_pairs():
    # 2 boxes x 2 classes = 4 pairs; with a cap of 2, the pairs (B, class 1) @ .3 and (A, class 2) @ .2 are dropped
    gt = {("v", 0): (_boxes(A, B), _onehot([[1], [1, 2]], 2))}
    det = {("v", 0): (_boxes(A, B), torch.tensor([[0.9, 0.2], [0.3, 0.8]]))}
    full = frame_average_precision(det, gt)
    capped = frame_average_precision(det, gt, max_detections_per_frame=2)
    assert full.per_class == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert capped.per_class == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}


def test_bad_input_errors_name_the_frame_and_field():
    gt = {("v", 0): (_boxes(A), _onehot([[1]], 2))}
    good = {("v", 0): (_boxes(A), torch.tensor([[0.5, 0.5]]))}
    with pytest.raises(ValueError, match=r"detections\[\('v', 3\)\] box 0 .* x2 < x1"):
        frame_average_precision({("v", 3): (_boxes((0.5, 0.0, 0.4, 1.0)), torch.tensor([[0.5, 0.5]]))}, gt)
    with pytest.raises(ValueError, match=r"ground_truth\[\('v', 0\)\] box 0 .* y2 < y1"):
        frame_average_precision(good, {("v", 0): (_boxes((0.0, 0.5, 1.0, 0.4)), _onehot([[1]], 2))})
    with pytest.raises(
        ValueError, match=r"ground_truth\[\('v', 0\)\] has 2 class columns, detections\[\('v', 0\)\] has 3"
    ):
        frame_average_precision({("v", 0): (_boxes(A), torch.tensor([[0.5, 0.5, 0.5]]))}, gt)
    with pytest.raises(ValueError, match=r"detections\[\('v', 0\)\] scores hold NaN"):
        frame_average_precision({("v", 0): (_boxes(A), torch.tensor([[0.5, float("nan")]]))}, gt)
    with pytest.raises(ValueError, match=r"scores must be a \[1, classes\] tensor"):
        frame_average_precision({("v", 0): (_boxes(A), torch.tensor([[0.5], [0.4]]))}, gt)
    with pytest.raises(ValueError, match=r"class ids \[0, 3\] are outside 1..2"):
        frame_average_precision(good, gt, class_ids=[0, 1, 3])
    with pytest.raises(ValueError, match="repeat"):
        frame_average_precision(good, gt, class_ids=[1, 1])
    with pytest.raises(ValueError, match="bool or 0 / 1"):
        frame_average_precision(good, {("v", 0): (_boxes(A), torch.tensor([[0.5, 0.0]]))})
    with pytest.raises(ValueError, match=r"key \('v', '0'\) is not a \(video_id: str, timestamp: int\) pair"):
        frame_average_precision({("v", "0"): good[("v", 0)]}, gt)
    with pytest.raises(ValueError, match="cannot tell the classes"):
        frame_average_precision({}, {})


# --- property tests ---------------------------------------------------------------------------------------------------

C = 3


def _random_case(seed: int, num_frames: int, num_det: int) -> tuple[dict, dict]:
    """GT boxes with random multi-hot labels; detections = jittered GT copies + random boxes; distinct scores."""
    g = torch.Generator().manual_seed(seed)
    gt, det = {}, {}
    total = num_frames * (num_det + 4)
    pool = (torch.randperm(total * C, generator=g).double() + 1) / (total * C + 1)  # distinct over everything
    used = 0
    for f in range(num_frames):
        k = int(torch.randint(0, 4, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 0.6
        wh = 0.1 + torch.rand(k, 2, generator=g) * 0.3
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.rand(k, C, generator=g) < 0.5
        key = (f"vid{f % 2}", 900 + f)
        gt[key] = (boxes, labels)
        jitter = boxes + 0.03 * torch.randn(k, 4, generator=g)
        jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2])
        xy = torch.rand(num_det, 2, generator=g) * 0.7
        rand_boxes = torch.cat([xy, xy + 0.05 + torch.rand(num_det, 2, generator=g) * 0.25], dim=1)
        all_boxes = torch.cat([jitter, rand_boxes])
        n = all_boxes.shape[0]
        det[key] = (all_boxes, pool[used : used + n * C].reshape(n, C))
        used += n * C
    return det, gt


def _aps(result: FrameMAPResult) -> dict[int, float]:
    return {c: v for c, v in result.per_class.items() if not math.isnan(v)}


cases = dict(seed=st.integers(0, 2**31 - 1), num_frames=st.integers(1, 4), num_det=st.integers(0, 4))


@settings(max_examples=25)
@given(**cases)
def test_ap_is_in_unit_interval(seed, num_frames, num_det):
    det, gt = _random_case(seed, num_frames, num_det)
    result = frame_average_precision(det, gt)
    assert all(0.0 <= v <= 1.0 for v in _aps(result).values())
    assert set(result.classes_without_ground_truth) == {c for c, n in result.num_ground_truth.items() if n == 0}


@settings(max_examples=25)
@given(**cases, transform=st.sampled_from(["exp", "cube", "affine"]))
def test_ap_is_invariant_under_increasing_score_transforms(seed, num_frames, num_det, transform):
    det, gt = _random_case(seed, num_frames, num_det)
    fn = {"exp": lambda s: torch.exp(5 * s), "cube": lambda s: s**3 - 2, "affine": lambda s: 3 * s + 1}[transform]
    moved = {k: (b, fn(s)) for k, (b, s) in det.items()}
    assert _aps(frame_average_precision(moved, gt)) == pytest.approx(_aps(frame_average_precision(det, gt)))


@settings(max_examples=25)
@given(**cases, perm_seed=st.integers(0, 1000))
def test_ap_is_invariant_under_permuting_detections_and_frames(seed, num_frames, num_det, perm_seed):
    det, gt = _random_case(seed, num_frames, num_det)
    g = torch.Generator().manual_seed(perm_seed)
    shuffled = {}
    for i in torch.randperm(len(det), generator=g).tolist():
        key = list(det)[i]
        boxes, scores = det[key]
        p = torch.randperm(boxes.shape[0], generator=g)
        shuffled[key] = (boxes[p], scores[p])
    gt_shuffled = {k: gt[k] for k in reversed(list(gt))}
    expected = _aps(frame_average_precision(det, gt))
    assert _aps(frame_average_precision(shuffled, gt_shuffled)) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=25)
@given(**cases, new_frame=st.booleans())
def test_a_lowest_scored_false_positive_never_raises_ap(seed, num_frames, num_det, new_frame):
    det, gt = _random_case(seed, num_frames, num_det)
    key = ("unseen", 0) if new_frame else next(iter(det))
    boxes, scores = det.get(key, (torch.zeros(0, 4), torch.zeros(0, C, dtype=torch.float64)))
    far = torch.tensor([[2.0, 2.0, 3.0, 3.0]])  # outside every GT box: a false positive for every class
    lowest = torch.full((1, C), -1.0, dtype=torch.float64)
    more = dict(det)
    more[key] = (torch.cat([boxes, far]), torch.cat([scores, lowest]))
    before, after = _aps(frame_average_precision(det, gt)), _aps(frame_average_precision(more, gt))
    assert all(after[c] <= before[c] + 1e-12 for c in before)


@settings(max_examples=25)
@given(**cases)
def test_perfect_detections_with_lower_extras_score_one(seed, num_frames, num_det):
    det, gt = _random_case(seed, num_frames, num_det)
    perfect = {}
    for key, (gt_boxes, labels) in gt.items():
        extra_boxes, extra_scores = det[key]
        k = gt_boxes.shape[0]
        # every positive pair scores above every other pair of its class, anywhere
        pos = 2.0 + torch.rand(k, C, generator=torch.Generator().manual_seed(seed))
        scores = torch.where(labels, pos.double(), extra_scores[:k] - 1.0)
        perfect[key] = (torch.cat([gt_boxes, extra_boxes]), torch.cat([scores, extra_scores]))
    result = frame_average_precision(perfect, gt)
    assert all(v == pytest.approx(1.0) for v in _aps(result).values())


def _numpy_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_frame_map(det: dict, gt: dict, threshold: float) -> dict[int, float]:
    """The matching rule as a plain loop: per class, per frame, detections in descending score order."""
    out = {}
    for c in range(C):
        scores, hits, num_gt = [], [], 0
        for key in sorted(set(det) | set(gt)):
            gt_boxes, labels = gt.get(key, (torch.zeros(0, 4), torch.zeros(0, C, dtype=torch.bool)))
            mine = gt_boxes.double().numpy()[labels[:, c].numpy()]
            num_gt += len(mine)
            if key not in det:
                continue
            boxes, s = (x.double().numpy() for x in det[key])
            taken = np.zeros(len(mine), dtype=bool)
            for i in np.argsort(-s[:, c], kind="stable"):
                hit = False
                if len(mine):
                    ious = [_numpy_iou(boxes[i], g) for g in mine]
                    j = int(np.argmax(ious))
                    hit = ious[j] >= threshold and not taken[j]
                    taken[j] |= hit
                scores.append(s[i, c])
                hits.append(hit)
        if num_gt:
            out[c + 1] = _numpy_voc_ap(np.array(scores), np.array(hits, dtype=bool), num_gt)
    return out


@settings(max_examples=25)
@given(**cases, ties=st.booleans(), threshold=st.sampled_from([0.3, 0.5, 0.75]))
def test_frame_map_matches_a_plain_loop(seed, num_frames, num_det, ties, threshold):
    det, gt = _random_case(seed, num_frames, num_det)
    if ties:  # coarse scores: ties within and across frames
        det = {k: (b, (s * 4).floor() / 4) for k, (b, s) in det.items()}
    got = _aps(frame_average_precision(det, gt, iou_threshold=threshold))
    assert got == pytest.approx(_reference_frame_map(det, gt, threshold), abs=1e-12)
