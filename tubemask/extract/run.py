"""The extraction run: every video of a folder or list file to a `[num_windows, d]` array in a `.npy` file.

[`extract`][tubemask.extract.run.extract] walks the videos in sorted order. For each it writes
`<output_dir>/<relative path>.npy` (the video's path relative to the input folder, its suffix replaced), atomically,
so a killed run leaves whole files only; a video whose file exists is skipped, which makes a rerun resume. A video
that cannot be read (does not open, is truncated, fails to decode) is skipped, logged on the `tubemask.data` logger
and named with its reason in the summary; the others go on. `<output_dir>/summary.json` is written at the start
(`"status": "running"`) and the end (`"finished"`): the settings, the checkpoint and its pooling, the feature width and,
per video, its output file and window count. A rerun into a folder whose summary states other feature settings or
another checkpoint stops with an error instead of mixing features.
"""

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import torch

from tubemask.atomic import atomic_path
from tubemask.data.decoding import DecodeError, SeekMode, VideoReader
from tubemask.data.failures import FailureLog
from tubemask.data.sampling import clip_span
from tubemask.extract.feature_model import CheckpointInfo, load_feature_model
from tubemask.extract.inputs import list_videos
from tubemask.extract.video import extract_video
from tubemask.shapes import typechecked

__all__ = ["ExtractConfig", "ExtractSummary", "SUMMARY_NAME", "extract"]

logger = logging.getLogger("tubemask.extract")

SUMMARY_NAME = "summary.json"
"""The summary file in the output directory."""

_FEATURE_SETTINGS = ("window_frames", "sampling_rate", "window_stride", "input_size", "imagenet_norm", "dtype")
"""The settings that change the numbers; a resumed run must use the same ones (and the same checkpoint)."""


@dataclass
class ExtractConfig:
    """Settings of `python -m tubemask.extract` (every field is a `--flag`)."""

    videos: Path
    """A folder (searched recursively for video files) or a list file (`path [num_frames] [label]` per line)."""
    checkpoint: Path
    """A tubemask / official VideoMAE .pt or .pth file, or a transformers save_pretrained directory."""
    output_dir: Path
    """Features go to <output-dir>/<relative path>.npy, and summary.json beside them."""
    root: Path | None = None
    """For a list file: the folder its relative paths are resolved against (default: as written)."""
    window_frames: int = 16
    """Frames per window: the model's clip length (a multiple of its tubelet size)."""
    sampling_rate: int = 1
    """Step between the frames of a window (1: consecutive frames, as VideoMAE V2's TAD features)."""
    window_stride: int = 4
    """Frames between the starts of two windows: feature i starts at frame i x window_stride."""
    input_size: int = 224
    """Short side resize, then centre crop to input-size x input-size (a multiple of the patch size)."""
    imagenet_norm: bool = True
    """Normalise with ImageNet mean/std as the recipes do; off: pixels in [0, 1] (VideoMAE V2's TAD script)."""
    batch_size: int = 8
    """Windows per forward pass."""
    device: str = "auto"
    """Where the model runs: auto (cuda when available), cpu, cuda, cuda:1, ..."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """Forward precision: fp32, or bf16 autocast. Features are saved as float32 either way."""
    threads: int | None = None
    """torch intra-op threads while extracting (default: unchanged)."""
    decode_threads: int = 1
    """FFmpeg threads per video (0: FFmpeg decides)."""
    seek_mode: SeekMode = "exact"
    """torchcodec seek mode; approximate skips the packet scan at open (faster for very long videos)."""
    num_heads: int | None = None
    """Attention heads of a .pt/.pth checkpoint whose width is not an official preset's."""

    def __post_init__(self) -> None:
        for name in ("window_frames", "sampling_rate", "window_stride", "input_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ExtractConfig.{name}={value!r} must be an int >= 1")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"ExtractConfig.dtype={self.dtype!r}; allowed: 'fp32', 'bf16'")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"ExtractConfig.threads={self.threads} must be >= 1 (or None: unchanged)")

    def feature_settings(self) -> dict[str, Any]:
        """The settings that determine the features' values, as stored in the summary and checked on resume."""
        return {name: getattr(self, name) for name in _FEATURE_SETTINGS}


@dataclass
class ExtractSummary:
    """What a run did; also written to `<output_dir>/summary.json`.

    Attributes:
        output_dir: Where the features are.
        checkpoint: The checkpoint and its pooling.
        feature_dim: The width `d` of every feature.
        videos: Per video with features (this run's and earlier runs'), keyed by its relative path: `file` (relative
            to `output_dir`), `windows`, `status` (`"extracted"` or `"skipped"`, existing output) and, when extracted
            now, `frames` (decodable frames).
        failed: Videos without features: `path` and `reason`.
        short: Videos shorter than one window (one clamped window each): `path` and `frames`.
    """

    output_dir: str
    checkpoint: CheckpointInfo
    feature_dim: int
    videos: dict[str, dict[str, Any]]
    failed: list[dict[str, str]]
    short: list[dict[str, Any]]

    def count(self, status: str) -> int:
        """Videos with `status` `"extracted"` or `"skipped"`."""
        return sum(1 for v in self.videos.values() if v["status"] == status)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from error


def _stored_windows(path: Path) -> int | None:
    """The window count of an existing feature file, None when it cannot be read as a 2-D array."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return int(array.shape[0]) if array.ndim == 2 else None


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def _check_resume(summary_path: Path, settings: dict, checkpoint: str) -> None:
    """A resumed run must make the same features: raise when the output folder's summary says otherwise."""
    if not summary_path.is_file():
        return
    try:
        before = json.loads(summary_path.read_text())
    except json.JSONDecodeError:
        return  # written atomically, so only an edit by hand breaks it; the new run rewrites it
    old = {**before.get("features", {}), "checkpoint": before.get("checkpoint", {}).get("path")}
    new = {**settings, "checkpoint": checkpoint}
    changed = {k: (old.get(k), v) for k, v in new.items() if k in old and old[k] != v}
    if changed:
        detail = ", ".join(f"{k}: {a!r} before, {b!r} now" for k, (a, b) in changed.items())
        raise ValueError(
            f"{summary_path.parent} holds features made with other settings ({detail}); pass another --output-dir, "
            "or delete that folder to start over"
        )


def _summary_json(cfg: ExtractConfig, summary: ExtractSummary, status: str) -> dict:
    return {
        "status": status,
        "checkpoint": dataclasses.asdict(summary.checkpoint),
        "features": cfg.feature_settings(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
        "feature_dim": summary.feature_dim,
        "counts": {
            "videos": len(summary.videos) + len(summary.failed),
            "extracted": summary.count("extracted"),
            "skipped": summary.count("skipped"),
            "failed": len(summary.failed),
            "short": len(summary.short),
            "windows": sum(v["windows"] for v in summary.videos.values()),
        },
        "videos": summary.videos,
        "failed": summary.failed,
        "short": summary.short,
    }


@typechecked
def extract(cfg: ExtractConfig, *, videos: Sequence[tuple[Path, PurePath]] | None = None) -> ExtractSummary:
    """Extract the features of every video of `cfg.videos` into `cfg.output_dir` (see the module docs).

    Args:
        cfg: The settings.
        videos: The `(file, relative path)` pairs to extract instead of listing `cfg.videos`
            ([`list_videos`][tubemask.extract.inputs.list_videos]).

    Returns:
        The [ExtractSummary][tubemask.extract.run.ExtractSummary], also written to `summary.json`.

    Raises:
        FileNotFoundError: The videos or the checkpoint do not exist.
        ValueError: Bad settings (a window not a multiple of the tubelet size, an input size not a multiple of the
            patch size), an unusable checkpoint, or an output folder holding features made with other settings.
        MissingDecoderError: torchcodec cannot be loaded.
    """
    pairs = list(videos) if videos is not None else list_videos(cfg.videos, root=cfg.root)
    out = Path(cfg.output_dir)
    summary_path = out / SUMMARY_NAME
    checkpoint_name = str(Path(cfg.checkpoint).resolve())
    _check_resume(summary_path, cfg.feature_settings(), checkpoint_name)
    device = _device(cfg.device)
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, pairs, out, summary_path, device)
    finally:
        torch.set_num_threads(threads_before)


def _run(
    cfg: ExtractConfig, pairs: list[tuple[Path, PurePath]], out: Path, summary_path: Path, device: torch.device
) -> ExtractSummary:
    model, info = load_feature_model(
        cfg.checkpoint, window_frames=cfg.window_frames, input_size=cfg.input_size, num_heads=cfg.num_heads
    )
    model.to(device)
    summary = ExtractSummary(str(out), info, info.embed_dim, videos={}, failed=[], short=[])
    out.mkdir(parents=True, exist_ok=True)
    _write_json(summary_path, _summary_json(cfg, summary, "running"))
    failures = FailureLog()
    span = clip_span(cfg.window_frames, cfg.sampling_rate)
    for number, (path, rel) in enumerate(pairs, 1):
        target = out / rel.with_suffix(".npy")
        entry = {"file": str(rel.with_suffix(".npy"))}
        stored = _stored_windows(target) if target.is_file() else None
        if stored is not None:
            summary.videos[str(rel)] = {**entry, "windows": stored, "status": "skipped"}
            continue
        try:
            reader = VideoReader(path, seek_mode=cfg.seek_mode, num_ffmpeg_threads=cfg.decode_threads)
            features = extract_video(
                model,
                reader,
                window_frames=cfg.window_frames,
                sampling_rate=cfg.sampling_rate,
                window_stride=cfg.window_stride,
                input_size=cfg.input_size,
                batch_size=cfg.batch_size,
                imagenet_norm=cfg.imagenet_norm,
                dtype=cfg.dtype,
            )
        except DecodeError as error:
            reason = str(error).removeprefix(f"{path}: ")
            failures.record(str(path), reason)
            summary.failed.append({"path": str(path), "reason": reason})
            continue
        if reader.num_frames < span:
            failures.record_short(str(path), reader.num_frames, span)
            summary.short.append({"path": str(path), "frames": reader.num_frames})
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            np.save(f, features)
        summary.videos[str(rel)] = {
            **entry,
            "windows": len(features),
            "status": "extracted",
            "frames": reader.num_frames,
        }
        logger.info("[%d/%d] %s: %d windows -> %s", number, len(pairs), path, len(features), target)
    _write_json(summary_path, _summary_json(cfg, summary, "finished"))
    return summary
