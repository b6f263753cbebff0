"""Pretraining designs compared across studies: one study folder per design, the same seeds, paired tests.

A data-efficiency study (`recipes/data_efficiency.py`) runs one pretraining design (mask, ratio, target, pool) over
its seeds. Side-by-side questions (tube against random against frame masking; a 1x, 5x or 20x pool; pixel against
HOG targets) are several study folders that share their splits. [compare_designs][tubemask.eval.designs.compare_designs]
reads them into one table: per design and arm the mean test accuracy and its standard error, and each design paired
with a reference design over the seeds both ran (mean difference, 95% Student-t interval, p-value, sign test).
[plot_mask_designs][tubemask.eval.designs.plot_mask_designs] draws accuracy against the *effective* mask ratio
(read from each folder's `seed{N}/pretrain.json`), one line per mask type (and target and step count, where designs
differ in them: those come from the folder's `config.json`).

    python -m tubemask.eval.designs STUDY_DIR [STUDY_DIR ...] --reference STUDY_DIR --output PREFIX

writes `PREFIX.md` (the table) and `PREFIX.png` (the plot), from the result files alone.
"""

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from tubemask.atomic import atomic_path
from tubemask.eval.paired_stats import paired_t_test, sign_test
from tubemask.eval.study import Results, load_results, mean_se, test_scores

__all__ = ["Design", "read_design", "compare_designs", "plot_mask_designs", "main"]

DESIGN_ARMS = ("pretrained", "pretrained_probe")
"""The arms a pretraining design changes (the others are the same in every design)."""


@dataclass
class Design:
    """One study folder: its name, its result files and what its pretraining was (the mask and pool from the seeds'
    `pretrain.json`, the target and step count from the folder's `config.json`; `None` where a file lacks them)."""

    name: str
    results: Results
    mask: str | None
    mask_ratio: float | None
    effective_mask_ratio: float | None
    pool_clips: int | None
    target: str | None = None
    steps: int | None = None


def read_design(folder: Path, arms: tuple[str, ...] = DESIGN_ARMS) -> Design:
    """The design in a study folder (its name is the folder's name). Raises if the folder holds no result file of
    `arms`, or if its seeds were pretrained with different masks (a folder is one design)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a study folder")
    results = load_results(folder, arms)
    if not results:
        raise FileNotFoundError(f"{folder}: no result file of the arms {', '.join(arms)} (seed*/ARM.json)")
    meta = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*/pretrain.json"))]
    kinds = {(m.get("mask"), m.get("mask_ratio"), m.get("effective_mask_ratio"), m.get("pool_clips")) for m in meta}
    if len(kinds) > 1:
        raise ValueError(f"{folder}: its seeds were pretrained differently ({sorted(kinds, key=str)}); one design each")
    mask, ratio, effective, pool = kinds.pop() if kinds else (None, None, None, None)
    config = folder / "config.json"
    pretrain = json.loads(config.read_text()).get("pretrain", {}) if config.is_file() else {}
    return Design(folder.name, results, mask, ratio, effective, pool, pretrain.get("target"), pretrain.get("steps"))


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, se = mean_se(values)
    return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} +- {se:.3f}"


def compare_designs(designs: list[Design], reference: Design, arms: tuple[str, ...] = DESIGN_ARMS) -> str:
    """Markdown: one row per design (mask, effective ratio, target, pretraining steps, pool, per arm mean +- SE and
    seeds), then per arm each design minus the reference, paired over their common seeds (at least 2): mean
    difference, 95% t interval, p-value, sign test and the verdict ("better" / "worse" only when the interval
    excludes 0)."""
    everyone = [reference] + [d for d in designs if d.name != reference.name]
    head = "| design | mask | ratio asked / effective | target | steps | pool clips | "
    head += " | ".join(f"{a} (seeds)" for a in arms) + " |"
    lines = [head, "|" + "---|" * (6 + len(arms))]
    for d in everyone:
        ratio = "-" if d.mask_ratio is None else f"{d.mask_ratio:g} / {d.effective_mask_ratio:.3f}"
        cells = []
        for arm in arms:
            scores = list(test_scores(d.results, arm).values())
            cells.append(f"{_cell(scores)} ({len(scores)})")
        name = f"**{d.name}** (reference)" if d is reference else d.name
        pretraining = f"{d.mask or '-'} | {ratio} | {d.target or '-'} | {d.steps or '-'} | {d.pool_clips or '-'}"
        lines.append(f"| {name} | {pretraining} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| arm | design - reference | seeds | mean difference | 95% interval (t) | p (t-test) | wins / losses / ties "
        "| p (sign test) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        ref = test_scores(reference.results, arm)
        for d in everyone[1:]:
            mine = test_scores(d.results, arm)
            seeds = [s for s in mine if s in ref]
            if len(seeds) < 2:
                continue
            x, y = [mine[s] for s in seeds], [ref[s] for s in seeds]
            t, sign = paired_t_test(x, y), sign_test(x, y)
            verdict = "no difference shown" if not t.excludes_zero else ("better" if t.mean > 0 else "worse")
            lines.append(
                f"| {arm} | {d.name} - {reference.name} | {len(seeds)} | {t.mean:+.3f} | [{t.low:+.3f}, {t.high:+.3f}] "
                f"| {t.p:.3g} | {sign.wins} / {sign.losses} / {sign.ties} | {sign.p:.3g} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def plot_mask_designs(designs: list[Design], path: Path, arms: tuple[str, ...] = DESIGN_ARMS) -> None:
    """Test accuracy (mean +- SE over seeds) against the effective mask ratio, one line per mask type (per mask,
    target and step count where the designs differ in those), one panel per arm. Designs without pretraining
    metadata are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4), squeeze=False)
    several_targets = len({d.target for d in designs}) > 1
    several_steps = len({d.steps for d in designs}) > 1
    by_mask: dict[str, list[Design]] = {}
    for d in designs:
        if d.mask is not None and d.effective_mask_ratio is not None:
            label = d.mask + (f", {d.target}" if several_targets else "")
            label += f", {d.steps} steps" if several_steps else ""
            by_mask.setdefault(label, []).append(d)
    for ax, arm in zip(axes[0], arms, strict=True):
        for mask, group in sorted(by_mask.items()):
            group = sorted(group, key=lambda d: d.effective_mask_ratio)
            points = [(d.effective_mask_ratio, list(test_scores(d.results, arm).values())) for d in group]
            points = [(x, v) for x, v in points if v]
            if not points:
                continue
            means = [mean_se(v)[0] for _, v in points]
            errors = [0.0 if math.isnan(mean_se(v)[1]) else mean_se(v)[1] for _, v in points]
            ax.errorbar([x for x, _ in points], means, yerr=errors, marker="o", capsize=3, label=mask)
        ax.set_xlabel("effective mask ratio")
        ax.set_ylabel("test top-1")
        ax.set_title(arm.replace("_", " "))
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tubemask.eval.designs", description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders, one design each")
    parser.add_argument("--reference", type=Path, required=True, help="the study folder the others are paired with")
    parser.add_argument("--output", type=Path, required=True, help="writes OUTPUT.md and OUTPUT.png")
    args = parser.parse_args(argv)
    try:
        reference = read_design(args.reference)
        designs = [read_design(folder) for folder in args.studies]
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    table = compare_designs(designs, reference)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output.with_suffix(".md")) as tmp:
        Path(tmp).write_text(table)
    plot_mask_designs([reference] + designs, args.output.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
