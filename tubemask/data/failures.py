"""Bookkeeping of videos that failed to load: counted, logged, summarised, never silent.

Each failure is logged as one `WARNING` line on the `tubemask.data` logger naming the file and the reason, so with
DataLoader workers (whose counters live in the worker processes) the main log still names every bad file.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["FailureLog"]

logger = logging.getLogger("tubemask.data")


@dataclass
class FailureLog:
    """Per-run record of bad videos (in this process).

    Attributes:
        counts: Failures per path.
        reasons: The last reason per path.
        short: Videos with fewer decodable frames than a clip spans, with their frame count; they are still used,
            sampled by the sampler's short-video rule, and each is logged once.
    """

    counts: Counter = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)

    def record(self, path: str, reason: str, *, substitute: int | None = None) -> None:
        """Count a failure of `path` and log it (with the index used instead, if any)."""
        self.counts[path] += 1
        self.reasons[path] = reason
        instead = f"; using sample {substitute} instead" if substitute is not None else ""
        logger.warning("tubemask.data: bad video %s: %s%s", path, reason, instead)

    def record_short(self, path: str, num_frames: int, span: int) -> None:
        """Note a video shorter than one clip (logged the first time only)."""
        if path not in self.short:
            self.short[path] = num_frames
            logger.warning(
                "tubemask.data: short video %s: %d decodable frames < %d spanned by a clip; "
                "sampling it with the sampler's short-video rule",
                path,
                num_frames,
                span,
            )

    @property
    def total(self) -> int:
        """Number of failed loads (a path that failed twice counts twice)."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """A human-readable report: totals, then one line per bad path with its count and reason."""
        lines = [
            f"{self.total} failed loads of {len(self.counts)} videos; {len(self.short)} videos shorter than a clip"
        ]
        lines += [f"  {path}: {n}x {self.reasons[path]}" for path, n in sorted(self.counts.items())]
        lines += [f"  {path}: short ({n} frames)" for path, n in sorted(self.short.items())]
        return "\n".join(lines)

    def merge(self, other: "FailureLog") -> None:
        """Add another log's counts (e.g. gathered from workers or ranks)."""
        self.counts.update(other.counts)
        self.reasons.update(other.reasons)
        self.short.update(other.short)
