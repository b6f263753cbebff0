"""Atomic file writes: write a temporary file in the destination's directory, fsync it, then `os.replace` it.

A reader (or a resumed run after a crash) sees either the previous file or the complete new one, never a torn write.
Used for checkpoints, logs, loss plots, metric reports and reconstruction pictures; it depends on nothing else in
tubemask, so any layer may use it.
"""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "fsync_directory"]


def fsync_directory(directory: str | os.PathLike) -> None:
    """Flush a directory entry (a rename or unlink in it) to disk; a no-op where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit, fsync it and rename it onto `path`.

    The temporary name keeps the suffix of `path` (`.png`, `.mp4`, ...) so writers that pick a format from the
    extension work. On an exception the temporary file is removed and `path` is untouched.

    Example:
        ```python
        with atomic_path("out/recon.png") as tmp:
            figure.savefig(tmp)
        ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}"
    # Create it ourselves (mode 0o666 minus umask), so the final file gets ordinary permissions.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
