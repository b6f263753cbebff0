"""Synthetic motion dataset: deterministic, idempotent, UCF101 layout, classes differ by motion."""

import pytest
import torch

from tubemask.data import MOTION_CLASSES, make_synthetic_ucf101, render_motion_clip


def test_render_deterministic_and_moving():
    for label in range(len(MOTION_CLASSES)):
        clip = render_motion_clip(label, num_frames=12, size=(32, 40), seed=3)
        assert clip.shape == (12, 3, 32, 40) and clip.dtype == torch.uint8
        assert torch.equal(clip, render_motion_clip(label, num_frames=12, size=(32, 40), seed=3))
        assert (clip[-1].float() - clip[0].float()).abs().mean() > 1.0, MOTION_CLASSES[label]


def test_direction_of_motion():
    """The moving region's centroid goes the way the class says (frame difference to the static background)."""

    def centroid_shift(label):
        clip = render_motion_clip(label, num_frames=16, size=(48, 48), seed=0).float()
        background = clip.median(dim=0).values
        xs = torch.arange(48.0)
        moving = (clip - background).abs().sum(1)  # [t h w]
        cx = (moving.sum(1) * xs).sum(1) / moving.sum((1, 2))
        cy = (moving.sum(2) * xs).sum(1) / moving.sum((1, 2))
        return float(cx[-1] - cx[0]), float(cy[-1] - cy[0])

    assert centroid_shift(MOTION_CLASSES.index("MoveLeft"))[0] < -5
    assert centroid_shift(MOTION_CLASSES.index("MoveRight"))[0] > 5
    assert centroid_shift(MOTION_CLASSES.index("MoveUp"))[1] < -5
    assert centroid_shift(MOTION_CLASSES.index("MoveDown"))[1] > 5


def test_idempotent_and_guarded(tmp_path, synthetic_root):
    marker = synthetic_root / "synthetic.json"
    before = marker.stat().st_mtime_ns
    again = make_synthetic_ucf101(synthetic_root, num_classes=10, videos_per_class=3, num_frames=40, size=32)
    assert again == synthetic_root and marker.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="made with"):
        make_synthetic_ucf101(synthetic_root, num_classes=5, videos_per_class=3, num_frames=40, size=32)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        make_synthetic_ucf101(tmp_path / "other", num_classes=2, videos_per_class=1, size=16)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_ucf101(tmp_path / "x", num_classes=13)
    for bad, message in (
        (dict(videos_per_class=0), r"videos_per_class=0 must be >= 1"),
        (dict(num_frames=1), r"num_frames=1 >= 2"),
        (dict(size=15), r"size=15: sides must be even and >= 16"),
        (dict(size=(16, 18 + 1)), r"size=\(16, 19\)"),
    ):
        with pytest.raises(ValueError, match=message):
            make_synthetic_ucf101(tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=r"label=12; allowed 0..11"):
        render_motion_clip(12)
    with pytest.raises((ValueError, TypeError), match=r"'sky'"):  # the type checker names the allowed values
        render_motion_clip(0, background="sky")


def test_writes_into_an_empty_directory_made_beforehand(tmp_path):
    pytest.importorskip("torchcodec.encoders", reason="writing the videos needs torchcodec + FFmpeg")
    root = tmp_path / "ucf"
    root.mkdir()  # e.g. a mount point or a folder a user created for it
    assert make_synthetic_ucf101(root, num_classes=2, videos_per_class=3, num_frames=4, size=16) == root
    assert sorted(p.name for p in (root / "UCF-101").iterdir()) == list(MOTION_CLASSES[:2])
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_split_files(synthetic_root):
    lists = synthetic_root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text().splitlines()[0] == "1 MoveLeft"
    for k in (1, 2, 3):
        train = (lists / f"trainlist0{k}.txt").read_text().split("\n")
        test = (lists / f"testlist0{k}.txt").read_text().split("\n")
        assert len([x for x in train if x]) == 20 and len([x for x in test if x]) == 10
