"""Does VideoMAE pretraining make a ViT data-efficient? A seeded, pre-registered comparison on synthetic motion clips.

    python recipes/data_efficiency.py --quick          # CI-sized: a few minutes on 2 CPU cores
    python recipes/data_efficiency.py --threads 1 --seeds 100 102 --output-dir docs/results/data_efficiency/confirm
    python recipes/data_efficiency.py --summarise-only --output-dir docs/results/data_efficiency/confirm

Per seed: render disjoint labelled, validation and test sets of the task ([tubemask.data.scenes][] by default) and
the pretraining pool (the labelled clips themselves, VideoMAE's setting, or more with `--data.pool-factor`); pretrain
a small VideoMAE on the pool, logging the loss against its floor, token statistics and a linear probe; then run the
arms on the same splits: `pretrained` and `scratch` (fine-tuning over each arm's lr grid, the best validation epoch
and lr kept), `pretrained_probe`, `random_probe` and `handmade` (linear classifiers, weight decay chosen on
validation). The test set is scored once per arm, after every choice.

Each (seed, arm) writes `seed{N}/{arm}.json` and is skipped when it exists, so a study resumes where it stopped;
`summary.md` and the plot are rebuilt from the files (per arm mean and SE; paired t-tests with 95% intervals and
sign tests). Nothing is downloaded. The pieces live in [tubemask.eval.data_efficiency][], [tubemask.eval.arms][] and [tubemask.eval.study][];
the frozen design and its plan in docs/data_efficiency.md.
"""

import dataclasses
import functools
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro

from tubemask import videomae_classifier
from tubemask.atomic import atomic_path
from tubemask.eval.arms import choose_learning_rate, frozen_features, probe_arm, train_classifier
from tubemask.eval.data_efficiency import (
    PIXEL_MEAN,
    PIXEL_STD,
    DataConfig,
    FinetuneOptions,
    ModelConfig,
    PretrainOptions,
    Split,
    effective_mask_ratio,
    make_loss,
    make_masker,
    make_splits,
    make_target,
    normalise,
    vit_size,
)
from tubemask.eval.diagnostics import ProbeSet, plot_diagnostics, probe_encoder
from tubemask.eval.motion_features import motion_features
from tubemask.eval.study import (
    Results,
    differing_options,
    load_results,
    plot_study,
    result_path,
    summarise,
    with_baselines,
    write_json,
)
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.masking import draw_mask
from tubemask.models import videomae_pretrain
from tubemask.motion_aware import MotionAwareMasker
from tubemask.train.optim import build_adamw
from tubemask.train.schedule import WarmupCosine

Arm = Literal["pretrained", "scratch", "pretrained_probe", "random_probe", "handmade"]
ARMS: tuple[Arm, ...] = ("pretrained", "scratch", "pretrained_probe", "random_probe", "handmade")


@dataclass
class ExperimentConfig:
    """The arms of a data-efficiency study, over several seeds, one result file per (seed, arm)."""

    output_dir: Path = Path("outputs/data_efficiency")
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[Arm, ...] = ARMS
    """Arms to run (each needs its own result file; the pretraining runs once per seed for the arms that need it)."""
    quick: bool = False
    """CI-sized run: tiny sets, short pretraining and fine-tuning, one learning rate per arm."""
    stage: Literal["all", "pretrain"] = "all"
    """`pretrain` stops after pretraining and its diagnostics (for scouting designs)."""
    summarise_only: bool = False
    """Rebuild `summary.md` and the plot from the result files in `--output-dir`; run nothing."""
    threads: int = 2
    """`torch.set_num_threads`."""
    baselines_dir: Path | None = None
    """Take the arms that do not depend on pretraining (`scratch`, `random_probe`, `handmade`) from the result files
    of another study with the same task, splits, model and fine-tuning options (checked against its `config.json`),
    e.g. when comparing pretraining designs; they are neither rerun nor copied."""
    pretrained_dir: Path | None = None
    """Take each seed's encoder from `DIR/seed{N}/pretrained.pt` of an earlier study instead of pretraining (for
    fine-tuning-side comparisons such as label budgets)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainOptions = field(default_factory=PretrainOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)


def apply_quick(cfg: ExperimentConfig) -> ExperimentConfig:
    """Shrink a configuration to minutes (keeps every code path: pretraining, probes, every arm, the choices)."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, labels_per_class=4, val_per_class=4, test_per_class=8, probe_per_class=6, pool_factor=4.0
        ),
        pretrain=dataclasses.replace(cfg.pretrain, steps=40, batch_size=16, warmup_steps=5, probe_every=20),
        finetune=dataclasses.replace(
            cfg.finetune,
            epochs=4,
            batch_size=8,
            warmup_epochs=1,
            pretrained_lrs=cfg.finetune.pretrained_lrs[1:2],
            scratch_lrs=cfg.finetune.scratch_lrs[2:3],
            probe_weight_decays=cfg.finetune.probe_weight_decays[:2],
        ),
    )


def make_data(cfg: ExperimentConfig, seed: int) -> dict[str, Split]:
    """This seed's splits ([make_splits][tubemask.eval.data_efficiency.make_splits] of `cfg.data`)."""
    return make_splits(cfg.data, seed)


def probe_set(data: dict[str, Split]) -> ProbeSet:
    return ProbeSet(
        data["probe_train"].clips, data["probe_train"].labels, data["probe_test"].clips, data["probe_test"].labels
    )


def pretrain(cfg: ExperimentConfig, data: dict[str, Split], seed: int, log) -> tuple[dict, list[dict]]:
    """Masked-autoencoder pretraining; returns the model state dict and the diagnostic history."""
    p, m = cfg.pretrain, cfg.model
    torch.manual_seed(seed)
    loss_fn = make_loss(p)
    model = videomae_pretrain(
        vit_size(m),
        tubelet_size=m.tubelet_size,
        patch_size=m.patch_size,
        target=make_target(p, m),
        loss=loss_fn,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    optimizer = build_adamw(model, lr=p.lr, weight_decay=p.weight_decay, betas=(0.9, 0.95))
    schedule = WarmupCosine(total_steps=p.steps, warmup_steps=p.warmup_steps, base_lr=p.lr, min_lr=p.lr * 0.01)
    masker = make_masker(p, tokenizer=model.tokenizer)
    gen = torch.Generator().manual_seed(seed)
    pool = data["pool"].clips

    def encode(clips: torch.Tensor) -> torch.Tensor:
        model.eval()
        return model.forward_features(normalise(clips))

    probes = probe_set(data)
    time_slots = cfg.data.frames // m.tubelet_size

    history: list[dict] = []
    window: list[tuple[float, float]] = []
    start = time.perf_counter()
    for step in range(p.steps + 1):
        if step % p.probe_every == 0 or step == p.steps:
            row = {"step": step, **probe_encoder(encode, probes, time_slots=time_slots)}
            if window:
                row["loss"] = statistics.fmean(x for x, _ in window)
                row["zero_floor"] = statistics.fmean(y for _, y in window)
                window.clear()
            row["seconds"] = round(time.perf_counter() - start, 1)
            history.append(row)
            log("pretrain " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if step == p.steps:
            break
        model.train()
        schedule.step(optimizer, step)
        idx = torch.randint(pool.shape[0], (p.batch_size,), generator=gen)
        video = normalise(pool[idx])
        if p.flip:
            flip = torch.rand(p.batch_size, generator=gen) < 0.5
            video = torch.where(flip.view(-1, 1, 1, 1, 1), video.flip(-1), video)
        grid = model.grid(video.shape)
        if isinstance(masker, MotionAwareMasker):
            mask, decoder_mask = masker.decoder_mask(p.batch_size, grid, generator=gen, video=video)
            out = model(video, mask, decoder_mask=decoder_mask, num_queried=masker.num_queried(grid))
        else:
            out = model(video, draw_mask(masker, p.batch_size, grid, generator=gen, video=video))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # the floor: this loss of predicting zeros (the targets' mean square under MSE)
            floor = loss_fn(torch.zeros_like(out.target), out.target)
        window.append((out.loss.item(), floor.item()))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def finetune(
    cfg: ExperimentConfig, data: dict[str, Split], seed: int, lr: float, pretrained: dict | None
) -> dict[str, float]:
    """Train a classifier (pretrained encoder or scratch) on the labelled set, keep the epoch with the best
    validation accuracy, and report its train / val / test accuracy. With `--finetune.motion-drop`, the classifier
    sees each clip's most moving cubes only, in training and evaluation."""
    f, m = cfg.finetune, cfg.model
    torch.manual_seed(seed)
    model = videomae_classifier(
        vit_size(m),
        num_classes=cfg.data.num_classes,
        tubelet_size=m.tubelet_size,
        patch_size=m.patch_size,
        drop_path_rate=f.drop_path,
        head_dropout=f.head_dropout,
        selector=MotionAwareMasker(f.motion_drop) if f.motion_drop > 0 else None,
    )
    if pretrained is not None:
        load_pretrained_encoder(model, pretrained, strict=True)
    return train_classifier(model, data, f, lr=lr, seed=seed, num_layers=m.depth)


COMPARISONS = (
    ("pretrained", "scratch"),
    ("pretrained", "handmade"),
    ("pretrained", "random_probe"),
    ("pretrained_probe", "random_probe"),
    ("scratch", "handmade"),
)
"""Paired comparisons reported in the summary (first minus second)."""


PRETRAINING_FREE = ("scratch", "random_probe", "handmade")
"""Arms whose result does not depend on the pretraining design (same splits, model and fine-tuning options)."""
PRETRAINED_ONLY = ("pool_factor", "pool_domain", "pretrained_lrs")
"""Options that only the pretraining-dependent arms read (a `--baselines-dir` study may differ in them): the pool and
the pretrained arm's learning-rate grid."""


def as_json(cfg: ExperimentConfig) -> dict:
    """The configuration as `config.json` holds it."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def check_baselines(cfg: ExperimentConfig) -> None:
    """Refuse a `--baselines-dir` whose study rendered other splits or trained another model."""
    path = cfg.baselines_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--baselines-dir: {path} does not exist (not a study folder)")
    theirs, ours = json.loads(path.read_text()), as_json(cfg)
    sections = ("data", "model", "finetune")
    defaults = as_json(ExperimentConfig())
    for section, changed in differing_options(theirs, ours, sections, PRETRAINED_ONLY, defaults).items():
        raise ValueError(f"--baselines-dir {cfg.baselines_dir}: its {section} options differ in {changed}")


def study_results(cfg: ExperimentConfig) -> dict[int, dict[str, dict]]:
    """This study's result files, with the pretraining-free arms of `--baselines-dir` where this study has none."""
    results = load_results(cfg.output_dir, ARMS)
    if cfg.baselines_dir is None:
        return results
    return with_baselines(results, load_results(cfg.baselines_dir, PRETRAINING_FREE), cfg.seeds)


def summary_table(cfg: ExperimentConfig, results: Results) -> str:
    """`summary.md`: the per-arm table and the paired comparisons of `results` (this study's, `study_results`)."""
    return summarise(results, ARMS, COMPARISONS, chance=1 / cfg.data.num_classes)


def write_summary(cfg: ExperimentConfig) -> str:
    """Rebuild `summary.md` and `data_efficiency.png` from the result files in `cfg.output_dir`."""
    results = study_results(cfg)
    histories = {}
    for folder in cfg.output_dir.glob("seed*/pretrain.json"):
        histories[int(folder.parent.name[4:])] = json.loads(folder.read_text())["history"]
    table = summary_table(cfg, results)
    with atomic_path(cfg.output_dir / "summary.md") as tmp:
        Path(tmp).write_text(table)
    if results or histories:
        chance = 1 / cfg.data.num_classes
        plot_study(results, histories, ARMS, chance=chance, path=cfg.output_dir / "data_efficiency.png")
    return table


def pretrained_state(cfg: ExperimentConfig, data: dict[str, Split], seed: int, log) -> dict:
    """This seed's pretrained weights: from `--pretrained-dir`, from this study's `seed{N}/pretrained.pt`, or by
    pretraining now (then saved with its history)."""
    folder = cfg.output_dir / f"seed{seed}"
    if cfg.pretrained_dir is not None:
        source = cfg.pretrained_dir / f"seed{seed}" / "pretrained.pt"
        if not source.is_file():
            raise FileNotFoundError(f"--pretrained-dir: {source} does not exist (run that seed's pretraining first)")
        log(f"seed {seed}: pretrained encoder from {source}")
        return torch.load(source, map_location="cpu", weights_only=True)
    if (folder / "pretrained.pt").is_file():
        return torch.load(folder / "pretrained.pt", map_location="cpu", weights_only=True)
    t0 = time.perf_counter()
    state, history = pretrain(cfg, data, seed, log)
    with atomic_path(folder / "pretrained.pt") as tmp:
        torch.save(state, tmp)
    ratio = effective_mask_ratio(cfg.pretrain, cfg.model, cfg.data)
    log(f"seed {seed}: {cfg.pretrain.mask} masking, ratio {cfg.pretrain.mask_ratio:g} asked, {ratio:.4g} effective")
    summary = {"seed": seed, "mask": cfg.pretrain.mask, "mask_ratio": cfg.pretrain.mask_ratio}
    summary |= {"effective_mask_ratio": ratio, "pool_clips": int(data["pool"].clips.shape[0])}
    write_json(folder / "pretrain.json", {**summary, "history": history, "seconds": round(time.perf_counter() - t0, 1)})
    plot_diagnostics(history, folder / "pretrain.png", title=f"pretraining, seed {seed}")
    return state


def main(cfg: ExperimentConfig) -> dict[int, dict[str, dict]]:
    if cfg.quick:
        cfg = apply_quick(cfg)
    if not cfg.seeds:
        raise ValueError("--seeds: give at least one seed")
    if not cfg.arms:
        raise ValueError(f"--arms: give at least one of {', '.join(ARMS)}")
    if not cfg.finetune.pretrained_lrs or not cfg.finetune.scratch_lrs:
        raise ValueError("--finetune.pretrained-lrs / --finetune.scratch-lrs: give at least one learning rate each")
    if not cfg.finetune.probe_weight_decays:
        raise ValueError("--finetune.probe-weight-decays: give at least one weight decay")
    if not 0.0 <= cfg.finetune.motion_drop < 1.0:
        raise ValueError(f"--finetune.motion-drop {cfg.finetune.motion_drop}: the share dropped must be in [0, 1)")
    torch.set_num_threads(cfg.threads)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.baselines_dir is not None:
        check_baselines(cfg)
    if cfg.summarise_only:
        print(write_summary(cfg))
        return study_results(cfg)
    log_file = (cfg.output_dir / "log.txt").open("a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    config = dataclasses.asdict(cfg)
    write_json(cfg.output_dir / "config.json", config)
    log(f"config {json.dumps(config, default=str)}")
    began = time.perf_counter()
    lrs = {"pretrained": cfg.finetune.pretrained_lrs, "scratch": cfg.finetune.scratch_lrs}
    for seed in cfg.seeds:
        todo = [arm for arm in cfg.arms if not result_path(cfg.output_dir, seed, arm).is_file()]
        if cfg.baselines_dir is not None:
            todo = [
                a for a in todo if a not in PRETRAINING_FREE or not result_path(cfg.baselines_dir, seed, a).is_file()
            ]
        if cfg.stage == "pretrain":
            todo = []
        needs_pretraining = cfg.stage == "pretrain" or any(a in ("pretrained", "pretrained_probe") for a in todo)
        if not todo and not needs_pretraining:
            log(f"seed {seed}: every arm has its result file; skipped")
            continue
        t0 = time.perf_counter()
        data = make_data(cfg, seed)
        log(f"seed {seed}: data rendered in {time.perf_counter() - t0:.1f} s")
        state = pretrained_state(cfg, data, seed, log) if needs_pretraining else None
        for arm in todo:
            t0 = time.perf_counter()
            if arm in ("pretrained", "scratch"):
                weights = state if arm == "pretrained" else None
                run = functools.partial(finetune, cfg, data, seed, pretrained=weights)
                result = choose_learning_rate(run, lrs[arm], log, prefix=f"seed {seed} {arm} ")
            else:
                features = motion_features
                if arm != "handmade":
                    weights = state if arm == "pretrained_probe" else None
                    features = functools.partial(frozen_features, cfg.model, cfg.data.frames, weights, seed)
                result = probe_arm(features, data, cfg.finetune.probe_weight_decays, cfg.data.num_classes)
            result = {"seed": seed, "arm": arm, **result, "seconds": round(time.perf_counter() - t0, 1)}
            write_json(result_path(cfg.output_dir, seed, arm), result)
            log(f"seed {seed} {arm}: chosen {result['chosen']}")
    table = write_summary(cfg)
    log("\n" + table)
    log(f"done in {time.perf_counter() - began:.0f} s; results in {cfg.output_dir}")
    log_file.close()
    return study_results(cfg)


if __name__ == "__main__":
    main(tyro.cli(ExperimentConfig))
