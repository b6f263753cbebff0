"""Bookkeeping of videos that failed to load: counted, logged, summarised, never silent.

Three kinds of bad video: one that fails to load (replaced by another sample), one found truncated (its header states
more frames than decode: a file cut short; what decodes is used, and the file is named), and one shorter than a clip
(used, sampled by the sampler's short-video rule). Each failure is logged as one `WARNING` line on the `tubemask.data` logger naming the file and the reason, so with
DataLoader workers (whose counters live in the worker processes) the main log still names every bad file. With a
`journal` file set, every process also appends one JSON line per event to it, and
[`FailureLog.read_journal`][tubemask.data.failures.FailureLog.read_journal] gathers them into one per-run summary (the
recipes write `bad_videos.rank<r>.jsonl` in their output directory and print the summary at the end).
"""

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FailureLog"]

logger = logging.getLogger("tubemask.data")

_JOURNAL = "bad_videos.rank{rank}.jsonl"
"""A run's failure journal of one rank (and its DataLoader workers), in the run's output directory."""


def _journals(directory: str | os.PathLike) -> list[Path]:
    """Every rank's journal in `directory`, sorted."""
    return sorted(Path(directory).glob(_JOURNAL.format(rank="*")))


@dataclass
class FailureLog:
    """Per-run record of bad videos (in this process).

    Attributes:
        counts: Bad-video events per path: each failed load, plus one for a video found truncated (used all the same),
            so `len(counts)` is the number of bad videos.
        reasons: The last reason per path (a failure's; a truncated video that never failed has its truncation).
        short: Videos with fewer decodable frames than a clip spans, with their frame count; they are still used,
            sampled by the sampler's short-video rule, and each is logged once.
        truncated: Videos whose header states more frames than decode, with `(header_frames, decodable_frames)`
            (the fewest seen to decode); they are still used, and each is logged once.
        journal: A file that every process holding this log (the DataLoader workers get a copy) appends one JSON
            line to per event; None to keep the events in this process only.
    """

    counts: Counter = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, tuple[int, int]] = field(default_factory=dict)
    journal: str | None = None

    def record(self, path: str, reason: str, *, substitute: int | None = None) -> None:
        """Count a failure of `path` and log it (with the index used instead, if any)."""
        self.counts[path] += 1
        self.reasons[path] = reason
        instead = f"; using sample {substitute} instead" if substitute is not None else ""
        logger.warning("tubemask.data: bad video %s: %s%s", path, reason, instead)
        self._append({"event": "failed", "path": path, "reason": reason})

    def record_short(self, path: str, num_frames: int, span: int) -> None:
        """Note a video shorter than one clip (logged the first time only)."""
        if path not in self.short:
            self.short[path] = num_frames
            self._append({"event": "short", "path": path, "frames": num_frames})
            logger.warning(
                "tubemask.data: short video %s: %d decodable frames < %d spanned by a clip; "
                "sampling it with the sampler's short-video rule",
                path,
                num_frames,
                span,
            )

    def record_truncated(self, path: str, header_frames: int, decodable_frames: int) -> None:
        """Note a video whose header states `header_frames` but of which only `decodable_frames` decode: a file cut
        short, used all the same. Counted once per path and logged the first time only (a later, lower count of
        decodable frames is kept silently)."""
        if self._note_truncated(path, header_frames, decodable_frames):
            self._append(
                {
                    "event": "truncated",
                    "path": path,
                    "header_frames": header_frames,
                    "decodable_frames": decodable_frames,
                }
            )
            logger.warning(
                "tubemask.data: truncated video %s: %s; using the frames that decode",
                path,
                _truncation(header_frames, decodable_frames),
            )

    def _note_truncated(self, path: str, header_frames: int, decodable_frames: int) -> bool:
        """Add a truncation to the counts; True if `path` was not known truncated yet."""
        known = self.truncated.get(path)
        if known is not None:
            self.truncated[path] = (known[0], min(known[1], decodable_frames))
            if self.reasons.get(path) == _truncation(*known):  # no failure since: keep the reason in step
                self.reasons[path] = _truncation(*self.truncated[path])
            return False
        self.truncated[path] = (header_frames, decodable_frames)
        self.counts[path] += 1
        self.reasons.setdefault(path, _truncation(header_frames, decodable_frames))
        return True

    @property
    def total(self) -> int:
        """Number of failed loads (a path that failed twice counts twice; a truncated video that loaded is none)."""
        return sum(self.counts.values()) - len(self.truncated)

    def _failed(self) -> dict[str, int]:
        """Failed loads per path, for the paths that failed at least once."""
        failed = {path: n - (path in self.truncated) for path, n in self.counts.items()}
        return {path: n for path, n in failed.items() if n > 0}

    def summary(self) -> str:
        """A human-readable report: totals, then one line per bad path with its count and reason, per truncated video
        with its header's and its decodable frame counts, and per short video with its frame count."""
        failed = self._failed()
        head = f"{self.total} failed loads of {len(failed)} videos; {len(self.short)} videos shorter than a clip"
        if self.truncated:
            head += f"; {len(self.truncated)} truncated (header states more frames than decode)"
        lines = [head]
        lines += [f"  {path}: {n}x {self.reasons[path]}" for path, n in sorted(failed.items())]
        lines += [f"  {path}: truncated: {_truncation(*n)}" for path, n in sorted(self.truncated.items())]
        lines += [f"  {path}: short ({n} frames)" for path, n in sorted(self.short.items())]
        return "\n".join(lines)

    def merge(self, other: "FailureLog") -> None:
        """Add another log's counts (e.g. gathered from workers or ranks); a video truncated in both counts once."""
        failed = other._failed()
        self.counts.update(failed)
        self.reasons.update({path: other.reasons[path] for path in failed})
        self.short.update(other.short)
        for path, (header, decodable) in other.truncated.items():
            self._note_truncated(path, header, decodable)

    def _append(self, event: dict) -> None:
        """One JSON line to the journal, written by a single `write` on an `O_APPEND` descriptor, so lines from
        several processes do not interleave. A journal that cannot be written is logged, never raised: the run goes
        on and the warning lines still name the file."""
        if self.journal is None:
            return
        line = json.dumps({**event, "pid": os.getpid(), "time": round(time.time(), 3)}) + "\n"
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as error:
            logger.warning("tubemask.data: cannot append to the failure journal %s: %s", self.journal, error)

    @staticmethod
    def journal_file(directory: str | os.PathLike, rank: int = 0) -> Path:
        """The journal a run's process of `rank` (with its DataLoader workers) writes in `directory`:
        `bad_videos.rank<rank>.jsonl`."""
        return Path(directory) / _JOURNAL.format(rank=rank)

    @classmethod
    def read_run(cls, directory: str | os.PathLike) -> "FailureLog":
        """Every rank's journal in `directory` ([`journal_file`][tubemask.data.failures.FailureLog.journal_file]),
        as one log: the run's summary."""
        return cls.read_journal(*_journals(directory))

    @classmethod
    def report_run(cls, directory: str | os.PathLike, log: Callable[[str], object]) -> "FailureLog":
        """The run's summary ([`read_run`][tubemask.data.failures.FailureLog.read_run]), also passed to `log` under a
        line naming the journals when any video failed or was short (a clean run logs nothing): the recipes' end of
        run report."""
        bad = cls.read_run(directory)
        if bad.counts or bad.short:  # a truncated video is in counts
            log(f"bad videos of this run ({Path(directory) / _JOURNAL.format(rank='*')}):\n{bad.summary()}")
        return bad

    @staticmethod
    def remove_run_journals(directory: str | os.PathLike) -> None:
        """Delete the journals in `directory` (a fresh run there starts with none; a resumed one keeps them)."""
        for path in _journals(directory):
            path.unlink(missing_ok=True)

    @classmethod
    def read_journal(cls, *paths: str | os.PathLike) -> "FailureLog":
        """The failures recorded in journal files (missing files count as empty), as one log: the per-run summary of
        every process that wrote them. A line that is not a complete event (a process killed mid-write) is skipped
        with a warning."""
        log = cls()
        for path in paths:
            if not Path(path).exists():
                continue
            for number, line in enumerate(Path(path).read_text().splitlines(), 1):
                try:
                    event = json.loads(line)
                    kind, video = event["event"], event["path"]
                    if kind == "failed":
                        log.counts[video] += 1
                        log.reasons[video] = event["reason"]
                    elif kind == "short":
                        log.short[video] = int(event["frames"])
                    elif kind == "truncated":
                        log._note_truncated(video, int(event["header_frames"]), int(event["decodable_frames"]))
                    else:
                        raise ValueError(f"unknown event {kind!r}")
                except (ValueError, KeyError, TypeError) as error:
                    logger.warning(
                        "tubemask.data: %s line %d is not a failure event (%s); skipped", path, number, error
                    )
        return log


def _truncation(header_frames: int, decodable_frames: int) -> str:
    """How a truncated video is named: `header says 75 frames, 13 decode`."""
    return f"header says {header_frames} frames, {decodable_frames} decode"
