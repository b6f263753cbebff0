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

from tubemask.atomic import atomic_path
from tubemask.eval.paired_stats import PairedTTest, paired_t_test, sign_test

__all__ = [
    "Results",
    "best_lr_run",
    "differing_options",
    "load_results",
    "mean_se",
    "paired_cells",
    "plot_study",
    "result_path",
    "summarise",
    "test_scores",
    "with_baselines",
    "write_json",
]

Results = dict[int, dict[str, dict]]
"""`{seed: {arm: result}}`."""


def result_path(out: Path, seed: int, arm: str) -> Path:
    """Where the result of `arm` on `seed` lives under the study folder `out`."""
    return Path(out) / f"seed{seed}" / f"{arm}.json"


def write_json(path: Path, obj: dict) -> None:
    """Write `obj` as indented JSON, atomically (a reader never sees half a result file); makes the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=str))


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
        paired, t = paired_cells([sa[s] for s in seeds], [sb[s] for s in seeds])
        verdict = (
            "no difference shown" if not t.excludes_zero else (f"{a} beats {b}" if t.mean > 0 else f"{b} beats {a}")
        )
        lines.append(f"| {a} - {b} | {len(seeds)} | {paired} | {verdict} |")
    lines += ["", f'Chance: {chance:.3f}. A verdict says "beats" only when the t interval excludes 0.']
    return "\n".join(lines) + "\n"


def with_baselines(results: Results, baselines: Results, seeds: tuple[int, ...]) -> Results:
    """`results` with the arms of `baselines` (another study's result files) added where `results` has none, for the
    seeds in `seeds` or already in `results`; `results` is changed in place and returned."""
    for seed, arms in baselines.items():
        if seed in seeds or seed in results:
            results.setdefault(seed, {})
            for arm, result in arms.items():
                results[seed].setdefault(arm, result)
    return results


def best_lr_run(runs: list[dict]) -> dict:
    """The study's choice among fine-tuning runs `{"lr", "val", ...}`: the best validation accuracy, ties to the
    smaller learning rate."""
    return max(runs, key=lambda r: (r["val"], -r["lr"]))


def paired_cells(x: list[float], y: list[float]) -> tuple[str, PairedTTest]:
    """`x - y` paired, as markdown table cells (mean difference, 95% t interval, t-test p, wins / losses / ties, sign
    test p), and the t-test a verdict reads."""
    t, sign = paired_t_test(x, y), sign_test(x, y)
    cells = f"{t.mean:+.3f} | [{t.low:+.3f}, {t.high:+.3f}] | {t.p:.3g} | {sign.wins} / {sign.losses} / {sign.ties}"
    return f"{cells} | {sign.p:.3g}", t


def differing_options(
    theirs: dict,
    ours: dict,
    sections: tuple[str, ...],
    ignore: tuple[str, ...] = (),
    defaults: dict | None = None,
) -> dict:
    """The option names that differ between two studies' configurations (`config.json` dicts), per section, leaving
    out the names in `ignore`: `{section: [names]}`, empty when the studies agree. An option a configuration lacks
    counts at its value in `defaults` (a configuration of the same shape): a folder written before the option existed
    ran what the option's default does, since an option is only ever added with the old behaviour as its default."""
    out = {}
    for section in sections:
        base = (defaults or {}).get(section, {})
        a = {k: v for k, v in {**base, **theirs.get(section, {})}.items() if k not in ignore}
        b = {k: v for k, v in {**base, **ours.get(section, {})}.items() if k not in ignore}
        if a != b:
            out[section] = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return out


def plot_study(
    results: Results, histories: dict[int, list[dict]], arms: tuple[str, ...], *, chance: float, path: Path
) -> None:
    """One picture of a study: test accuracy per arm (mean +- SE bars, one dot per seed) and, per seed, the
    pretraining curves (loss against its zero floor; linear probe and participation ratio / 20)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    shown = [arm for arm in arms if any(arm in r for r in results.values())]
    for i, arm in enumerate(shown):
        values = list(test_scores(results, arm).values())
        mean, se = mean_se(values)
        ax.bar(
            i,
            mean,
            yerr=0 if math.isnan(se) else se,
            color="tab:blue" if "pretrained" in arm else "tab:grey",
            alpha=0.6,
        )
        ax.scatter([i] * len(values), values, color="k", zorder=3, s=8)
    ax.axhline(chance, ls="--", color="r", label="chance")
    ax.set_xticks(range(len(shown)), [a.replace("_", "\n") for a in shown], fontsize=8)
    ax.set_ylabel("test top-1")
    ax.legend()
    for seed, hist in sorted(histories.items()):
        steps = [r["step"] for r in hist if "loss" in r]
        axes[1].plot(steps, [r["loss"] for r in hist if "loss" in r], label=f"loss seed {seed}")
        axes[1].plot(steps, [r["zero_floor"] for r in hist if "loss" in r], ls="--", label=f"floor seed {seed}")
        all_steps = [r["step"] for r in hist]
        axes[2].plot(all_steps, [r["probe_per_time"] for r in hist], label=f"probe seed {seed}")
        axes[2].plot(all_steps, [r["participation_ratio"] / 20 for r in hist], ls=":", label=f"PR/20 seed {seed}")
    axes[1].set_xlabel("pretraining step")
    axes[1].set_title("loss vs zero floor")
    axes[2].set_xlabel("pretraining step")
    axes[2].set_title("linear probe (per-time features), participation ratio / 20")
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
