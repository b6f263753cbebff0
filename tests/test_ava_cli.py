"""The AVA evaluator CLI on official files, against a plain-Python copy of the ActivityNet protocol written here."""

import csv
import heapq
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tubemask.eval.ava import main

LABEL_MAP = {1: "stand", 2: "sit", 3: "walk", 5: "talk to"}  # ids 4 and 6 appear in the files but are not evaluated

# --- the reference: the ActivityNet evaluator's steps, in plain Python -------------------------------------------------


def _key(video: str, timestamp: str) -> str:
    return f"{video},{int(timestamp):04d}"


def _read_csv(path: Path, whitelist: set[int], capacity: int = 0) -> dict[str, list[tuple]]:
    """Per frame, (score, action, y1, x1, y2, x2) by descending score; the top `capacity` when > 0 (a heap)."""
    entries: dict[str, list[tuple]] = {}
    with path.open() as f:
        for row in csv.reader(f):
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            action = int(row[6])
            if action not in whitelist:
                continue
            score = float(row[7])  # the person id for ground truth: never used
            heap = entries.setdefault(_key(row[0], row[1]), [])
            if capacity < 1 or len(heap) < capacity:
                heapq.heappush(heap, (score, action, y1, x1, y2, x2))
            elif score > heap[0][0]:
                heapq.heapreplace(heap, (score, action, y1, x1, y2, x2))
    return {k: sorted(v, key=lambda t: -t[0]) for k, v in entries.items()}


def _iou(a: tuple, b: tuple) -> float:
    y1, x1, y2, x2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y2 - y1) * max(0.0, x2 - x1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _average_precision(scores: list[float], tp: list[bool], num_gt: int) -> float:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    precision, recall, hits = [], [], 0
    for n, i in enumerate(order, start=1):
        hits += tp[i]
        precision.append(hits / n)
        recall.append(hits / num_gt)
    if not scores:
        return 0.0
    recall = [0.0, *recall, 1.0]
    precision = [0.0, *precision, 0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum((recall[i] - recall[i - 1]) * precision[i] for i in range(1, len(recall)) if recall[i] != recall[i - 1])


def reference_map(gt: Path, det: Path, classes: set[int], excluded: Path | None, capacity: int) -> dict:
    excluded_keys = set()
    if excluded is not None:
        with excluded.open() as f:
            excluded_keys = {_key(*row) for row in csv.reader(f)}
    gts = {k: v for k, v in _read_csv(gt, classes).items() if k not in excluded_keys}
    dets = {k: v for k, v in _read_csv(det, classes, capacity).items() if k not in excluded_keys}
    num_gt = {c: sum(e[1] == c for v in gts.values() for e in v) for c in classes}
    scores: dict[int, list[float]] = {c: [] for c in classes}
    tps: dict[int, list[bool]] = {c: [] for c in classes}
    for key, entries in dets.items():
        valid = [e for e in entries if e[2] < e[4] and e[3] < e[5]]  # y1 < y2 and x1 < x2
        for c in classes:
            boxes = [e[2:] for e in gts.get(key, []) if e[1] == c]
            taken = [False] * len(boxes)
            for e in (e for e in valid if e[1] == c):
                hit = False
                if boxes:
                    overlaps = [_iou(e[2:], b) for b in boxes]
                    best = overlaps.index(max(overlaps))
                    if overlaps[best] >= 0.5 and not taken[best]:
                        hit = taken[best] = True
                scores[c].append(e[0])
                tps[c].append(hit)
    per_class = {str(c): _average_precision(scores[c], tps[c], num_gt[c]) for c in sorted(classes) if num_gt[c]}
    return {"mAP": sum(per_class.values()) / len(per_class), "per_class": per_class}


# --- random official-format files --------------------------------------------------------------------------------------


def _box(rng: random.Random) -> list[float]:
    x1, y1 = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
    return [round(x1, 3), round(y1, 3), round(x1 + rng.uniform(0.05, 0.3), 3), round(y1 + rng.uniform(0.05, 0.3), 3)]


def _jitter(box: list[float], rng: random.Random) -> list[float]:
    return [round(min(1.0, max(0.0, v + rng.gauss(0, 0.03))), 3) for v in box]


def _write(path: Path, rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _label_map(path: Path) -> Path:
    path.write_text("".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in LABEL_MAP.items()))
    return path


def random_files(tmp_path: Path, seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    gt, det, frames = [], [], []
    for video in ("vidA", "vid_b"):
        for ts in rng.sample(range(902, 920), 4):
            frames.append((video, ts))
            people = [_box(rng) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.5:
                people.append(list(people[0]))  # a second person at identical coordinates
            for person, box in enumerate(people):
                actions = rng.sample(range(1, 7), rng.randint(1, 3))
                if person == len(people) - 1 and len(people) > 1 and people[-1] == people[0]:
                    actions = [rng.choice(actions), *actions]  # often sharing an action with the first
                for a in dict.fromkeys(actions):
                    gt.append([video, ts, *box, a, person])
                for a in range(1, 7):  # a pair per action for some people, none for others
                    if rng.random() < 0.6:
                        det.append([video, ts, *_jitter(box, rng), a, rng.random()])
            for _ in range(rng.randint(10, 90)):  # false positives; many frames exceed a cap of 50 pairs
                det.append([video, ts, *_box(rng), rng.randint(1, 6), rng.random() * 0.8])
            for _ in range(rng.randint(0, 2)):  # zero-area detections, scored high
                b = _box(rng)
                det.append([video, ts, b[0], b[1], b[0] if rng.random() < 0.5 else b[2], b[1], rng.randint(1, 6), 0.99])
    for ts in (930, 931):  # frames with detections only
        for _ in range(rng.randint(1, 5)):
            det.append(["vidA", ts, *_box(rng), rng.randint(1, 6), rng.random()])
    rng.shuffle(det)
    excluded = rng.sample(frames, 2) + [("vidA", 930)]
    return {
        "gt": _write(tmp_path / "gt.csv", gt),
        "det": _write(tmp_path / "det.csv", det),
        "ex": _write(tmp_path / "ex.csv", [[v, t] for v, t in excluded]),
        "map": _label_map(tmp_path / "map.pbtxt"),
    }


def _cli(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _args(files: dict[str, Path], cap: int | None, exclusions: bool = True) -> list[str]:
    args = ["--groundtruth", str(files["gt"]), "--detections", str(files["det"]), "--labelmap", str(files["map"])]
    args += ["--exclusions", str(files["ex"])] if exclusions else []
    return args + (["--max-detections-per-frame", str(cap)] if cap is not None else [])


def _assert_same(got: dict, want: dict) -> None:
    assert got["per_class"].keys() == want["per_class"].keys()
    for c, ap in want["per_class"].items():
        assert got["per_class"][c] == pytest.approx(ap, abs=1e-12), c
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)


# --- tests ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [None, 50, 3])
@pytest.mark.parametrize("seed", range(12))
def test_cli_matches_the_official_protocol_on_random_files(tmp_path, capsys, seed, cap):
    files = random_files(tmp_path, seed)
    code, out, _ = _cli(capsys, _args(files, cap))
    assert code == 0
    want = reference_map(files["gt"], files["det"], set(LABEL_MAP), files["ex"], cap or 0)
    _assert_same(json.loads(out.strip().splitlines()[-1]), want)


def test_cli_without_exclusions_matches_the_reference(tmp_path, capsys):
    files = random_files(tmp_path, 99)
    code, out, _ = _cli(capsys, _args(files, None, exclusions=False))
    assert code == 0
    want = reference_map(files["gt"], files["det"], set(LABEL_MAP), None, 0)
    _assert_same(json.loads(out.strip().splitlines()[-1]), want)


@pytest.mark.parametrize("cap", [None, 50])
def test_cli_as_a_module_in_a_subprocess(tmp_path, cap):
    files = random_files(tmp_path, 0)  # a file where the cap of 50 changes the result
    done = subprocess.run(
        [sys.executable, "-m", "tubemask.eval.ava", *_args(files, cap)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("AP ") for line in lines[:-1])  # per-class AP lines before the JSON
    want = reference_map(files["gt"], files["det"], set(LABEL_MAP), files["ex"], cap or 0)
    _assert_same(json.loads(lines[-1]), want)


def test_ground_truth_as_detections_scores_one(tmp_path, capsys):
    rng = random.Random(3)
    rows = [
        ["v", 902 + f, *_box(rng), a, p] for f in range(4) for p in range(3) for a in rng.sample([1, 2, 3, 5, 6], 2)
    ]
    gt = _write(tmp_path / "gt.csv", rows)
    det = _write(tmp_path / "det.csv", [[*r[:7], 1.0] for r in rows])
    code, out, _ = _cli(
        capsys,
        ["--groundtruth", str(gt), "--detections", str(det), "--labelmap", str(_label_map(tmp_path / "m.pbtxt"))],
    )
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mAP"] == 1.0
    assert set(result["per_class"]) <= {"1", "2", "3", "5"} and all(ap == 1.0 for ap in result["per_class"].values())


def _one_frame(tmp_path: Path, gt_rows: list[list], det_rows: list[list]) -> list[str]:
    gt = _write(tmp_path / "gt.csv", [["v", 902, *r] for r in gt_rows])
    det = _write(tmp_path / "det.csv", [["v", 902, *r] for r in det_rows])
    return ["--groundtruth", str(gt), "--detections", str(det), "--labelmap", str(_label_map(tmp_path / "m.pbtxt"))]


A = [0.1, 0.1, 0.4, 0.5]
B = [0.5, 0.5, 0.9, 0.9]


def test_people_with_identical_coordinates_are_two_instances(tmp_path, capsys):
    # two people at A doing action 1 are two ground-truth instances. Both detections at A pick the first person (the
    # highest IoU, first on ties; no fallback to the second), so the second is a false positive: recall stops at 1/2.
    # Merged into one box (as read_ava_boxes does) the same detections would score AP 1.0.
    args = _one_frame(tmp_path, [[*A, 1, 0], [*A, 1, 1]], [[*A, 1, 0.9], [*A, 1, 0.8]])
    code, out, _ = _cli(capsys, args)
    assert code == 0 and json.loads(out.splitlines()[-1]) == {"mAP": 0.5, "per_class": {"1": 0.5}}
    # one detection at A finds one of the two people
    args = _one_frame(tmp_path, [[*A, 1, 0], [*A, 1, 1]], [[*A, 1, 0.9]])
    code, out, _ = _cli(capsys, args)
    assert code == 0 and json.loads(out.splitlines()[-1])["mAP"] == 0.5


def test_only_listed_pairs_are_detections(tmp_path, capsys):
    # A does 1 and 2; only (A, 1) is reported: class 2 has AP 0, and B's unlisted pairs cost nothing
    args = _one_frame(tmp_path, [[*A, 1, 0], [*A, 2, 0], [*B, 3, 1]], [[*A, 1, 0.9], [*B, 3, 0.2]])
    code, out, _ = _cli(capsys, args)
    assert code == 0
    assert json.loads(out.splitlines()[-1]) == {"mAP": 2 / 3, "per_class": {"1": 1.0, "2": 0.0, "3": 1.0}}


def test_zero_area_detections_are_dropped(tmp_path, capsys):
    zero_width = [A[0], A[1], A[0], A[3]]
    args = _one_frame(tmp_path, [[*A, 1, 0]], [[*zero_width, 1, 0.99], [*A, 1, 0.5]])
    code, out, _ = _cli(capsys, args)
    assert code == 0 and json.loads(out.splitlines()[-1])["mAP"] == 1.0


def test_malformed_row_names_file_and_line(tmp_path, capsys):
    files = random_files(tmp_path, 1)
    lines = files["det"].read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",high"
    files["det"].write_text("\n".join(lines) + "\n")
    code, out, err = _cli(capsys, _args(files, None))
    assert code == 2 and out == ""
    assert f"{files['det']}:3:" in err and "score 'high'" in err

    files["gt"].write_text("v,902,0.1,0.1,0.4,0.5,1,0\nv,902,0.1,0.1,0.4,1\n")
    code, _, err = _cli(capsys, _args(files, None))
    assert code == 2 and f"{files['gt']}:2:" in err and "expected 8 fields" in err


def test_missing_exclusions_file_is_an_error(tmp_path, capsys):
    files = random_files(tmp_path, 2)
    files["ex"] = tmp_path / "nope.csv"
    code, out, err = _cli(capsys, _args(files, None))
    assert code == 2 and out == "" and "nope.csv" in err and "does not exist" in err


def test_reference_differs_from_merging_reader(tmp_path):
    """The reason the CLI does not use read_ava_boxes: it merges two people at the same coordinates."""
    from tubemask.data import read_ava_boxes

    gt = _write(tmp_path / "gt.csv", [["v", 902, *A, 1, 0], ["v", 902, *A, 1, 1]])
    assert read_ava_boxes(gt, kind="ground_truth")[("v", 902)].boxes.shape[0] == 1
    assert math.isclose(reference_map(gt, gt, {1}, None, 0)["mAP"], 0.5)  # two instances, one matchable


# --- the results file a detector writes -------------------------------------------------------------------------------


def _score_matrices(seed: int) -> tuple[dict, dict]:
    """Per-frame float32 scores of 6 classes for jittered ground-truth boxes plus false positives, with near-ties."""
    import torch

    g = torch.Generator().manual_seed(seed)
    detections, truth = {}, {}
    for f in range(12):
        people = torch.rand(3, 2, generator=g) * 0.6
        boxes = torch.cat([people, people + 0.1 + torch.rand(3, 2, generator=g) * 0.3], dim=1)
        labels = torch.rand(3, 6, generator=g) < 0.4
        found = torch.cat([(boxes + torch.randn(3, 4, generator=g) * 0.02).clamp(0, 1), torch.rand(2, 4) * 0.4])
        found[:, 2:] = torch.maximum(found[:, 2:], found[:, :2] + 0.01)
        scores = torch.rand(5, 6, generator=g)
        scores[1] = scores[0] + 3e-7  # float32 neighbours in each class: 6 digits would tie them, file order first
        detections[("vid", 902 + f)] = (found.float(), scores.float())
        truth[("vid", 902 + f)] = (boxes.float(), labels)
    return detections, truth


@pytest.mark.parametrize("seed", range(3))
def test_written_results_read_back_and_score_as_the_matrices(tmp_path, seed):
    from tubemask.eval.ava import frame_average_precision
    from tubemask.eval.ava_files import (
        GroundTruthBox,
        evaluate_box_lists,
        read_official_results,
        reported_actions,
        write_official_results,
    )

    detections, truth = _score_matrices(seed)
    classes = [1, 2, 3, 5]
    rows = reported_actions(detections, classes)
    assert sum(map(len, rows.values())) == 12 * 5 * len(classes)  # one row per box and evaluated action
    first = rows[("vid", 902)][0]
    assert first.action_id == 1 and first.score == pytest.approx(float(detections[("vid", 902)][1][0, 0]), abs=1e-8)
    path = tmp_path / "detections.csv"
    assert write_official_results(path, rows) == 12 * 5 * len(classes)
    assert path.read_text().startswith("vid,0902,")
    assert read_official_results(path) == rows  # every value reads back as the same float
    gt_rows = {
        key: [
            GroundTruthBox(tuple(b), int(c) + 1)
            for b, ls in zip(boxes.tolist(), labels, strict=True)
            for c in ls.nonzero()
        ]
        for key, (boxes, labels) in truth.items()
    }
    for cap in (None, 7):
        listed = evaluate_box_lists(rows, gt_rows, class_ids=classes, max_detections_per_frame=cap)
        matrices = frame_average_precision(detections, truth, class_ids=classes, max_detections_per_frame=cap)
        assert listed.mean_ap == pytest.approx(matrices.mean_ap, abs=1e-12), cap  # the written scores keep the ranking


def test_reported_actions_names_a_bad_frame():
    import torch

    from tubemask.eval.ava_files import reported_actions

    with pytest.raises(ValueError, match=r"class ids \[7\] are outside 1..6 \(frame \('v', 902\)\)"):
        reported_actions({("v", 902): (torch.zeros(1, 4), torch.zeros(1, 6))}, [1, 7])
    with pytest.raises(ValueError, match=r"frame \('v', 902\) has boxes \(1, 3\)"):
        reported_actions({("v", 902): (torch.zeros(1, 3), torch.zeros(1, 6))}, [1])


def test_evaluate_official_and_its_files_give_the_cli_figures(tmp_path, capsys):
    import torch

    from tubemask.eval.ava_protocol import evaluate_official, write_test_outputs

    detections, truth = _score_matrices(7)
    g = torch.Generator().manual_seed(1)
    for key, (boxes, scores) in detections.items():  # 10 more boxes: 15 x 4 evaluated classes = 60 pairs per frame
        extra = torch.rand(10, 2, generator=g) * 0.5
        more = torch.cat([extra, extra + 0.2 + torch.rand(10, 2, generator=g) * 0.3], dim=1)
        detections[key] = (torch.cat([boxes, more]), torch.cat([scores, torch.rand(10, 6, generator=g)]))
    gt = [[v, t, *box, int(c) + 1, p] for (v, t), (boxes, labels) in truth.items() for p, (box, ls) in enumerate(zip(boxes.tolist(), labels, strict=True)) for c in ls.nonzero()]  # fmt: skip
    files = {"gt": _write(tmp_path / "gt.csv", gt), "map": _label_map(tmp_path / "map.pbtxt")}
    files["ex"] = _write(tmp_path / "ex.csv", [["vid", 903]])
    from tubemask.eval.ava_files import read_official_ground_truth

    result = evaluate_official(
        detections, read_official_ground_truth(files["gt"]), class_ids=sorted(LABEL_MAP), excluded={("vid", 903)}
    )
    assert result.map != result.map_top50  # the cap drops 10 of each frame's 60 pairs
    report = write_test_outputs(tmp_path, result, LABEL_MAP, step=3)
    files["det"] = tmp_path / "detections.csv"
    for cap, want in ((None, result.map), (50, result.map_top50)):
        code, out, _ = _cli(capsys, _args(files, cap))
        assert code == 0 and json.loads(out.strip().splitlines()[-1])["mAP"] == want
    saved = json.loads((tmp_path / "test_results.json").read_text())
    assert saved == report and saved["map"] == result.map and saved["map_top50"] == result.map_top50
    assert saved["detections_csv"] == 12 * 15 * 4 and "paper's table" in saved["protocol"]["map"] and saved["step"] == 3
