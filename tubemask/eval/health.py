"""Is a pretraining run learning? A verdict from its `metrics.jsonl`.

The pretraining recipes log, per step, the loss and two floors: `zero_floor` (the loss of predicting zeros) and
`mean_floor` (the loss of predicting the targets' mean, the best constant). Every few hundred steps they log a linear
probe of frozen features (`probe_per_time`, `probe_mean_pool`) and the participation ratio of the clip tokens
(`clip_token_participation_ratio`: about 1 when every token points the same way). What healthy and broken runs look
like in those figures:

| verdict | what the log shows |
|---|---|
| `learning` | the loss well under its best-constant floor (below `0.9 x mean_floor` over the last tenth of the steps), the tokens spread (participation ratio >= 2), the probe not falling |
| `barely learning` | the loss under the floor by less than 10% |
| `on the floor` | the loss within 2% of the floor: the model predicts a constant, the pretext task is not being solved |
| `collapsed` | participation ratio under 2: the tokens carry one direction, whatever the loss does |
| `diverged` | a non-finite loss |
| `too early` | fewer than 50 logged steps |

A falling probe (by 0.05 or more from the first to the last) is reported as a warning beside the verdict: the
objective is being solved in a way that does not make the features more linearly readable.

`python -m tubemask.eval.health RUN_DIR_OR_METRICS_JSONL` prints the figures, the reasons and, as its last line, one
JSON object; it exits 0 for `learning`, 1 for any other verdict and 2 for a file it cannot read.
"""

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Health", "check_run", "read_metrics"]

FLOOR_MARGIN = 0.9
"""Below this share of the floor, the loss counts as learning."""
ON_FLOOR = 0.98
"""At or above this share of the floor, the loss counts as on the floor."""
MIN_PARTICIPATION = 2.0
"""Below this participation ratio the tokens count as collapsed."""
PROBE_DROP = 0.05
"""A probe that falls by this much from the first to the last reading earns a warning."""
MIN_STEPS = 50


@dataclass
class Health:
    """The verdict on a run, the reasons for it, warnings, and the figures it read."""

    verdict: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True when the run is learning."""
        return self.verdict == "learning"


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a `metrics.jsonl` (or of `DIR/metrics.jsonl`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object, naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (a run's output folder holds metrics.jsonl)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: a JSON object per line expected, got {type(record).__name__}")
        records.append(record)
    return records


def check_run(records: list[dict]) -> Health:
    """The verdict on a run from its metrics records (see the module docs for the rules)."""
    steps = [r for r in records if "loss" in r]
    probes = [r for r in records if "probe_per_time" in r or "probe_mean_pool" in r]
    health = Health("too early")
    if any(not math.isfinite(float(r["loss"])) for r in steps):
        first = next(r for r in steps if not math.isfinite(float(r["loss"])))
        health.verdict = "diverged"
        health.reasons.append(f"the loss is {first['loss']} at step {first.get('step')}")
        return health
    if len(steps) < MIN_STEPS:
        health.reasons.append(f"{len(steps)} logged steps; at least {MIN_STEPS} are needed for a verdict")
        return health
    tail = steps[-max(1, len(steps) // 10) :]
    head = steps[: max(1, len(steps) // 10)]
    loss = statistics.fmean(float(r["loss"]) for r in tail)
    floor_name = "mean_floor" if all("mean_floor" in r for r in tail) else "zero_floor"
    health.figures |= {"steps": float(len(steps)), "loss_first": statistics.fmean(float(r["loss"]) for r in head)}
    health.figures["loss_last"] = loss
    if all(floor_name in r for r in tail):
        floor = statistics.fmean(float(r[floor_name]) for r in tail)
        health.figures[floor_name] = floor
        health.figures["loss_over_floor"] = loss / floor if floor > 0 else math.inf
    ratio = health.figures.get("loss_over_floor")
    participation = [
        float(r["clip_token_participation_ratio"]) for r in probes if "clip_token_participation_ratio" in r
    ]
    probe_key = "probe_per_time" if any("probe_per_time" in r for r in probes) else "probe_mean_pool"
    probe = [float(r[probe_key]) for r in probes if probe_key in r]
    if participation:
        health.figures["participation_ratio_last"] = participation[-1]
    if probe:
        health.figures |= {f"{probe_key}_first": probe[0], f"{probe_key}_last": probe[-1]}
        if len(probe) > 1 and probe[-1] <= probe[0] - PROBE_DROP:
            health.warnings.append(
                f"the probe fell from {probe[0]:.3f} to {probe[-1]:.3f}: the objective is solved without making the "
                "features more linearly readable"
            )
    if participation and participation[-1] < MIN_PARTICIPATION:
        health.verdict = "collapsed"
        health.reasons.append(
            f"participation ratio {participation[-1]:.2f} < {MIN_PARTICIPATION}: the tokens carry one direction"
        )
    elif ratio is not None and ratio >= ON_FLOOR:
        health.verdict = "on the floor"
        health.reasons.append(
            f"the loss ({loss:.4g}) is {ratio:.2f} of its {floor_name} ({health.figures[floor_name]:.4g}) over the last "
            "tenth of the steps: the model predicts a constant"
        )
    elif ratio is not None and ratio >= FLOOR_MARGIN:
        health.verdict = "barely learning"
        health.reasons.append(f"the loss is {ratio:.2f} of its {floor_name}: under it, but by less than 10%")
    elif ratio is None:
        health.verdict = "learning" if loss < health.figures["loss_first"] else "on the floor"
        health.reasons.append("no floor logged: judged by the loss falling from the first to the last tenth")
    else:
        health.verdict = "learning"
        health.reasons.append(f"the loss is {ratio:.2f} of its {floor_name}")
        if participation:
            health.reasons.append(f"the tokens spread (participation ratio {participation[-1]:.1f})")
    return health


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tubemask.eval.health", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run's output folder or its metrics.jsonl")
    args = parser.parse_args(argv)
    try:
        health = check_run(read_metrics(args.run))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, value in health.figures.items():
        print(f"{name}: {value:.4g}")
    print(f"verdict: {health.verdict}")
    for reason in health.reasons:
        print(f"  because {reason}")
    for warning in health.warnings:
        print(f"  warning: {warning}")
    print(json.dumps(asdict(health)))
    return 0 if health.healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
