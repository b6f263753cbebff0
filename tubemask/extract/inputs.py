"""Which videos to extract and where each one's features go.

A folder is searched recursively for video files; a VideoMAE list file names them one per line. Each video gets a
relative path (below the folder, or below `root` for a list file) that its feature file mirrors, with the suffix
replaced by `.npy`.
"""

import os
from pathlib import Path, PurePath

from tubemask.data.annotations import read_list_file

__all__ = ["VIDEO_SUFFIXES", "list_videos"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
"""File suffixes (any case) that a folder search takes for videos."""


def _relative(path: Path, base: Path | None) -> PurePath:
    """`path` relative to `base` when it lies under it, else as written without its anchor (`/data/a.mp4` ->
    `data/a.mp4`) and without `..` parts."""
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve())
        except ValueError:
            pass
    if path.is_absolute() or ".." in path.parts:
        path = path.resolve()
        return PurePath(*path.parts[1:])
    return PurePath(*[p for p in path.parts if p != "."])


def list_videos(videos: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[tuple[Path, PurePath]]:
    """The videos to extract and the relative path each one's features mirror.

    Args:
        videos: A folder, searched recursively for files with a video suffix (`.mp4 .avi .webm .mkv .mov ...`, any
            case; names starting with `.` are left out), or a VideoMAE list file
            ([`read_list_file`][tubemask.data.annotations.read_list_file]: `path`, `path label` or
            `path num_frames label` per line).
        root: For a list file, the folder its relative paths are resolved against and features mirror paths from.

    Returns:
        `(video file, relative path)` pairs, sorted by relative path.

    Raises:
        FileNotFoundError: `videos` does not exist.
        ValueError: the folder holds no video, or two videos would write the same feature file (same name with
            another suffix).
    """
    source = Path(videos)
    if source.is_dir():
        found = [
            p
            for p in source.rglob("*")
            if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ]
        if not found:
            raise ValueError(f"videos folder {source} holds no file ending in {' '.join(VIDEO_SUFFIXES)}")
        pairs = [(p, p.relative_to(source)) for p in found]
    elif source.is_file():
        base = Path(root) if root is not None else None
        pairs = [(r.path, _relative(r.path, base)) for r in read_list_file(source, root=root)]
    else:
        raise FileNotFoundError(f"videos {source} is neither a folder nor a list file")
    pairs.sort(key=lambda pair: str(pair[1]))
    seen: dict[PurePath, Path] = {}
    for path, rel in pairs:
        key = rel.with_suffix(".npy")
        if key in seen:
            raise ValueError(f"{seen[key]} and {path} would both write {key}; rename one or extract them separately")
        seen[key] = path
    return pairs
