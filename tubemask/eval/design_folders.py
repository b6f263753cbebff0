"""A study folder read as one pretraining design: its result files, what its pretraining was and how its options
differ from another's. [tubemask.eval.designs][] compares the designs.
"""

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tubemask.eval.data_efficiency import FinetuneOptions, PretrainOptions
from tubemask.eval.study import Results, best_lr_run, differing_options, load_results

__all__ = ["DESIGN_ARMS", "Design", "read_design", "other_options", "restrict_learning_rates"]

DESIGN_ARMS = ("pretrained", "pretrained_probe")
"""The arms a pretraining design changes (the others are the same in every design)."""


@dataclass
class Design:
    """One study folder: its name, its result files and what its pretraining was (the mask and pool from the seeds'
    `pretrain.json`; the target, step count and pool domain from the folder's `config.json`; `None` where a file
    lacks them)."""

    name: str
    results: Results
    mask: str | None
    mask_ratio: float | None
    effective_mask_ratio: float | None
    pool_clips: int | None
    target: str | None = None
    steps: int | None = None
    pool_domain: str | None = None
    config: dict[str, dict] = field(default_factory=dict)
    """The folder's `config.json` sections of pretraining and fine-tuning options (empty without one)."""


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
    options = json.loads(config.read_text()) if config.is_file() else {}
    pretrain, data = options.get("pretrain", {}), options.get("data", {})
    return Design(
        folder.name,
        results,
        mask,
        ratio,
        effective,
        pool,
        pretrain.get("target"),
        pretrain.get("steps"),
        data.get("pool_domain"),
        {section: options[section] for section in OPTION_SECTIONS if section in options},
    )


OPTION_SECTIONS = ("pretrain", "finetune")
"""The configuration sections whose options [other_options][tubemask.eval.design_folders.other_options] reports."""
SHOWN_OPTIONS = frozenset(
    {"pretrain.mask", "pretrain.mask_ratio", "pretrain.target", "pretrain.steps", "pretrain.teacher"}
    | {"finetune.pretrained_lrs"}
)
"""Options the table shows in their own columns (or that `--lrs` makes alike, or that name a file per seed)."""


def other_options(design: Design, reference: Design) -> dict[str, object]:
    """The pretraining and fine-tuning options in which `design` differs from `reference`, beside those the table
    has columns for: `section.name` -> the design's value. An option a folder's `config.json` lacks counts at the
    study's current default ([differing_options][tubemask.eval.study.differing_options])."""
    sections = {"pretrain": asdict(PretrainOptions()), "finetune": asdict(FinetuneOptions())}
    defaults = json.loads(json.dumps(sections, default=str))  # as a config.json holds them: tuples as lists
    changed = differing_options(design.config, reference.config, OPTION_SECTIONS, defaults=defaults)
    ours = {s: {**defaults[s], **design.config.get(s, {})} for s in OPTION_SECTIONS}
    found = {f"{s}.{k}": ours[s].get(k) for s, names in changed.items() for k in names}
    return {k: v for k, v in sorted(found.items()) if k not in SHOWN_OPTIONS}


def restrict_learning_rates(design: Design, lrs: tuple[float, ...], arm: str = "pretrained") -> Design:
    """The design with `arm` chosen again on validation among `lrs` only, from the `runs` its result files keep (the
    study's rule: the best validation accuracy, ties to the smaller learning rate), so that designs fine-tuned over
    different grids are compared on the grid they share.

    Raises:
        ValueError: when a result file of `arm` has no run at one of `lrs` (naming the file and the rates it has).
    """
    wanted = sorted(set(lrs))
    results = {}
    for seed, arms in design.results.items():
        results[seed] = dict(arms)
        if arm not in arms:
            continue
        runs = [r for r in arms[arm].get("runs", []) if any(math.isclose(r["lr"], lr) for lr in wanted)]
        if len(runs) != len(wanted):
            have = sorted(r["lr"] for r in arms[arm].get("runs", []))
            raise ValueError(
                f"{design.name}/seed{seed}/{arm}.json: fine-tuned at lr {have}, not at every one of --lrs {wanted}"
            )
        chosen = best_lr_run(runs)
        results[seed][arm] = {**arms[arm], "runs": runs, "chosen": chosen}
    return replace(design, results=results)
