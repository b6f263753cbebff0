"""Synthetic motion dataset: deterministic, idempotent, UCF101 layout, classes differ by motion; backgrounds; the
settings-keyed cache, also under concurrent writers."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tubemask.data import VideoReader, cached_synthetic_ucf101, make_synthetic_ucf101, read_ucf101, synthetic
from tubemask.data.motion_clips import MOTION_CLASSES, render_motion_clip
from tubemask.data.synthetic import synthetic_ucf101_root


def need_torchcodec() -> None:
    pytest.importorskip("torchcodec.encoders", reason="writing the videos needs torchcodec + FFmpeg")


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


# ---- backgrounds --------------------------------------------------------------------------------------------------

NOT_FADING = [i for i, name in enumerate(MOTION_CLASSES) if not name.startswith("Fade")]


@settings(max_examples=25, deadline=None)
@given(
    label=st.sampled_from(NOT_FADING),
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(8, 40),
    w=st.integers(8, 40),
)
def test_backgrounds_render_what_they_say(label, seed, h, w):
    """The three backgrounds share the object (same random draws): where the object is (fully opaque outside the
    fades) the textured and flat renders agree, so every pixel where they differ is background: 0 on black, one
    colour on flat."""
    kwargs = dict(num_frames=6, size=(h, w), seed=seed)
    texture, flat, black = (render_motion_clip(label, background=b, **kwargs) for b in ("texture", "flat", "black"))
    background = (texture != flat).any(dim=1)  # [t h w]
    assert background.any()
    assert int(black.permute(1, 0, 2, 3)[:, background].max()) == 0
    colours = flat.permute(1, 0, 2, 3)[:, background]  # [3 pixels]
    assert torch.equal(colours, colours[:, :1].expand_as(colours))
    assert black.any()  # the object


def test_black_background_stays_black_through_the_codec(tmp_path):
    need_torchcodec()
    root = cached_synthetic_ucf101(
        tmp_path, num_classes=2, videos_per_class=3, num_frames=8, size=32, background="black"
    )
    video = next((root / "UCF-101" / "MoveLeft").iterdir())
    frames = VideoReader(video).get_frames(list(range(8)))
    assert frames.float().median() == 0  # the object covers well under half of each frame


# ---- the settings-keyed cache ---------------------------------------------------------------------------------------

SETTINGS = st.fixed_dictionaries(
    {
        "num_classes": st.integers(1, len(MOTION_CLASSES)),
        "videos_per_class": st.integers(1, 500),
        "num_frames": st.integers(2, 128),
        "size": st.one_of(
            st.integers(8, 64).map(lambda s: 2 * s), st.tuples(*[st.integers(8, 64).map(lambda s: 2 * s)] * 2)
        ),
        "fps": st.sampled_from([12.0, 25.0, 29.97, 30.0]),
        "seed": st.integers(0, 2**31 - 1),
        "background": st.sampled_from(["texture", "flat", "black"]),
    }
)


def _canonical(settings: dict) -> dict:
    size = settings["size"]
    return {**settings, "size": (size, size) if isinstance(size, int) else tuple(size)}


def test_cache_key_is_stable():
    """Pinned: a changed key would silently regenerate every cached dataset (and leave the old ones behind)."""
    assert synthetic_ucf101_root("c").as_posix() == "c/synthetic_ucf101-10x24-64f-64x64-texture-seed0-dde51d0097"
    black = synthetic_ucf101_root(Path("c"), videos_per_class=60, num_frames=32, size=(32, 32), background="black")
    assert black.name.startswith("synthetic_ucf101-10x60-32f-32x32-black-seed0-")
    assert synthetic_ucf101_root("c", size=64) == synthetic_ucf101_root("c", size=(64, 64))  # one dataset, one key
    assert synthetic_ucf101_root("c", fps=25) == synthetic_ucf101_root("c", fps=25.0)


@settings(max_examples=60, deadline=None)
@given(a=SETTINGS, b=SETTINGS)
def test_cache_key_differs_per_settings(a, b):
    same = _canonical(a) == _canonical(b)
    assert (synthetic_ucf101_root("cache", **a) == synthetic_ucf101_root("cache", **b)) == same


def test_cache_key_checks_settings():
    with pytest.raises(ValueError, match=r"background='sky'"):
        synthetic_ucf101_root("c", background="sky")
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_ucf101_root("c", num_classes=13)


def test_two_settings_coexist_in_one_cache(tmp_path):
    need_torchcodec()
    small = dict(num_classes=2, videos_per_class=3, num_frames=4, size=16)
    texture = cached_synthetic_ucf101(tmp_path, **small)
    black = cached_synthetic_ucf101(tmp_path, **small, background="black")
    more = cached_synthetic_ucf101(tmp_path, **{**small, "videos_per_class": 4})
    assert len({texture, black, more}) == 3 and {p.parent for p in (texture, black, more)} == {tmp_path}
    marker = texture / "synthetic.json"
    before = marker.stat().st_mtime_ns
    assert cached_synthetic_ucf101(tmp_path, **small) == texture and marker.stat().st_mtime_ns == before
    assert json.loads((black / "synthetic.json").read_text())["background"] == "black"
    assert len(list((more / "UCF-101" / "MoveLeft").iterdir())) == 4
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def _complete_dataset(root: Path, *, num_classes: int, videos_per_class: int) -> bool:
    videos = sorted((root / "UCF-101").glob("*/*.avi"))
    return (
        (root / "synthetic.json").is_file()
        and len(videos) == num_classes * videos_per_class
        and all(v.stat().st_size > 0 for v in videos)
        and len(read_ucf101(root, split=1, train=True)) + len(read_ucf101(root, split=1, train=False)) == len(videos)
    )


def test_a_writer_that_loses_the_race_returns_the_winners_dataset(tmp_path, monkeypatch):
    """Deterministic race: while the first writer is building its copy, a second writer with the same settings
    finishes and renames its copy into place; the first must return that dataset, not fail or leave debris."""
    need_torchcodec()
    settings_ = dict(num_classes=2, videos_per_class=3, num_frames=4, size=16, background="black")
    real = synthetic.render_motion_clip
    raced = []

    def render_and_let_another_writer_finish(*args, **kwargs):
        if not raced:
            raced.append(True)
            cached_synthetic_ucf101(tmp_path, **settings_)  # the other writer, start to finish
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_motion_clip", render_and_let_another_writer_finish)
    threads = torch.get_num_threads()
    root = cached_synthetic_ucf101(tmp_path, **settings_)
    assert raced and torch.get_num_threads() == threads
    assert _complete_dataset(root, num_classes=2, videos_per_class=3)
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


_WRITER = """
import sys, time
from pathlib import Path
from tubemask.data import cached_synthetic_ucf101
cache, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.005)
print(cached_synthetic_ucf101(cache, num_classes=3, videos_per_class=6, num_frames=6, size=16, background="black"))
"""


@pytest.mark.slow  # two fresh interpreters importing torch: ~20 s on the shared 2-core CPU
def test_two_processes_generating_the_same_settings_both_get_one_complete_dataset(tmp_path):
    need_torchcodec()
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(cache), str(tmp_path / f"ready{i}"), str(tmp_path / "go")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start writing together
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    roots = {Path(out.strip()) for out, _ in results}
    assert len(roots) == 1
    root = roots.pop()
    assert _complete_dataset(root, num_classes=3, videos_per_class=6)
    assert [p.name for p in cache.iterdir()] == [root.name]
