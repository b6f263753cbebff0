"""AVA: the annotation readers, box transforms (property-tested), the keyframe dataset on a synthetic AVA, collate."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from tubemask.data import (
    AnnotationError,
    AVADataset,
    AVAFrame,
    DecodeError,
    FailureLog,
    VideoReader,
    collate_ava,
    make_synthetic_ava,
    read_ava_boxes,
    read_ava_exclusions,
    read_ava_label_map,
)
from tubemask.data.ava_augment import jitter_boxes
from tubemask.data.ava_dataset import KeyframeOutsideVideo
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD


def need_torchcodec() -> None:
    """Skip when torchcodec (with FFmpeg) cannot encode and decode here (e.g. the GPU machine's stack)."""
    pytest.importorskip("torchcodec.encoders", reason="encoding and decoding video needs torchcodec + FFmpeg")
    pytest.importorskip("torchcodec.decoders", reason="encoding and decoding video needs torchcodec + FFmpeg")


# --- readers -------------------------------------------------------------------------------------------------------


def write(tmp_path, text, name="boxes.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ground_truth_round_trip_and_merge(tmp_path):
    rows = [
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1",
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,9,1",  # same person, second action: merged
        "-5KQ66BBWC4,0902,0.332,0.194,0.481,0.891,12,0",  # second box of the frame
        "-5KQ66BBWC4,0903,0.1,0.2,0.3,0.4,1,0",
        "zlVkeKC6Ha8,1798,0.0,0.0,1.0,1.0,80,3",
        "-5KQ66BBWC4,0902,0.332,0.194,0.481,0.891,14,0",  # later row of an earlier box: still merged
    ]
    frames = read_ava_boxes(write(tmp_path, "\n".join(rows) + "\n\n"))
    assert list(frames) == [("-5KQ66BBWC4", 902), ("-5KQ66BBWC4", 903), ("zlVkeKC6Ha8", 1798)]
    first = frames[("-5KQ66BBWC4", 902)]
    assert first.key == ("-5KQ66BBWC4", 902) and isinstance(first, AVAFrame)
    torch.testing.assert_close(first.boxes, torch.tensor([[0.077, 0.151, 0.283, 0.811], [0.332, 0.194, 0.481, 0.891]]))
    assert first.labels.dtype == torch.bool and first.labels.shape == (2, 80)
    assert [torch.nonzero(row).flatten().add(1).tolist() for row in first.labels] == [[9, 80], [12, 14]]
    assert first.scores.tolist() == [1.0, 1.0]
    assert frames[("zlVkeKC6Ha8", 1798)].labels.shape == (1, 80)
    narrow = read_ava_boxes(write(tmp_path, "v,1,0,0,1,1,3,0\n", "narrow.csv"), num_classes=3)
    assert narrow[("v", 1)].labels.tolist() == [[False, False, True]]


def test_detections_formats_and_min_score(tmp_path):
    rows = [
        "vid,0902,0.1,0.1,0.5,0.9,,0.95",  # SlowFast's person boxes: empty action
        "vid,0902,0.5,0.1,0.9,0.9,-1,0.5",
        "vid,0903,0.2,0.2,0.4,0.4,0.85",  # 7 fields
        "vid,0904,0.2,0.2,0.4,0.4,,0.3",  # every box of this frame is below min_score
        "vid,0905,0.2,0.2,0.4,0.4,7,0.9",  # a labelled prediction
        "vid,0905,0.2,0.2,0.4,0.4,8,0.95",  # same box: labels OR-ed, highest score kept
    ]
    path = write(tmp_path, "\n".join(rows))
    everything = read_ava_boxes(path)  # auto: detections
    assert same_frames(everything, read_ava_boxes(path, kind="detections"))
    assert list(everything) == [("vid", 902), ("vid", 903), ("vid", 904), ("vid", 905)]
    torch.testing.assert_close(everything[("vid", 902)].scores, torch.tensor([0.95, 0.5]))
    assert not everything[("vid", 902)].labels.any()
    kept = read_ava_boxes(path, min_score=0.8)
    assert list(kept) == [("vid", 902), ("vid", 903), ("vid", 905)]
    assert kept[("vid", 902)].boxes.shape == (1, 4) and kept[("vid", 902)].scores.tolist() == [pytest.approx(0.95)]
    assert kept[("vid", 903)].scores.tolist() == [pytest.approx(0.85)]
    last = kept[("vid", 905)]
    assert last.scores.tolist() == [pytest.approx(0.95)] and torch.nonzero(last.labels[0]).flatten().tolist() == [6, 7]
    # ground truth is never filtered by score
    gt = write(tmp_path, "vid,0902,0.1,0.1,0.5,0.9,3,0\n", "gt.csv")
    assert read_ava_boxes(gt, min_score=0.99)[("vid", 902)].scores.tolist() == [1.0]


def same_frames(a, b):
    return list(a) == list(b) and all(
        torch.equal(a[k].boxes, b[k].boxes)
        and torch.equal(a[k].labels, b[k].labels)
        and torch.equal(a[k].scores, b[k].scores)
        for k in a
    )


GOOD = "vid,0902,0.1,0.2,0.3,0.4,5,0"
MALFORMED = [
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,5", "expected 8 fields"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,5,0,extra", "expected 8 fields"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,,0.9", "pass kind='detections'"),
    ("ground_truth", "vid,noon,0.1,0.2,0.3,0.4,5,0", "timestamp 'noon' is not an integer"),
    ("ground_truth", "vid,0902,abc,0.2,0.3,0.4,5,0", "x1 'abc' is not a number"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,inf,5,0", "y2=inf is outside [0, 1]"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,nan,5,0", "y2=nan is outside [0, 1]"),
    ("ground_truth", "vid,0902,0.1,0.2,1.5,0.4,5,0", "x2=1.5 is outside [0, 1]"),
    ("ground_truth", "vid,0902,-0.2,0.2,0.3,0.4,5,0", "x1=-0.2 is outside [0, 1]"),
    ("ground_truth", "vid,0902,0.5,0.2,0.3,0.4,5,0", "x2 < x1"),
    ("ground_truth", "vid,0902,0.1,0.5,0.3,0.4,5,0", "y2 < y1"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,0,0", "action_id 0 is outside 1..80"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,81,0", "action_id 81 is outside 1..80"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,run,0", "action_id 'run' is not an integer"),
    ("ground_truth", "vid,0902,0.1,0.2,0.3,0.4,5,p1", "person_id 'p1' is not an integer"),
    ("ground_truth", ",0902,0.1,0.2,0.3,0.4,5,0", "empty video_id"),
    ("detections", "vid,0902,0.1,0.2,0.3", "expected 7 or 8 fields"),
    ("detections", "vid,0902,0.1,0.2,0.3,0.4,,high", "score 'high' is not a number"),
    ("detections", "vid,0902,0.1,0.2,0.3,0.4,99,0.9", "action_id 99 is outside 1..80"),
    ("auto", "vid,0902,0.1,0.2,0.3,0.4,,0.9", "pass kind='detections'"),  # a GT file (first row) mixing formats
]


@pytest.mark.parametrize("kind, row, message", MALFORMED, ids=[m for _, _, m in MALFORMED])
def test_malformed_rows_name_file_and_line(tmp_path, kind, row, message):
    path = write(tmp_path, f"{GOOD}\n\n{row}\n")  # a blank line in between: line numbers count it
    with pytest.raises(AnnotationError) as error:
        read_ava_boxes(path, kind=kind)
    assert str(error.value).startswith(f"{path}:3: ") and message in str(error.value)


def test_boxes_missing_file_and_bad_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_ava_boxes(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="kind="):
        read_ava_boxes(write(tmp_path, GOOD), kind="gt")


def test_label_map(tmp_path):
    text = """# AVA v2.2, ActivityNet 2019 subset
item {
  name: "bend/bow (at the waist)"
  id: 1
  label_type: PERSON_MOVEMENT
}
item { name: "crawl" label_id: 3 }
item {
  label_type: OBJECT_MANIPULATION
  label_id: 80
  name: "watch (a person)"
}
"""
    assert read_ava_label_map(write(tmp_path, text, "map.pbtxt")) == {
        1: "bend/bow (at the waist)",
        3: "crawl",
        80: "watch (a person)",
    }
    bad = write(tmp_path, 'item {\n  name: "a"\n  id: 1\n}\n\nitem {\n  name: "b"\n}\n', "bad.pbtxt")
    with pytest.raises(AnnotationError, match=r"bad.pbtxt:6: item needs"):
        read_ava_label_map(bad)
    twice = write(tmp_path, 'item { name: "a" id: 1 }\nitem { name: "b" id: 1 }\n', "twice.pbtxt")
    with pytest.raises(AnnotationError, match=r"twice.pbtxt:2: id 1 is listed twice"):
        read_ava_label_map(twice)
    with pytest.raises(AnnotationError, match="no 'item"):
        read_ava_label_map(write(tmp_path, "# nothing\n", "empty.pbtxt"))


def test_exclusions(tmp_path):
    path = write(tmp_path, "-5KQ66BBWC4,0902\nzlVkeKC6Ha8,1798\n-5KQ66BBWC4,0902\n", "excl.csv")
    assert read_ava_exclusions(path) == {("-5KQ66BBWC4", 902), ("zlVkeKC6Ha8", 1798)}
    with pytest.raises(AnnotationError, match=r"excl2.csv:2: expected 'video_id,timestamp'"):
        read_ava_exclusions(write(tmp_path, "a,0902\na,0903,x\n", "excl2.csv"))
    with pytest.raises(AnnotationError, match=r"excl3.csv:1: timestamp '9o2' is not an integer"):
        read_ava_exclusions(write(tmp_path, "a,9o2\n", "excl3.csv"))


# --- box transforms (properties) -----------------------------------------------------------------------------------


@st.composite
def normalised_boxes(draw, max_boxes=5):
    r = draw(st.integers(0, max_boxes))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    rows = []
    for _ in range(r):
        x, y = sorted(draw(st.tuples(unit, unit))), sorted(draw(st.tuples(unit, unit)))
        rows.append([x[0], y[0], x[1], y[1]])
    return torch.tensor(rows, dtype=torch.float32).view(r, 4)


def assert_ordered_inside(boxes, width, height):
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
    assert bool((boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all())
    assert bool((boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())


@settings(max_examples=60)
@given(boxes=normalised_boxes(), amount=st.floats(0.0, 2.0), seed=st.integers(0, 2**31))
def test_jitter_boxes_stay_normalised_and_ordered(boxes, amount, seed):
    out = jitter_boxes(boxes, amount, torch.Generator().manual_seed(seed))
    assert out.shape == boxes.shape
    assert_ordered_inside(out, 1.0, 1.0)
    if amount == 0:
        torch.testing.assert_close(out, boxes)


@settings(max_examples=60)
@given(
    boxes=normalised_boxes(),
    size=st.tuples(st.integers(16, 90), st.integers(16, 90)),
    train=st.booleans(),
    crop=st.sampled_from([None, 16, 32]),
    low=st.integers(32, 48),
    extra=st.integers(0, 20),
    multiple=st.sampled_from([8, 16]),
    seed=st.integers(0, 2**31),
)
def test_clip_geometry_keeps_boxes_inside_and_ordered(boxes, size, train, crop, low, extra, multiple, seed):
    frame = AVAFrame("v", 901, boxes, torch.zeros(len(boxes), 3, dtype=torch.bool), torch.ones(len(boxes)))
    dataset = AVADataset(
        [frame], "unused", train=train, short_side=low, scale_jitter=(low, low + extra), crop_size=crop,
        size_multiple=multiple if crop is None else 16, flip=0.5,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    geometry = dataset._geometry(*size, generator)
    out_h, out_w = geometry.out
    assert out_h % dataset.size_multiple == 0 and out_w % dataset.size_multiple == 0
    if train and crop is not None:
        assert (out_h, out_w) == (crop, crop)
    frames = geometry.frames(torch.zeros(1, 3, *size, dtype=torch.uint8))
    assert tuple(frames.shape[-2:]) == (out_h, out_w)
    pixels = geometry.boxes(jitter_boxes(boxes, 0.3, generator))
    assert_ordered_inside(pixels, out_w, out_h)
    # the flip mirrors the boxes of the unflipped geometry, and flipping twice is the identity
    mirror = dataclasses.replace(geometry, flip=not geometry.flip).boxes(boxes)
    expected = torch.stack([out_w - mirror[:, 2], mirror[:, 1], out_w - mirror[:, 0], mirror[:, 3]], dim=1)
    torch.testing.assert_close(geometry.boxes(boxes), expected)


def test_dataset_argument_checks():
    frame = AVAFrame("v", 901, torch.zeros(0, 4), torch.zeros(0, 80, dtype=torch.bool), torch.zeros(0))
    with pytest.raises(ValueError, match="at least one keyframe"):
        AVADataset([], "x", train=True)
    with pytest.raises(ValueError, match="crop_size=200 must be a multiple"):
        AVADataset([frame], "x", train=True, crop_size=200)
    with pytest.raises(ValueError, match="crop_size=336 must be a multiple of size_multiple=16 and at most"):
        AVADataset([frame], "x", train=True, crop_size=336)
    with pytest.raises(ValueError, match="expected"):
        AVAFrame("v", 1, torch.zeros(2, 4), torch.zeros(3, 80, dtype=torch.bool), torch.zeros(2))


# --- dataset on real files -----------------------------------------------------------------------------------------

SMALL = dict(num_frames=4, frame_stride=2, short_side=32, scale_jitter=(32, 48), crop_size=32, size_multiple=16)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    need_torchcodec()
    root = tmp_path_factory.mktemp("ava") / "synthetic_ava"
    return make_synthetic_ava(root, num_videos=3, seconds=4, fps=8, size=(48, 64), seed=1)


@pytest.fixture(scope="module")
def train_frames(synthetic):
    return read_ava_boxes(synthetic.train_csv, kind="ground_truth", num_classes=4)


def test_synthetic_files_and_labels(synthetic, tmp_path_factory):
    assert read_ava_label_map(synthetic.label_map) == dict(enumerate(synthetic.class_names, start=1))
    train = read_ava_boxes(synthetic.train_csv, num_classes=4)
    val = read_ava_boxes(synthetic.val_csv, num_classes=4)
    detections = read_ava_boxes(synthetic.val_detections_csv, num_classes=4)
    assert {k[1] for k in train} == {901, 902, 903} and not {k[0] for k in train} & {k[0] for k in val}
    assert set(detections) == set(val) and read_ava_exclusions(synthetic.exclusions) <= set(val)
    scores = torch.cat([f.scores for f in detections.values()])
    assert bool((scores < 0.8).any()) and bool((scores >= 0.8).all() == False)  # noqa: E712  false positives
    assert sum(len(f.boxes) for f in read_ava_boxes(synthetic.val_detections_csv, min_score=0.8).values()) > sum(
        len(f.boxes) for f in val.values()
    )  # high-scoring false positives too
    labels = torch.cat([f.labels for f in train.values()])
    assert bool((labels.sum(1) == 2).any())  # a moving and flickering actor
    # the boxes move as the labels say: follow person 0 of each training video across its keyframes
    for video in {k[0] for k in train}:
        keys = sorted(k for k in train if k[0] == video)
        x = [float(train[k].boxes[0, 0]) for k in keys]
        motion = int(torch.nonzero(train[keys[0]].labels[0])[0]) + 1
        steps = [b - a for a, b in zip(x, x[1:], strict=False)]
        assert all({1: s < 0, 2: s > 0, 3: s == 0}[motion] for s in steps), (video, motion, x)
    # idempotent, and a root holding another dataset is refused
    again = make_synthetic_ava(synthetic.root, num_videos=3, seconds=4, fps=8, size=(48, 64), seed=1)
    assert again == synthetic
    with pytest.raises(FileExistsError):
        make_synthetic_ava(synthetic.root, num_videos=3, seconds=4, fps=8, size=(48, 64), seed=2)


def assert_valid(sample, *, multiple=16):
    c, t, h, w = sample.clip.shape
    assert c == 3 and h % multiple == 0 and w % multiple == 0
    assert sample.labels.dtype == torch.float32 and len(sample.labels) == len(sample.boxes) == len(sample.scores)
    assert_ordered_inside(sample.boxes, w, h)


def test_train_and_test_samples(synthetic, train_frames):
    train = AVADataset(train_frames, synthetic.video_root, train=True, box_jitter=0.1, **SMALL)
    sample = train[0]
    assert sample.clip.shape == (3, 4, 32, 32) and sample.key == next(iter(train_frames))
    for i in range(len(train)):
        sample = train[i]
        assert_valid(sample)
        frame = train_frames[sample.key]
        assert len(sample.boxes) == len(frame.boxes)  # one row per annotated box, even one the crop cut away
        assert torch.equal(sample.labels, frame.labels.float()) and torch.equal(sample.norm_boxes, frame.boxes)
    test_frames = read_ava_boxes(synthetic.val_detections_csv, num_classes=4, min_score=0.8)
    test = AVADataset(test_frames, synthetic.video_root, train=False, **SMALL)
    sample = test[0]
    assert sample.clip.shape == (3, 4, 32, 48)  # 48 x 64 -> short side 32, long 42.7 -> 48
    assert_valid(sample)
    frame = test_frames[sample.key]
    torch.testing.assert_close(sample.norm_boxes, frame.boxes)
    torch.testing.assert_close(sample.boxes, frame.boxes * torch.tensor([48.0, 32.0, 48.0, 32.0]))
    torch.testing.assert_close(sample.scores, frame.scores)
    assert not train.failures.counts and not test.failures.counts


def test_reproducible_and_epoch_keys(synthetic, train_frames):
    make = lambda **kw: AVADataset(train_frames, synthetic.video_root, train=True, box_jitter=0.2, **SMALL, **kw)  # noqa: E731
    a, b = make(), make()
    for x, y in ((a[2], b[2]), (a[2], a[2])):
        assert torch.equal(x.clip, y.clip) and torch.equal(x.boxes, y.boxes) and x.key == y.key
    b.set_epoch(3)
    keyed = a[(3, 2)]
    assert torch.equal(keyed.boxes, b[2].boxes) and torch.equal(keyed.clip, b[2].clip)
    draws = {tuple(make(seed=s)[2].boxes.flatten().tolist()) for s in range(4)}
    assert len(draws) > 1


def test_flip_mirrors_clip_and_boxes(synthetic, train_frames):
    kwargs = dict(train=True, box_jitter=0.2, **SMALL)
    plain = AVADataset(train_frames, synthetic.video_root, flip=0.0, **kwargs)
    flipped = AVADataset(train_frames, synthetic.video_root, flip=1.0, **kwargs)
    for i in range(3):
        a, b = plain[i], flipped[i]
        w = a.clip.shape[-1]
        assert torch.equal(b.clip, a.clip.flip(-1))
        mirrored = torch.stack([w - a.boxes[:, 2], a.boxes[:, 1], w - a.boxes[:, 0], a.boxes[:, 3]], dim=1)
        torch.testing.assert_close(b.boxes, mirrored)
        assert torch.equal(b.labels, a.labels) and torch.equal(b.norm_boxes, a.norm_boxes)


def test_clip_is_centred_on_the_keyframe(tmp_path):
    need_torchcodec()
    from torchcodec.encoders import VideoEncoder

    num = 60
    frames = torch.stack([torch.full((3, 48, 64), 4 * i + 8, dtype=torch.uint8) for i in range(num)])
    VideoEncoder(frames, frame_rate=10).to_file(str(tmp_path / "count.mp4"), codec="mpeg4", extra_options={"qscale": 1})

    def frame(timestamp):
        return AVAFrame("count", timestamp, torch.tensor([[0.1, 0.1, 0.5, 0.5]]), torch.ones(1, 3, dtype=torch.bool), torch.ones(1))  # fmt: skip

    dataset = AVADataset(
        [frame(903), frame(900)], tmp_path, train=False, num_frames=4, frame_stride=2,
        short_side=48, size_multiple=16,
    )  # fmt: skip
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1), torch.tensor(IMAGENET_STD).view(3, 1)

    def indices(sample):
        pixels = (sample.clip.flatten(2).mean(-1) * std + mean) * 255  # [c t]
        return [round((float(v) - 8) / 4) for v in pixels.mean(0)]

    assert indices(dataset[0]) == [26, 28, 30, 32]  # keyframe 3 s x 10 fps = frame 30
    assert indices(dataset[1]) == [0, 0, 0, 2]  # clamped at the start
    assert dataset[0].clip.shape == (3, 4, 48, 64) and not dataset.failures.counts
    # a keyframe outside the file under the offset is an error, never a substitute (a wrong offset, not a bad file)
    message = (
        r"count.mp4: keyframe count,1000 is at 100 s of the file under time offset 900 .* outside the video's 6.00 s"
    )
    with pytest.raises(KeyframeOutsideVideo, match=message):
        AVADataset([frame(903), frame(1000)], tmp_path, train=False, short_side=48)[1]
    with pytest.raises(KeyframeOutsideVideo, match=r"at 903 s of the file under time offset 0 .*\(--time-offset 0\)"):
        AVADataset([frame(903)], tmp_path, train=False, short_side=48, time_offset=0)[0]  # a full-movie offset
    with pytest.raises(KeyframeOutsideVideo, match="at -1 s of the file"):
        AVADataset([frame(899)], tmp_path, train=False, short_side=48)[0]
    edge = AVADataset(
        [frame(905)], tmp_path, train=False, short_side=48, time_offset=899.1, num_frames=4, frame_stride=2
    )
    assert indices(edge[0]) == [55, 57, 59, 59]  # keyframe 5.9 s = frame 59, the last: inside, its window clamped


def test_bad_videos_are_skipped_and_counted(synthetic, train_frames, tmp_path):
    (tmp_path / "broken.mp4").write_text("not a video\n" * 20)
    good = list(train_frames.values())
    missing = dataclasses.replace(good[0], video_id="missing")
    broken = dataclasses.replace(good[0], video_id="broken")
    for link in synthetic.video_root.iterdir():
        (tmp_path / link.name).symlink_to(link)
    dataset = AVADataset([missing, broken, *good], tmp_path, train=True, **SMALL)
    for i in (0, 1):
        sample = dataset[i]
        assert sample.key not in (missing.key, broken.key)
        assert_valid(sample)
    assert dataset.failures.total >= 2
    reasons = dataset.failures.reasons
    assert "no video file with extension .mp4/.mkv/.webm/.avi" in reasons[str(tmp_path / "missing")]
    assert "FFmpeg cannot open it" in reasons[str(tmp_path / "broken.mp4")]
    with pytest.raises(DecodeError, match="no video file"):
        AVADataset([missing], tmp_path, train=True, strict=True, **SMALL)[0]
    with pytest.raises(RuntimeError, match="in a row failed"):
        AVADataset([missing], tmp_path, train=True, max_substitutions=3, **SMALL)[0]


def test_a_truncated_video_is_used_where_it_decodes_and_named_once(truncated_videos, tmp_path):
    # an XviD AVI of 75 frames at 25 fps (3 s) cut to a third of its bytes: about 13 frames (0.5 s) decode
    (tmp_path / "movie.avi").symlink_to(truncated_videos["avi"])
    path = str(tmp_path / "movie.avi")

    def frame(timestamp):
        return AVAFrame("movie", timestamp, torch.tensor([[0.1, 0.1, 0.5, 0.5]]), torch.ones(1, 3, dtype=torch.bool), torch.ones(1))  # fmt: skip

    inside, lost = frame(900), frame(902)  # at 0 s: decodes; at 2 s: inside the stated 3 s, in the lost part

    def make():
        return AVADataset([inside, lost, inside], tmp_path, train=False, num_frames=4, frame_stride=2, short_side=48)

    dataset = make()
    samples = [dataset[i] for i in range(len(dataset))]
    assert [s.key for s in samples] == [inside.key] * 3  # the lost keyframe is replaced by the one that decodes
    decodable = VideoReader(path).num_frames
    assert 10 <= decodable <= 30 and dataset.failures.truncated == {path: (75, decodable)}
    assert (
        dataset.failures.total >= 1
        and "lies in the part of the file that does not decode" in (dataset.failures.reasons[path])
    )  # the lost keyframe
    assert dataset.failures.counts[path] == dataset.failures.total + 1  # failed loads + one truncation
    assert f"  {path}: truncated: header says 75 frames, {decodable} decode" in dataset.failures.summary()
    # through a DataLoader worker and the run's journal: named once, as the recipes report it
    worker_set = make()
    worker_set.failures.journal = str(FailureLog.journal_file(tmp_path / "run", rank=0))
    (tmp_path / "run").mkdir()
    loader = DataLoader(worker_set, batch_size=1, num_workers=1, collate_fn=collate_ava)
    assert [key for batch in loader for key in batch.keys] == [inside.key] * 3
    journal = Path(worker_set.failures.journal).read_text()
    assert journal.count('"event": "truncated"') == 1
    said: list[str] = []
    bad = FailureLog.report_run(tmp_path / "run", said.append)
    assert bad.truncated == {path: (75, decodable)} and len(bad.counts) == 1
    assert len(said) == 1 and f"  {path}: truncated: header says 75 frames, {decodable} decode" in said[0]


def test_collate_ava(synthetic, train_frames):
    dataset = AVADataset(train_frames, synthetic.video_root, train=True, **SMALL)
    samples = [dataset[i] for i in range(len(dataset))]
    batch = collate_ava(samples)
    counts = [len(s.boxes) for s in samples]
    assert batch.clips.shape == (len(samples), 3, 4, 32, 32)
    assert batch.rois.shape == (sum(counts), 5) and batch.labels.shape == (sum(counts), 4)
    owners = torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts))
    assert torch.equal(batch.rois[:, 0].long(), owners)
    torch.testing.assert_close(batch.rois[:, 1:], torch.cat([s.boxes for s in samples]))
    assert batch.keys == [s.key for s in samples]
    assert batch.roi_keys() == [s.key for s in samples for _ in s.boxes]
    moved = batch.to("cpu")
    assert torch.equal(moved.clips, batch.clips) and moved.keys == batch.keys
    # per-frame results rebuilt from the rois' owners
    for i, sample in enumerate(samples):
        torch.testing.assert_close(batch.norm_boxes[batch.rois[:, 0] == i], sample.norm_boxes)
    test = AVADataset(train_frames, synthetic.video_root, train=False, **SMALL)
    with pytest.raises(ValueError, match="different shapes"):
        collate_ava([samples[0], test[0]])
    assert math.isclose(float(batch.scores.sum()), sum(counts))


# --- VideoMAE's augmentations (tubemask.data.ava_augment) ----------------------------------------------------------


@settings(max_examples=60)
@given(boxes=normalised_boxes(), seed=st.integers(0, 2**31))
def test_official_box_jitter_moves_each_edge_within_its_reach(boxes, seed):
    from tubemask.data.ava_augment import official_box_jitter

    out = official_box_jitter(boxes, torch.Generator().manual_seed(seed))
    assert_ordered_inside(out, 1.0, 1.0)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    eps = 1e-6
    # x edges: up to 20% of the width outwards, 10% inwards; y edges: 10% / 5% of the height (then clipped, ordered)
    assert bool((out[:, 0] >= (boxes[:, 0] - 0.2 * w).clamp(min=0) - eps).all())
    assert bool((out[:, 0] <= boxes[:, 0] + 0.1 * w + eps).all())
    assert bool((out[:, 1] >= (boxes[:, 1] - 0.1 * h).clamp(min=0) - eps).all())
    assert bool((out[:, 1] <= boxes[:, 1] + 0.05 * h + eps).all())
    assert bool((out[:, 2] <= (boxes[:, 2] + 0.2 * w).clamp(max=1) + eps).all())
    assert bool((out[:, 2] >= boxes[:, 2] - 0.1 * w - eps).all())
    assert bool((out[:, 3] <= (boxes[:, 3] + 0.1 * h).clamp(max=1) + eps).all())
    assert bool((out[:, 3] >= boxes[:, 3] - 0.05 * h - eps).all())


def test_official_box_jitter_reaches_mostly_outwards():
    from tubemask.data.ava_augment import official_box_jitter

    boxes = torch.tensor([[0.4, 0.4, 0.6, 0.6]]).expand(4000, 4).contiguous()
    out = official_box_jitter(boxes, torch.Generator().manual_seed(0))
    shift = (out - boxes) / 0.2  # in units of the box's size
    mean = shift.mean(0)  # x1: U(-0.2, 0.1) -> -0.05; y1: U(-0.1, 0.05) -> -0.025; x2, y2 mirrored
    torch.testing.assert_close(mean, torch.tensor([-0.05, -0.025, 0.05, 0.025]), atol=4e-3, rtol=0)
    torch.testing.assert_close(shift.amin(0), torch.tensor([-0.2, -0.1, -0.1, -0.05]), atol=2e-3, rtol=0)
    torch.testing.assert_close(shift.amax(0), torch.tensor([0.1, 0.05, 0.2, 0.1]), atol=2e-3, rtol=0)


def test_extend_boxes_widens_about_the_centre_and_clips():
    from tubemask.data.ava_augment import OFFICIAL_TEST_EXTENSION, extend_boxes

    boxes = torch.tensor([[0.2, 0.2, 0.6, 0.8], [0.0, 0.0, 1.0, 0.5]])
    out = extend_boxes(boxes, OFFICIAL_TEST_EXTENSION)
    torch.testing.assert_close(out, torch.tensor([[0.18, 0.185, 0.62, 0.815], [0.0, 0.0, 1.0, 0.5125]]))
    torch.testing.assert_close(extend_boxes(boxes, (0.0, 0.0)), boxes)
    with pytest.raises(ValueError, match="must be >= 0"):
        extend_boxes(boxes, (-0.1, 0.0))


def test_hsv_jitter_shifts_hue_saturation_and_value_by_one_draw():
    import colorsys

    from tubemask.data.ava_augment import hsv_jitter

    frames = torch.randint(0, 256, (3, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(hsv_jitter(frames, torch.Generator(), hue_degrees=0.0, saturation=0.0, value=0.0), frames)
    for seed in range(4):
        out = hsv_jitter(frames, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)  # the three draws, as the function makes them
        dh, ds, dv = (int(torch.randint(2 * b + 1, (), generator=g)) - b for b in (10, 26, 26))
        for t, i, j in ((0, 0, 0), (1, 2, 3), (2, 4, 5)):
            r, gr, b = (frames[t, :, i, j].double() / 255).tolist()
            hue, sat, val = colorsys.rgb_to_hsv(r, gr, b)
            want = colorsys.hsv_to_rgb(
                (hue + dh / 180) % 1, min(max(sat + ds / 255, 0), 1), min(max(val + dv / 255, 0), 1)
            )
            got = (out[t, :, i, j].double() / 255).tolist()
            assert got == pytest.approx(want, abs=0.6 / 255), (seed, t, i, j)


def test_dataset_switches_colour_jitter_official_box_jitter_and_test_extension(synthetic, train_frames):
    plain = AVADataset(train_frames, synthetic.video_root, train=True, **SMALL)
    coloured = AVADataset(train_frames, synthetic.video_root, train=True, colour_jitter=True, **SMALL)
    official = AVADataset(train_frames, synthetic.video_root, train=True, official_box_jitter=True, **SMALL)
    a, b, c = plain[0], coloured[0], official[0]
    assert torch.equal(a.boxes, b.boxes) and not torch.equal(a.clip, b.clip)  # the same geometry, recoloured
    assert torch.equal(a.clip, c.clip) and not torch.equal(a.boxes, c.boxes)  # the same clip, other boxes
    test = dict(train=False, num_frames=4, frame_stride=2, short_side=32, size_multiple=16)
    narrow = AVADataset(train_frames, synthetic.video_root, **test)[0]
    wide = AVADataset(train_frames, synthetic.video_root, test_box_extension=(0.1, 0.05), **test)[0]
    assert torch.equal(narrow.norm_boxes, wide.norm_boxes)  # what is reported: the detector's boxes
    width = lambda boxes: boxes[:, 2] - boxes[:, 0]  # noqa: E731
    assert bool((width(wide.boxes) >= width(narrow.boxes)).all()) and not torch.equal(wide.boxes, narrow.boxes)


# --- person detections (tubemask.data.ava_person_boxes) --------------------------------------------------------------


def alphaction_files(frames, folder, size=(640, 360)):
    """AlphAction's person boxes for `frames` (as csv2COCO and its detector write them: pixel xywh rounded to 2
    decimals, image ids movie * 10000 + timestamp) and the COCO-style image map; returns their paths."""
    import json

    width, height = size
    movies = {video: n for n, video in enumerate(sorted({key[0] for key in frames}))}
    images = [
        {"id": movies[v] * 10000 + t, "movie": v, "timestamp": t, "width": width, "height": height}
        for v in movies
        for t in range(0, 2000)
        if (v, t) in frames
    ]
    boxes = [
        {
            "image_id": movies[frame.video_id] * 10000 + frame.timestamp,
            "category_id": 1,
            "bbox": [round(v, 2) for v in (x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height)],
            "score": float(score),
        }
        for frame in frames.values()
        for (x1, y1, x2, y2), score in zip(frame.boxes.tolist(), frame.scores.tolist(), strict=True)
    ]
    (folder / "map.json").write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    (folder / "boxes.json").write_text(json.dumps(boxes))
    return folder / "boxes.json", folder / "map.json"


def test_alphaction_json_reads_as_the_csv(synthetic, tmp_path):
    from tubemask.data.ava_person_boxes import read_person_detections

    csv_frames = read_person_detections(synthetic.val_detections_csv, min_score=0.5)
    boxes, image_map = alphaction_files(read_ava_boxes(synthetic.val_detections_csv, kind="detections"), tmp_path)
    json_frames = read_person_detections(boxes, image_map=image_map, min_score=0.5)
    assert sorted(json_frames) == sorted(csv_frames) and len(json_frames) == 3
    for key, frame in csv_frames.items():
        torch.testing.assert_close(json_frames[key].boxes, frame.boxes, atol=2e-5, rtol=0)  # 0.01 px of 640 x 360
        assert torch.equal(json_frames[key].scores, frame.scores) and not json_frames[key].labels.any()


def test_person_boxes_refuse_pickles_and_name_bad_entries(tmp_path):
    import json
    import pickle

    from tubemask.data.ava_person_boxes import read_alphaction_person_boxes, read_person_detections

    proposals = tmp_path / "proposals.pkl"
    proposals.write_bytes(pickle.dumps({"vid,0902": [[0.1, 0.1, 0.5, 0.5, 0.9]]}))
    with pytest.raises(ValueError, match=r"proposals.pkl: a pickle is not read .* convert it.* to the CSV"):
        read_person_detections(proposals)
    disguised = tmp_path / "boxes.json"
    disguised.write_bytes(proposals.read_bytes())  # a pickle under another name is refused too, never loaded
    with pytest.raises(ValueError, match="a pickle is not read"):
        read_person_detections(disguised, image_map=disguised)
    image_map = tmp_path / "map.json"
    image_map.write_text(
        json.dumps({"images": [{"id": 7, "movie": "vid", "timestamp": 902, "width": 100, "height": 50}]})
    )
    good = {"image_id": 7, "category_id": 1, "bbox": [10, 5, 20, 40], "score": 0.9}
    boxes = tmp_path / "person.json"
    boxes.write_text(json.dumps([good, dict(good, bbox=[50, 0, 0, 10]), dict(good, score=0.5)]))
    frames = read_alphaction_person_boxes(boxes, image_map, min_score=0.8)
    assert list(frames) == [("vid", 902)]  # the zero-width box and the low score dropped
    torch.testing.assert_close(frames[("vid", 902)].boxes, torch.tensor([[0.1, 0.1, 0.3, 0.9]]))
    with pytest.raises(ValueError, match="need their image map"):
        read_person_detections(boxes)
    for entry, message in (
        (dict(good, image_id=8), "entry 0: image_id 8 is not in the image map"),
        (dict(good, category_id=3), "entry 0: category_id 3 is not a person"),
        (dict(good, bbox=[1, 2, 3]), r"entry 0: bbox \[1, 2, 3\] is not \[x, y, w, h\]"),
        (dict(good, score="high"), "entry 0: score 'high' is not a finite number"),
    ):
        boxes.write_text(json.dumps([entry]))
        with pytest.raises(AnnotationError, match=message):
            read_alphaction_person_boxes(boxes, image_map)
    with pytest.raises(ValueError, match="must be a SlowFast .csv or an AlphAction .json"):
        read_person_detections(image_map.rename(tmp_path / "map.txt"))
