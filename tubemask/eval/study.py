"""Seeded studies of several arms: one result file per (seed, arm), read back into tables with paired tests.

A study runs each *arm* (a way to get a model: fine-tune a pretrained encoder, train from scratch, a probe, a
hand-made baseline, ...) on each seed, and each (seed, arm) writes `seed{N}/{arm}.json` when it finishes, so a study
that is stopped resumes where it was and can span sessions. A result file holds at least `{"chosen": {"test": x}}`
(the test accuracy of the arm's choice, made on validation), optionally `chosen["train"]`, the choice itself
(`chosen["lr"]` or `chosen["weight_decay"]`) and `chosen_on_grid_edge` (the choice sat on an edge of its grid: the
grid should grow). [summarise][tubemask.eval.study.summarise] turns whatever files exist into the per-arm table
(mean and standard error) and the paired comparisons (two-sided paired t-test with its interval, exact sign test;
"beats" only when the interval excludes 0), used by `recipes/data_efficiency.py`.
"""

import json
import math
import statistics
from pathlib import Path

from tubemask.eval.paired_stats import paired_t_test, sign_test

__all__ = ["Results", "load_results", "mean_se", "result_path", "summarise", "test_scores"]

Results = dict[int, dict[str, dict]]
"""`{seed: {arm: result}}`."""


def result_path(out: Path, seed: int, arm: str) -> Path:
    """Where the result of `arm` on `seed` lives under the study folder `out`."""
    return Path(out) / f"seed{seed}" / f"{arm}.json"


def load_results(out: Path, arms: tuple[str, ...]) -> Results:
    """The result files of `arms` under `out` (seed folders `seed{N}`), as `{seed: {arm: result}}`."""
    found: Results = {}
    for folder in sorted(Path(out).glob("seed*")):
        if not folder.is_dir() or not folder.name[4:].isdigit():
            continue
        for arm in arms:
            path = folder / f"{arm}.json"
            if path.is_file():
                found.setdefault(int(folder.name[4:]), {})[arm] = json.loads(path.read_text())
    return found


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)); SE is NaN for one value."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def test_scores(results: Results, arm: str) -> dict[int, float]:
    """`{seed: test accuracy}` of `arm`'s choice, over the seeds that have it."""
    return {s: results[s][arm]["chosen"]["test"] for s in sorted(results) if arm in results[s]}


def summarise(
    results: Results, arms: tuple[str, ...], comparisons: tuple[tuple[str, str], ...], *, chance: float
) -> str:
    """Markdown: one row per arm (seeds, test accuracy per seed, mean +- SE, train accuracy, the choices and how many
    sat on a grid edge), then one row per comparison `(a, b)` paired over the seeds both have (at least 2): mean of
    `a - b`, its 95% t interval, the t-test's and the sign test's p-values, and the verdict."""
    lines = [
        "| arm | seeds | test top-1 per seed | mean +- SE | train top-1 (mean) | choices (lr or weight decay) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in arms:
        scores = test_scores(results, arm)
        if not scores:
            continue
        chosen = [results[s][arm]["chosen"] for s in scores]
        mean, se = mean_se(list(scores.values()))
        train = [c["train"] for c in chosen if "train" in c]
        train_text = f"{statistics.fmean(train):.3f}" if train else "-"
        picks = ", ".join(f"{c['lr']:g}" if "lr" in c else f"{c.get('weight_decay', float('nan')):g}" for c in chosen)
        edges = sum(bool(results[s][arm].get("chosen_on_grid_edge")) for s in scores)
        picks += f" ({edges} on a grid edge)" if edges else ""
        per_seed = ", ".join(f"{t:.3f}" for t in scores.values())
        lines.append(f"| {arm} | {len(scores)} | {per_seed} | {mean:.3f} +- {se:.3f} | {train_text} | {picks} |")
    lines += [
        "",
        "| comparison (paired over seeds) | seeds | mean difference | 95% interval (t) | p (t-test) "
        "| wins / losses / ties | p (sign test) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a, b in comparisons:
        sa, sb = test_scores(results, a), test_scores(results, b)
        seeds = [s for s in sa if s in sb]
        if len(seeds) < 2:
            continue
        x, y = [sa[s] for s in seeds], [sb[s] for s in seeds]
        t, sign = paired_t_test(x, y), sign_test(x, y)
        verdict = (
            "no difference shown" if not t.excludes_zero else (f"{a} beats {b}" if t.mean > 0 else f"{b} beats {a}")
        )
        lines.append(
            f"| {a} - {b} | {len(seeds)} | {t.mean:+.3f} | [{t.low:+.3f}, {t.high:+.3f}] | {t.p:.3g} | "
            f"{sign.wins} / {sign.losses} / {sign.ties} | {sign.p:.3g} | {verdict} |"
        )
    lines += ["", f'Chance: {chance:.3f}. A verdict says "beats" only when the t interval excludes 0.']
    return "\n".join(lines) + "\n"
