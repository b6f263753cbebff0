"""Checkpoints: atomic saves, safe loads (`weights_only=True`), a rotating manager, and RNG capture.

Everything a checkpoint holds must load under `torch.load(..., weights_only=True)`: tensors, Python numbers, strings,
`None`, and lists / tuples / dicts of them. [save_checkpoint][tubemask.train.checkpoint.save_checkpoint] checks this
before writing, so a state that could not be resumed fails at save time, naming the offending key.

Example:
    ```python
    manager = CheckpointManager("runs/pretrain", keep_last=3)
    state = manager.load_latest()
    if state is not None:
        model.load_state_dict(state["model"]); optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"]); start = state["step"] + 1
    ...
    manager.save(step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step, "rng": rng_state()})
    ```
"""

import os
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tubemask.atomic import atomic_path, fsync_directory

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointManager",
    "rng_state",
    "set_rng_state",
]

_SAFE_LEAVES = (torch.Tensor, bool, int, float, str, type(None), torch.Size, torch.device, torch.dtype)


class CheckpointError(RuntimeError):
    """A file is missing, truncated, corrupt, or holds objects that `weights_only=True` refuses."""


def _check_loadable(value: Any, where: str) -> None:
    """Raise TypeError naming the first value under `value` that `torch.load(weights_only=True)` would refuse."""
    if isinstance(value, _SAFE_LEAVES):
        return
    if isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] has type {type(key).__name__}; use str or int keys")
            _check_loadable(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_loadable(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint value {where} has type {type(value).__module__}.{type(value).__qualname__}, which "
        "torch.load(weights_only=True) refuses; store tensors, numbers, strings, None, or lists/dicts of them "
        "(e.g. dataclasses.asdict(config), array -> torch.from_numpy(array))"
    )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (temporary file in the same directory, fsync, `os.replace`).

    Args:
        path: destination file; parent directories are created.
        state: a dict of tensors, numbers, strings, `None` and nested lists / dicts of them.

    Returns:
        The destination path.

    Raises:
        TypeError: when `state` holds a value `torch.load(weights_only=True)` could not read back.
    """
    _check_loadable(state, "state")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `torch.load(..., weights_only=True)` (no arbitrary code runs).

    Args:
        path: the file.
        map_location: where tensors go, as for `torch.load` (default CPU).

    Raises:
        FileNotFoundError: when `path` does not exist.
        CheckpointError: when the file is truncated, corrupt, not a torch checkpoint, or holds objects that
            `weights_only=True` refuses (e.g. a full-pickle checkpoint with `argparse.Namespace` args).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... depending on the damage
        if "weights_only" in str(error) or "Weights only" in str(error):
            hint = "it holds objects that torch.load(weights_only=True) refuses (a full-pickle checkpoint?)"
        else:
            hint = "it is truncated, corrupt, or not a torch checkpoint"
        raise CheckpointError(f"cannot load checkpoint {path}: {hint}. {type(error).__name__}: {error}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


class CheckpointManager:
    """Numbered checkpoints in one directory, keeping the last `keep_last`.

    Files are named `{prefix}-{step:08d}.pt`. A new checkpoint is fully written and renamed into place before any
    old one is deleted, so a crash at any moment leaves at least the previous checkpoint intact. Call `save` on one
    process only (rank 0) in distributed runs.

    Args:
        directory: where checkpoints live; created if missing.
        keep_last: how many of the newest checkpoints to keep, `>= 1`.
        prefix: file-name prefix (letters, digits, `_`, `.` or `-`).
    """

    def __init__(self, directory: str | os.PathLike, *, keep_last: int = 3, prefix: str = "checkpoint") -> None:
        if keep_last < 1:
            raise ValueError(f"CheckpointManager: keep_last must be >= 1, got {keep_last}")
        if not re.fullmatch(r"[\w.-]+", prefix):
            raise ValueError(f"CheckpointManager: prefix {prefix!r} may hold only letters, digits, '_', '.' and '-'")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.prefix = prefix
        self._pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.pt")

    def path(self, step: int) -> Path:
        """The file name for `step`."""
        if step < 0:
            raise ValueError(f"CheckpointManager: step must be >= 0, got {step}")
        return self.directory / f"{self.prefix}-{step:08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """`(step, path)` of every checkpoint in the directory, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            match = self._pattern.fullmatch(entry.name)
            if match is not None and entry.is_file():
                found.append((int(match.group(1)), entry))
        return sorted(found)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Atomically write the checkpoint of `step`, then delete all but the newest `keep_last`; return its path."""
        path = save_checkpoint(self.path(step), state)
        # Never delete the file just written, even if newer steps exist (a run restarted from an older checkpoint).
        stale = [old for _, old in self.checkpoints()[: -self.keep_last] if old != path]
        for old in stale:
            old.unlink(missing_ok=True)
        if stale:
            fsync_directory(self.directory)
        return path

    def latest(self) -> Path | None:
        """Path of the newest checkpoint, or `None` when there is none."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def load_latest(self, *, map_location: Any = "cpu") -> dict[str, Any] | None:
        """Load the newest checkpoint (see [load_checkpoint][tubemask.train.checkpoint.load_checkpoint]), or `None`."""
        path = self.latest()
        return None if path is None else load_checkpoint(path, map_location=map_location)


def rng_state() -> dict[str, Any]:
    """Capture Python `random`, the NumPy global generator, torch CPU and every CUDA device's generator.

    Returns:
        A dict of tensors, numbers and strings only, so it survives `torch.load(weights_only=True)`.
    """
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (we capture the global one)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by [rng_state][tubemask.train.checkpoint.rng_state].

    CUDA states are restored for the devices present in both the state and this machine; missing parts are skipped.

    Raises:
        KeyError: when `state` lacks the `python`, `numpy` or `torch` entry.
    """
    for key in ("python", "numpy", "torch"):
        if key not in state:
            raise KeyError(f"set_rng_state: state has no {key!r} entry; expected the dict made by rng_state()")
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
