"""A synthetic action dataset in the UCF101 layout, whose classes differ only by motion.

[`make_synthetic_ucf101`][tubemask.data.synthetic.make_synthetic_ucf101] writes the clips of
[tubemask.data.motion_clips][] (one textured shape whose motion is the class) as real video files (mpeg4 in `.avi`,
as UCF101 ships) with torchcodec's encoder plus the `ucfTrainTestlist/` split files, so the UCF101 reader and the
whole decoding path run on it. Test groups: split `k` tests on groups `g` with `(g - 1) % 3 == k - 1`.
[`cached_synthetic_ucf101`][tubemask.data.synthetic.cached_synthetic_ucf101] keeps such datasets in a cache folder,
one subfolder per settings, so runs with different settings never collide.
[`write_dataset_once`][tubemask.data.synthetic.write_dataset_once] is the atomic, race-safe folder writer that the
synthetic AVA dataset uses too.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from tubemask.data.decoding import require_torchcodec
from tubemask.data.motion_clips import MOTION_CLASSES, Background, render_motion_clip

__all__ = ["cached_synthetic_ucf101", "make_synthetic_ucf101", "synthetic_ucf101_root", "write_dataset_once"]

_MARKER = "synthetic.json"
_CLIPS_PER_GROUP = 4


def _complete(root: Path, params: dict) -> bool:
    marker = root / _MARKER
    if not marker.is_file():
        return False
    found = json.loads(marker.read_text())
    if found != params:
        raise FileExistsError(
            f"{root} holds a synthetic dataset made with {found}, not {params}; pass another root or delete it"
        )
    return True


def write_dataset_once(root: Path, params: dict, build: Callable[[Path], None]) -> None:
    """Make a synthetic dataset at `root` unless it is already there, complete, with these `params`.

    `build(tmp)` writes the files into a fresh temporary sibling of `root`, on one torch thread (tiny tensors:
    threading only adds overhead; restored after); the marker with `params` is written last and the folder renamed
    into place, so an interrupted run leaves no half dataset. Two processes racing for `root` both build their own
    copy; the first rename wins and the other process, finding `root` complete with its `params`, drops its copy and
    returns: both end with the one complete dataset.

    Raises:
        FileExistsError: `root` holds something else (another dataset's marker, or files).
    """
    if _complete(root, params):
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory nor a complete synthetic dataset")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build(tmp)
        (tmp / _MARKER).write_text(json.dumps(params))
        try:
            if root.is_dir():
                root.rmdir()  # empty (checked above) unless another process has just renamed its copy here
            tmp.rename(root)
        except OSError:
            if not _complete(root, params):  # lost a race to another process? Then theirs is complete.
                raise
    finally:
        torch.set_num_threads(threads)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ucf101_params(
    *,
    num_classes: int,
    videos_per_class: int,
    num_frames: int,
    size: int | tuple[int, int],
    fps: float,
    seed: int,
    background: Background,
) -> dict:
    """The checked settings of a synthetic UCF101 dataset as the plain dict its marker stores (and its key hashes)."""
    if not 1 <= num_classes <= len(MOTION_CLASSES):
        raise ValueError(f"num_classes={num_classes}; allowed 1..{len(MOTION_CLASSES)}")
    if videos_per_class < 1 or num_frames < 2:
        raise ValueError(f"videos_per_class={videos_per_class} must be >= 1 and num_frames={num_frames} >= 2")
    h, w = (size, size) if isinstance(size, int) else size
    if h < 16 or w < 16 or h % 2 or w % 2:
        raise ValueError(f"size={size}: sides must be even and >= 16 (yuv420 video)")
    if background not in ("texture", "flat", "black"):
        raise ValueError(f"background={background!r}; allowed 'texture', 'flat', 'black'")
    return dict(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=[h, w],
        fps=float(fps),
        seed=seed,
        background=background,
    )


def make_synthetic_ucf101(
    root: str | os.PathLike,
    *,
    num_classes: int = 10,
    videos_per_class: int = 24,
    num_frames: int = 64,
    size: int | tuple[int, int] = 64,
    fps: float = 25.0,
    seed: int = 0,
    background: Background = "texture",
) -> Path:
    """Write (once) a motion-only action dataset in the official UCF101 layout and return `root`.

    Layout: `root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi` (mpeg4, up to 4 clips per group, at least 3 groups) and
    `root/ucfTrainTestlist/{classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt}`; read it with
    [`read_ucf101`][tubemask.data.annotations.read_ucf101]. The defaults (240 videos of 64 frames at 64 x 64) take
    a few seconds on two CPU cores and fit 16-frame clips at stride 4 and input size 64.

    Idempotent and atomic: a complete dataset (marked by `synthetic.json` with these parameters) is returned as is;
    otherwise everything is written into a temporary sibling directory that is renamed to `root` at the end, so an
    interrupted run never leaves a half-written dataset. Concurrent callers (e.g. several ranks) are safe.

    Args:
        root: Dataset directory to create (must not exist, be empty, or hold this same dataset).
        num_classes: Classes, at most `len(MOTION_CLASSES)` (12).
        videos_per_class: Videos per class.
        num_frames: Frames per video.
        size: Frame side or `(height, width)`.
        fps: Frame rate written into the files.
        seed: Dataset seed; the same arguments always produce the same frames.
        background: `"texture"`, `"flat"` or `"black"`, see
            [render_motion_clip][tubemask.data.motion_clips.render_motion_clip]. Black makes the pretext task
            informative at CPU scale: every non-zero pixel belongs to the moving object (docs/data_efficiency.md).

    Returns:
        `root` as a `Path`.

    Raises:
        ValueError: Arguments out of range.
        FileExistsError: `root` holds something else.
        MissingDecoderError: torchcodec or FFmpeg's libraries are missing (they write the videos).
    """
    params = _ucf101_params(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
        background=background,
    )
    h, w = params["size"]
    VideoEncoder = require_torchcodec("encoders").VideoEncoder  # lazy: tubemask.data imports without it
    root = Path(root)

    def build(tmp: Path) -> None:
        classes = MOTION_CLASSES[:num_classes]
        per_group = max(1, min(_CLIPS_PER_GROUP, videos_per_class // 3))  # at least 3 groups: every split has both
        lists = {name: [] for k in (1, 2, 3) for name in (f"trainlist0{k}.txt", f"testlist0{k}.txt")}
        for label, name in enumerate(classes):
            (tmp / "UCF-101" / name).mkdir(parents=True)
            for j in range(videos_per_class):
                group, clip = j // per_group + 1, j % per_group + 1
                relative = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
                frames = render_motion_clip(
                    label, num_frames=num_frames, size=(h, w), seed=seed * 100_003 + j, background=background
                )
                VideoEncoder(frames, frame_rate=fps).to_file(
                    str(tmp / "UCF-101" / relative), codec="mpeg4", extra_options={"qscale": 3}
                )
                for k in (1, 2, 3):
                    if (group - 1) % 3 == k - 1:
                        lists[f"testlist0{k}.txt"].append(relative)
                    else:
                        lists[f"trainlist0{k}.txt"].append(f"{relative} {label + 1}")
        (tmp / "ucfTrainTestlist").mkdir()
        classind = "".join(f"{i + 1} {name}\n" for i, name in enumerate(classes))
        (tmp / "ucfTrainTestlist" / "classInd.txt").write_text(classind)
        for file, lines in lists.items():
            (tmp / "ucfTrainTestlist" / file).write_text("".join(line + "\n" for line in lines))

    write_dataset_once(root, params, build)
    return root


def synthetic_ucf101_root(
    cache_dir: str | os.PathLike,
    *,
    num_classes: int = 10,
    videos_per_class: int = 24,
    num_frames: int = 64,
    size: int | tuple[int, int] = 64,
    fps: float = 25.0,
    seed: int = 0,
    background: Background = "texture",
) -> Path:
    """The folder in `cache_dir` where [cached_synthetic_ucf101][tubemask.data.synthetic.cached_synthetic_ucf101]
    keeps the dataset with these settings (arguments as
    [make_synthetic_ucf101][tubemask.data.synthetic.make_synthetic_ucf101]). Pure: nothing is read or written.

    The name has readable parts and a short hash of all settings, e.g.
    `synthetic_ucf101-10x24-64f-64x64-texture-seed0-3f2a9c1b0d`: different settings never share a folder, and the
    same settings always give the same one (the hash is of the sorted JSON of the settings).

    Raises:
        ValueError: Arguments out of range.
    """
    params = _ucf101_params(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
        background=background,
    )
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    h, w = params["size"]
    name = f"synthetic_ucf101-{num_classes}x{videos_per_class}-{num_frames}f-{h}x{w}-{background}-seed{seed}-{digest}"
    return Path(cache_dir) / name


def cached_synthetic_ucf101(
    cache_dir: str | os.PathLike,
    *,
    num_classes: int = 10,
    videos_per_class: int = 24,
    num_frames: int = 64,
    size: int | tuple[int, int] = 64,
    fps: float = 25.0,
    seed: int = 0,
    background: Background = "texture",
) -> Path:
    """The synthetic UCF101 dataset with these settings, generated into its own folder of `cache_dir` unless it is
    already there; returns its root (the folder named by
    [synthetic_ucf101_root][tubemask.data.synthetic.synthetic_ucf101_root]). Arguments as
    [make_synthetic_ucf101][tubemask.data.synthetic.make_synthetic_ucf101].

    Datasets with other settings live beside it untouched. Safe when several processes ask at once: each may build
    a copy in a temporary folder, the first to finish renames it into place and the others return that one.

    Raises:
        ValueError: Arguments out of range.
        MissingDecoderError: torchcodec or FFmpeg's libraries are missing (they write the videos).
    """
    settings = dict(
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
        background=background,
    )
    return make_synthetic_ucf101(synthetic_ucf101_root(cache_dir, **settings), **settings)
