"""Pretraining designs compared across studies: one study folder per design, the same seeds, paired tests.

A data-efficiency study (`recipes/data_efficiency.py`) runs one pretraining design (mask, ratio, target, pool) over
its seeds. Side-by-side questions (tube against random against frame masking; a 1x, 5x or 20x pool; pixel against
HOG targets) are several study folders that share their splits. [compare_designs][tubemask.eval.designs.compare_designs]
reads them into one table: per design and arm the mean test accuracy and its standard error, and each design paired
with a reference design over the seeds both ran (mean difference, 95% Student-t interval, p-value, sign test). Where
designs differ in options the table has no column for (a motion-aware decoder share, the loss, a fine-tuning option),
an "other options" column names them ([other_options][tubemask.eval.design_folders.other_options]).
[plot_designs][tubemask.eval.designs.plot_designs] draws the designs against what they vary: the *effective* mask
ratio (read from each folder's `seed{N}/pretrain.json`), one line per mask type (and target and step count, where
designs differ in them: those come from the folder's `config.json`); or the number of clips pretrained on, one line per
pool domain; or one position per design (methods side by side), with the reference folder's scratch, random-probe and
hand-made results as dashed lines.

    python -m tubemask.eval.designs STUDY_DIR [STUDY_DIR ...] --reference STUDY_DIR --output PREFIX \
        [--lrs LR ...] [--factors mask ratio] [--arms ARM ...]

writes `PREFIX.md` (the table) and `PREFIX.png` (the plot), from the result files alone. Designs fine-tuned over
different learning-rate grids compare like for like with `--lrs`: every design's fine-tuned arm is chosen again on
validation among those learning rates only, from the runs each result file keeps
([restrict_learning_rates][tubemask.eval.design_folders.restrict_learning_rates]). Over a grid of mask types and
ratios, `--factors mask ratio` adds each factor's main effect ([compare_factor][tubemask.eval.designs.compare_factor]):
every pair of mask types paired over the ratios and seeds both ran, and every pair of ratios over the mask types. The
arms compared are the two that depend on pretraining unless `--arms` names others (`--arms scratch` for a fine-tuning
option run on the scratch arm alone, paired with the reference's scratch arm).
"""

import argparse
import math
from pathlib import Path

from tubemask.atomic import atomic_path
from tubemask.eval.design_folders import DESIGN_ARMS, Design, other_options, read_design, restrict_learning_rates
from tubemask.eval.paired_stats import PairedTTest, holm
from tubemask.eval.study import Results, load_results, mean_se, paired_cells, test_scores

__all__ = [
    "compare_designs",
    "compare_factor",
    "design_axis",
    "plot_designs",
    "main",
]


def _with_reference_first(designs: list[Design], reference: Design) -> list[Design]:
    return [reference] + [d for d in designs if d.name != reference.name]


def _verdict(t: PairedTTest) -> str:
    """ "better" / "worse" only when the t interval excludes 0."""
    return "no difference shown" if not t.excludes_zero else ("better" if t.mean > 0 else "worse")


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, se = mean_se(values)
    return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} +- {se:.3f}"


def _means(x: list[float], y: list[float]) -> str:
    """The two sides of a paired comparison, each averaged over the pairs alone: "first / second"."""
    return f"{sum(x) / len(x):.3f} / {sum(y) / len(y):.3f}"


def _paired_table(lead: str, unit: str, rows: list[tuple[str, list[float], list[float]]]) -> list[str]:
    """A paired table's lines: the `lead` columns, then per row `(lead cells, x, y)` both means over the pairs, `x - y`
    paired ([paired_cells][tubemask.eval.study.paired_cells]), the t-test's p-value adjusted over the table's rows
    ([holm][tubemask.eval.paired_stats.holm]: the rows are one family) and the verdict."""
    tests = [paired_cells(x, y) for _, x, y in rows]
    adjusted = holm([t.p for _, t in tests])
    head = (
        f"| {lead} | means over these {unit} | mean difference | 95% interval (t) | p (t-test) | wins / losses / ties "
    )
    head += f"| p (sign test) | p (t-test, Holm over {len(rows)}) | verdict |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (cells, x, y), (paired, t), p in zip(rows, tests, adjusted, strict=True):
        lines.append(f"| {cells} | {_means(x, y)} | {paired} | {p:.3g} | {_verdict(t)} |")
    return lines


def compare_designs(designs: list[Design], reference: Design, arms: tuple[str, ...] = DESIGN_ARMS) -> str:
    """Markdown: one row per design (mask, effective ratio, target, pretraining steps, pool, per arm mean +- SE and
    seeds), then per arm each design minus the reference, paired over their common seeds (at least 2): both means
    over those seeds (the rows above average every seed each ran), mean difference, 95% t interval, p-value, sign
    test, the p-value adjusted for the table's rows (Holm) and the verdict ("better" / "worse" only when the
    unadjusted interval excludes 0: read it beside the adjusted p-value)."""
    everyone = _with_reference_first(designs, reference)
    others = {d.name: other_options(d, reference) for d in everyone}
    extra = any(others.values())  # a column only where some design differs in an option the others do not show
    head = "| design | mask | ratio asked / effective | target | steps | pool clips | "
    head += "other options | " if extra else ""
    head += " | ".join(f"{a} (seeds)" for a in arms) + " |"
    lines = [head, "|" + "---|" * (6 + extra + len(arms))]
    for d in everyone:
        ratio = "-" if d.mask_ratio is None else f"{d.mask_ratio:g} / {d.effective_mask_ratio:.3f}"
        cells = []
        for arm in arms:
            scores = list(test_scores(d.results, arm).values())
            cells.append(f"{_cell(scores)} ({len(scores)})")
        name = f"**{d.name}** (reference)" if d is reference else d.name
        pool = f"{d.pool_clips or '-'}" + (f" ({d.pool_domain})" if d.pool_domain not in (None, "same") else "")
        pretraining = f"{d.mask or '-'} | {ratio} | {d.target or '-'} | {d.steps or '-'} | {pool}"
        if extra:
            pretraining += " | " + (", ".join(f"{k} {v}" for k, v in others[d.name].items()) or "-")
        lines.append(f"| {name} | {pretraining} | " + " | ".join(cells) + " |")
    rows = []
    for arm in arms:
        ref = test_scores(reference.results, arm)
        for d in everyone[1:]:
            mine = test_scores(d.results, arm)
            seeds = [s for s in mine if s in ref]
            if len(seeds) >= 2:
                lead = f"{arm} | {d.name} - {reference.name} | {len(seeds)}"
                rows.append((lead, [mine[s] for s in seeds], [ref[s] for s in seeds]))
    lines += ["", *_paired_table("arm | design - reference | seeds", "seeds", rows)]
    return "\n".join(lines) + "\n"


FACTORS = {
    "mask": (lambda d: d.mask, lambda d: d.mask_ratio),
    "ratio": (lambda d: d.mask_ratio, lambda d: d.mask),
}
"""The masking grid's two factors: per factor, a design's level of it and its level of the other (what pairs match)."""
FACTOR_TITLES = {
    "mask": "Mask types, each pair over every ratio both ran (asked ratios; the effective ones are in the table above):",
    "ratio": "Asked mask ratios, each pair over every mask type that ran both:",
}


def compare_factor(designs: list[Design], factor: str, arms: tuple[str, ...] = DESIGN_ARMS) -> str:
    """Markdown: the main effect of one factor of a masking grid, `"mask"` (type) or `"ratio"` (asked ratio): each
    pair of its levels, paired over every (level of the other factor, seed) that both ran. Tube against random
    masking over three ratios and three seeds is 9 pairs where each cell's own comparison has 3. Mask types come in
    the order the designs first show them, ratios from the highest.

    Raises:
        ValueError: for another factor, or when two designs are the same cell of the grid.
    """
    if factor not in FACTORS:
        raise ValueError(f"factor {factor!r}: one of {', '.join(FACTORS)}")
    level_of, match_of = FACTORS[factor]
    cells: dict[tuple, Design] = {}
    for d in designs:
        if level_of(d) is None or match_of(d) is None:
            continue
        key = (level_of(d), match_of(d))
        if key in cells:
            raise ValueError(f"{cells[key].name} and {d.name} are the same cell ({d.mask} at {d.mask_ratio:g})")
        cells[key] = d
    levels = list(dict.fromkeys(level for level, _ in cells))
    if factor == "ratio":
        levels.sort(reverse=True)
    other = "ratios" if factor == "mask" else "masks"
    rows = []
    for arm in arms:
        for i, a in enumerate(levels):
            for b in levels[i + 1 :]:
                x, y, matched = [], [], []
                matches = list(dict.fromkeys(m for level, m in cells if level == a))
                for match in sorted(matches) if factor == "mask" else matches:  # ratios ascending
                    if (b, match) not in cells:
                        continue
                    mine, theirs = (test_scores(cells[(lv, match)].results, arm) for lv in (a, b))
                    seeds = [s for s in mine if s in theirs]
                    x += [mine[s] for s in seeds]
                    y += [theirs[s] for s in seeds]
                    matched += [f"{match:g}" if isinstance(match, float) else str(match)] if seeds else []
                if len(x) < 2:
                    continue
                name = f"{a:g} - {b:g}" if factor == "ratio" else f"{a} - {b}"
                rows.append((f"{arm} | {name} | {', '.join(matched)} | {len(x)}", x, y))
    return "\n".join(_paired_table(f"arm | {factor}: first - second | {other} matched | pairs", "pairs", rows)) + "\n"


BASELINES = {"pretrained": ("scratch", "handmade"), "pretrained_probe": ("random_probe", "handmade")}
"""Per design arm, the pretraining-free arms of the reference folder drawn beside it as horizontal lines."""


def design_axis(designs: list[Design]) -> str:
    """What the plot's x axis shows: the effective mask ratio where one mask type was run at several ratios, the pool
    size where one pool domain was run at several sizes, otherwise one position per design."""
    ratios: dict[tuple, set] = {}
    pools: dict[str | None, set] = {}
    for d in designs:
        ratios.setdefault((d.mask, d.target, d.steps), set()).add(d.effective_mask_ratio)
        pools.setdefault(d.pool_domain or "same", set()).add(d.pool_clips)
    if any(len(r - {None}) > 1 for r in ratios.values()):
        return "ratio"
    if any(len(p - {None}) > 1 for p in pools.values()):
        return "pool"
    return "design"


def plot_designs(
    designs: list[Design], path: Path, baselines: Results | None = None, arms: tuple[str, ...] = DESIGN_ARMS
) -> None:
    """Test accuracy (mean +- SE) of each design, one panel per arm, on the seeds that the designs after the first
    (the reference) ran, so that every point and line averages the same seeds. The x axis is what the designs vary
    ([design_axis][tubemask.eval.designs.design_axis]): the *effective* mask ratio, one line per mask type (and
    target and step count, where designs differ in those); or the pool size (clips pretrained on, log scale), one
    line per pool domain; or one position per design. `baselines` (the reference folder's pretraining-free arms)
    are drawn as dashed horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = {s for d in designs[1:] for s in d.results} or {s for d in designs for s in d.results}

    def scores(results: Results, arm: str) -> list[float]:
        return [v for s, v in test_scores(results, arm).items() if s in seeds]

    axis = design_axis(designs)
    several_targets = len({d.target for d in designs}) > 1
    several_steps = len({d.steps for d in designs}) > 1
    lines: dict[str, list[tuple[float, Design]]] = {}
    for i, d in enumerate(designs):
        if axis == "ratio" and d.effective_mask_ratio is not None:
            label = (d.mask or "-") + (f", {d.target}" if several_targets else "")
            label += f", {d.steps} steps" if several_steps else ""
            lines.setdefault(label, []).append((d.effective_mask_ratio, d))
        elif axis == "pool" and d.pool_clips is not None:
            lines.setdefault(f"{d.pool_domain or 'same'} domain", []).append((float(d.pool_clips), d))
        elif axis == "design":
            lines.setdefault(d.name, []).append((float(i), d))
    fig, axes = plt.subplots(1, len(arms), figsize=(5 * len(arms), 4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        for label, points in sorted(lines.items()):
            points = sorted((x, scores(d.results, arm)) for x, d in points)
            points = [(x, v) for x, v in points if v]
            if not points:
                continue
            stats = [mean_se(v) for _, v in points]
            errors = [0.0 if math.isnan(se) else se for _, se in stats]
            ax.errorbar([x for x, _ in points], [m for m, _ in stats], yerr=errors, marker="o", capsize=3, label=label)
        for k, other in enumerate(BASELINES.get(arm, ()) if baselines else ()):
            values = scores(baselines, other)
            if values:
                ax.axhline(mean_se(values)[0], color=f"C{7 + k}", linestyle="--", label=other.replace("_", " "))
        if axis == "ratio":
            ax.set_xlabel("effective mask ratio")
        elif axis == "pool":
            ax.set_xscale("log")
            ticks = sorted({x for points in lines.values() for x, _ in points})
            ax.set_xticks(ticks, [f"{x:.0f}" for x in ticks], minor=False)
            ax.set_xticks([], minor=True)
            ax.set_xlabel("clips pretrained on")
        else:
            ax.set_xticks(range(len(designs)), [d.name for d in designs], rotation=30, ha="right")
        ax.set_ylabel(f"test top-1 (seeds {', '.join(map(str, sorted(seeds)))})" if len(seeds) <= 5 else "test top-1")
        ax.set_title(arm.replace("_", " "))
        if ax.lines:
            ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tubemask.eval.designs", description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders, one design each")
    parser.add_argument("--reference", type=Path, required=True, help="the study folder the others are paired with")
    parser.add_argument("--output", type=Path, required=True, help="writes OUTPUT.md and OUTPUT.png")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        help="choose every design's fine-tuned arm again on validation among these learning rates only",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=sorted({*DESIGN_ARMS, *(a for pair in BASELINES.values() for a in pair)}),
        default=list(DESIGN_ARMS),
        help="the arms to compare (default: the two that depend on pretraining); e.g. `scratch` for a fine-tuning "
        "option run on the scratch arm alone",
    )
    parser.add_argument(
        "--factors",
        nargs="+",
        choices=sorted(FACTORS),
        default=[],
        help="add each factor's main effect over a masking grid, paired over the other factor and the seeds",
    )
    args = parser.parse_args(argv)
    try:
        arms = tuple(args.arms)
        reference = read_design(args.reference, arms)
        designs = [read_design(folder, arms) for folder in args.studies]
        if args.lrs:
            reference = restrict_learning_rates(reference, tuple(args.lrs))
            designs = [restrict_learning_rates(d, tuple(args.lrs)) for d in designs]
        everyone = _with_reference_first(designs, reference)
        table = compare_designs(designs, reference, arms)
        for factor in args.factors:
            table += f"\n{FACTOR_TITLES[factor]}\n\n" + compare_factor(everyone, factor, arms)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    if args.lrs:
        grid = ", ".join(f"{lr:g}" for lr in sorted(set(args.lrs)))
        table = f"The pretrained arm of every design is chosen on validation among lr {grid} only.\n\n" + table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output.with_suffix(".md")) as tmp:
        Path(tmp).write_text(table)
    baselines = load_results(args.reference, tuple(sorted({a for arms in BASELINES.values() for a in arms})))
    plot_designs(everyone, args.output.with_suffix(".png"), baselines, arms)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
