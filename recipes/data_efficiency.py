"""Does VideoMAE pretraining make a ViT data-efficient? An honest, seeded comparison on synthetic motion clips.

    python recipes/data_efficiency.py --quick          # CI-sized: a few minutes on 2 CPU cores
    python recipes/data_efficiency.py                  # the full run: 5 seeds, about an hour on 2 idle CPU cores
    python recipes/data_efficiency.py --stage pretrain --pretrain.target pixels   # scout one pretraining design

For each seed:

1. Render an unlabelled pool of motion clips (tubemask's synthetic generator, in memory; the classes differ only by
   how a textured object moves, see [tubemask.data.synthetic][]), a small labelled training set, a validation set
   and a test set, all disjoint.
2. Pretrain a small VideoMAE on the unlabelled pool with tube masking. Every `--pretrain.probe-every` steps log the
   loss next to its trivial floor (predicting zeros), token norm, participation ratio and a linear probe of frozen
   features ([tubemask.eval.diagnostics][]), so a collapse shows early.
3. Fine-tune two arms with the same classifier, the same budget and the same learning-rate grid: the pretrained
   encoder and a from-scratch encoder. Each arm picks its learning rate on the validation set; the test accuracy of
   that choice is the result.

The run writes `results.json` (every number of every run, the configuration and the timings), `summary.md` (the table:
mean and standard error over seeds per arm and of the paired difference, with a verdict) and `data_efficiency.png`
(test accuracy per arm and seed, pretraining curves). Nothing is downloaded.
"""

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import tyro

from tubemask import videomae_classifier
from tubemask.atomic import atomic_path
from tubemask.data import normalize_batch
from tubemask.data.synthetic import Background, render_motion_dataset
from tubemask.eval.diagnostics import ProbeSet, plot_diagnostics, probe_encoder
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.masking import RandomMasker, TubeMasker
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.train.optim import build_adamw
from tubemask.train.schedule import WarmupCosine

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass
class DataConfig:
    """The synthetic motion dataset."""

    num_classes: int = 10
    """The first classes of `tubemask.data.synthetic.MOTION_CLASSES` (10: moves, rotations, scaling, fades)."""
    frames: int = 8
    """Frames per clip."""
    size: int = 32
    """Frame height and width in pixels."""
    background: Background = "black"
    """`texture`, `flat` or `black` (see `render_motion_clip`)."""
    unlabelled: int = 4000
    """Clips in the unlabelled pretraining pool."""
    labels_per_class: int = 20
    """Labelled training clips per class for fine-tuning (the data-efficiency budget)."""
    val_per_class: int = 20
    """Validation clips per class (learning-rate choice)."""
    test_per_class: int = 50
    """Test clips per class."""
    probe_per_class: int = 30
    """Labelled clips per class for the pretraining linear probe (diagnostic only, train and test halves each)."""


@dataclass
class ModelConfig:
    """Encoder and decoder of the small ViT."""

    patch_size: int = 8
    tubelet_size: int = 2
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 2


@dataclass
class PretrainOptions:
    """Masked-autoencoder pretraining on the unlabelled pool."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1.5e-3
    """Peak AdamW learning rate (betas 0.9 / 0.95)."""
    weight_decay: float = 0.05
    warmup_steps: int = 150
    mask: Literal["tube", "random"] = "tube"
    mask_ratio: float = 0.75
    target: Literal["norm_pix", "pixels"] = "pixels"
    flip: bool = True
    """Random horizontal flips of pretraining clips (labels are not used, so direction classes are not confused)."""
    probe_every: int = 500
    """Diagnostics and linear probe every this many steps (and at the start and the end)."""


@dataclass
class FinetuneOptions:
    """Supervised training of both arms on the small labelled set."""

    epochs: int = 40
    batch_size: int = 16
    lrs: tuple[float, ...] = (5e-4, 1e-3, 2e-3)
    """The learning-rate grid each arm is tuned over (peak AdamW lr, betas 0.9 / 0.999)."""
    layer_decay: float = 0.75
    """Layer-wise lr decay for both arms (the scratch arm gets the same optimiser)."""
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    drop_path: float = 0.1
    head_dropout: float = 0.0
    label_smoothing: float = 0.1


@dataclass
class ExperimentConfig:
    """Pretrained vs from-scratch fine-tuning on a small labelled set, over several seeds."""

    output_dir: Path = Path("outputs/data_efficiency")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    quick: bool = False
    """CI-sized run: a small pool, short pretraining and fine-tuning, one learning rate per arm."""
    stage: Literal["all", "pretrain"] = "all"
    """`pretrain` stops after pretraining and its diagnostics (for scouting designs)."""
    arms: tuple[Literal["pretrained", "scratch"], ...] = ("pretrained", "scratch")
    """Fine-tuning arms to run; the table and verdict need both (scouting a pretraining design can skip `scratch`,
    whose result depends only on the data, model, fine-tuning options and seed)."""
    threads: int = 2
    """`torch.set_num_threads`."""
    pretrained_dir: Path | None = None
    """Reuse the pretrained encoders `pretrained_seed{N}.pt` of an earlier run's output directory instead of
    pretraining (for fine-tuning-side comparisons: layer decay, learning rates, label budgets)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainOptions = field(default_factory=PretrainOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)


def apply_quick(cfg: ExperimentConfig) -> ExperimentConfig:
    """Shrink a configuration to minutes (keeps every code path: pretraining, probes, both arms, lr choice)."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, unlabelled=256, labels_per_class=4, val_per_class=4, test_per_class=8, probe_per_class=6
        ),
        pretrain=dataclasses.replace(cfg.pretrain, steps=40, batch_size=16, warmup_steps=5, probe_every=20),
        finetune=dataclasses.replace(cfg.finetune, epochs=4, batch_size=8, warmup_epochs=1, lrs=cfg.finetune.lrs[1:2]),
    )


def normalise(clips: torch.Tensor) -> torch.Tensor:
    """uint8 `[b 3 t h w]` -> float, normalised with `MEAN` / `STD`."""
    return normalize_batch(clips, MEAN, STD)


def vit_size(m: ModelConfig) -> ViTSize:
    return ViTSize(m.embed_dim, m.depth, m.num_heads, m.decoder_dim, m.decoder_depth, m.decoder_heads)


@dataclass
class Split:
    clips: torch.Tensor
    labels: torch.Tensor


def make_data(cfg: ExperimentConfig, seed: int) -> dict[str, Split]:
    """Disjoint sets for one seed (each set has its own dataset seed, so no clip repeats across sets)."""
    d = cfg.data
    common = {
        "num_classes": d.num_classes,
        "num_frames": d.frames,
        "size": (d.size, d.size),
        "background": d.background,
    }
    sizes = {
        "unlabelled": d.unlabelled,
        "train": d.labels_per_class * d.num_classes,
        "val": d.val_per_class * d.num_classes,
        "test": d.test_per_class * d.num_classes,
        "probe_train": d.probe_per_class * d.num_classes,
        "probe_test": d.probe_per_class * d.num_classes,
    }
    out = {}
    for offset, (name, count) in enumerate(sizes.items()):
        clips, labels = render_motion_dataset(count, seed=10_000 * (seed + 1) + offset, **common)
        out[name] = Split(clips, labels)
    return out


def probe_set(data: dict[str, Split]) -> ProbeSet:
    return ProbeSet(
        data["probe_train"].clips, data["probe_train"].labels, data["probe_test"].clips, data["probe_test"].labels
    )


def pretrain(cfg: ExperimentConfig, data: dict[str, Split], seed: int, log) -> tuple[dict, list[dict]]:
    """Masked-autoencoder pretraining; returns the model state dict and the diagnostic history."""
    p, m = cfg.pretrain, cfg.model
    torch.manual_seed(seed)
    model = videomae_pretrain(
        vit_size(m),
        tubelet_size=m.tubelet_size,
        patch_size=m.patch_size,
        target=p.target,
        pixel_mean=MEAN,
        pixel_std=STD,
    )
    optimizer = build_adamw(model, lr=p.lr, weight_decay=p.weight_decay, betas=(0.9, 0.95))
    schedule = WarmupCosine(total_steps=p.steps, warmup_steps=p.warmup_steps, base_lr=p.lr, min_lr=p.lr * 0.01)
    masker = TubeMasker(p.mask_ratio) if p.mask == "tube" else RandomMasker(p.mask_ratio)
    gen = torch.Generator().manual_seed(seed)
    pool = data["unlabelled"].clips

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
        mask = masker(p.batch_size, model.grid(video.shape), generator=gen)
        out = model(video, mask)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append((out.loss.item(), out.target.square().mean().item()))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def finetune(
    cfg: ExperimentConfig, data: dict[str, Split], seed: int, lr: float, pretrained: dict | None
) -> dict[str, float]:
    """Train a classifier (pretrained encoder or scratch) on the labelled set; report train/val/test accuracy."""
    f, m = cfg.finetune, cfg.model
    torch.manual_seed(seed)
    model = videomae_classifier(
        vit_size(m),
        num_classes=cfg.data.num_classes,
        tubelet_size=m.tubelet_size,
        patch_size=m.patch_size,
        drop_path_rate=f.drop_path,
        head_dropout=f.head_dropout,
    )
    if pretrained is not None:
        load_pretrained_encoder(model, pretrained, strict=True)
    optimizer = build_adamw(
        model, lr=lr, weight_decay=f.weight_decay, betas=(0.9, 0.999), layer_decay=f.layer_decay, num_layers=m.depth
    )
    train = data["train"]
    n = train.clips.shape[0]
    per_epoch = math.ceil(n / f.batch_size)
    total = f.epochs * per_epoch
    schedule = WarmupCosine(total_steps=total, warmup_steps=f.warmup_epochs * per_epoch, base_lr=lr, min_lr=lr * 0.01)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(f.epochs):
        order = torch.randperm(n, generator=gen)
        model.train()
        for start in range(0, n, f.batch_size):
            idx = order[start : start + f.batch_size]
            schedule.step(optimizer, step)
            logits = model(normalise(train.clips[idx]))
            loss = F.cross_entropy(logits, train.labels[idx], label_smoothing=f.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
    return {name: accuracy(model, data[name]) for name in ("train", "val", "test")}


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: Split, batch: int = 128) -> float:
    model.eval()
    correct = 0
    for start in range(0, split.clips.shape[0], batch):
        logits = model(normalise(split.clips[start : start + batch]))
        correct += int((logits.argmax(dim=1) == split.labels[start : start + batch]).sum())
    return correct / split.clips.shape[0]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)); SE is NaN for one value."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def summarise(results: dict) -> str:
    """The markdown table and verdict of a finished run."""
    seeds = results["seeds"]
    pre = [s["pretrained"]["chosen"]["test"] for s in seeds]
    scr = [s["scratch"]["chosen"]["test"] for s in seeds]
    diff = [a - b for a, b in zip(pre, scr, strict=True)]
    chance = 1.0 / results["config"]["data"]["num_classes"]
    lines = [
        "| arm | test top-1 per seed | mean +- SE | train top-1 (mean) | chosen lr per seed |",
        "|---|---|---|---|---|",
    ]
    for arm, values in (("pretrained", pre), ("scratch", scr)):
        mean, se = mean_se(values)
        train = statistics.fmean(s[arm]["chosen"]["train"] for s in seeds)
        lrs = ", ".join(f"{s[arm]['chosen']['lr']:g}" for s in seeds)
        per_seed = ", ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {arm} | {per_seed} | {mean:.3f} +- {se:.3f} | {train:.3f} | {lrs} |")
    d_mean, d_se = mean_se(diff)
    lines.append(
        f"| pretrained - scratch (paired) | {', '.join(f'{v:+.3f}' for v in diff)} | {d_mean:+.3f} +- {d_se:.3f} | | |"
    )
    if len(diff) < 2:
        verdict = "one seed: no standard error, no verdict"
    elif d_mean > 2 * d_se:
        verdict = f"pretraining beats scratch by more than two standard errors ({d_mean:+.3f} > 2 x {d_se:.3f})"
    elif d_mean < -2 * d_se:
        verdict = f"scratch beats pretraining by more than two standard errors ({d_mean:+.3f})"
    else:
        verdict = f"no difference beyond two standard errors ({d_mean:+.3f} +- {d_se:.3f})"
    lines += ["", f"Chance: {chance:.3f}. Verdict: {verdict}."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = results["seeds"]
    if not seeds:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for i, arm in enumerate(("pretrained", "scratch")):
        values = [s[arm]["chosen"]["test"] for s in seeds if arm in s]
        if values:
            mean, se = mean_se(values)
            ax.bar(i, mean, yerr=0 if math.isnan(se) else se, color=("tab:blue", "tab:grey")[i], alpha=0.6)
            ax.scatter([i] * len(values), values, color="k", zorder=3)
    ax.axhline(1.0 / results["config"]["data"]["num_classes"], ls="--", color="r", label="chance")
    ax.set_xticks([0, 1], ["pretrained", "scratch"])
    ax.set_ylabel("test top-1")
    ax.legend()
    for s in seeds:
        hist = s["pretrain_history"]
        steps = [r["step"] for r in hist if "loss" in r]
        axes[1].plot(steps, [r["loss"] for r in hist if "loss" in r], label=f"loss seed {s['seed']}")
        axes[1].plot(steps, [r["zero_floor"] for r in hist if "loss" in r], ls="--", label=f"floor seed {s['seed']}")
        all_steps = [r["step"] for r in hist]
        axes[2].plot(all_steps, [r["probe_per_time"] for r in hist], label=f"probe seed {s['seed']}")
        axes[2].plot(all_steps, [r["participation_ratio"] / 20 for r in hist], ls=":", label=f"PR/20 seed {s['seed']}")
    axes[1].set_xlabel("pretraining step")
    axes[1].set_title("loss vs zero floor")
    axes[1].legend(fontsize=7)
    axes[2].set_xlabel("pretraining step")
    axes[2].set_title("linear probe (per-time features), participation ratio / 20")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1, default=str))


def main(cfg: ExperimentConfig) -> dict:
    if cfg.quick:
        cfg = apply_quick(cfg)
    if not cfg.seeds:
        raise ValueError("--seeds: give at least one seed")
    if not cfg.arms:
        raise ValueError("--arms: give pretrained, scratch or both")
    if cfg.stage == "all" and not cfg.finetune.lrs:
        raise ValueError("--finetune.lrs: give at least one learning rate")
    torch.set_num_threads(cfg.threads)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.output_dir / "log.txt"
    log_file = log_path.open("a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    results = {"config": dataclasses.asdict(cfg), "seeds": []}
    log(f"config {json.dumps(results['config'], default=str)}")
    began = time.perf_counter()
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        data = make_data(cfg, seed)
        log(f"seed {seed}: data rendered in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        if cfg.pretrained_dir is None:
            state, history = pretrain(cfg, data, seed, log)
            plot_diagnostics(history, cfg.output_dir / f"pretrain_seed{seed}.png", title=f"pretraining, seed {seed}")
            with atomic_path(cfg.output_dir / f"pretrained_seed{seed}.pt") as tmp:
                torch.save(state, tmp)
        else:
            source = cfg.pretrained_dir / f"pretrained_seed{seed}.pt"
            if not source.is_file():
                raise FileNotFoundError(
                    f"--pretrained-dir: {source} does not exist (run that seed's pretraining first)"
                )
            state = torch.load(source, map_location="cpu", weights_only=True)
            history = []
            log(f"seed {seed}: pretrained encoder from {source}")
        entry = {"seed": seed, "pretrain_history": history, "pretrain_seconds": round(time.perf_counter() - t0, 1)}
        if cfg.stage == "all":
            for arm, weights in (("pretrained", state), ("scratch", None)):
                if arm not in cfg.arms:
                    continue
                runs = []
                for lr in cfg.finetune.lrs:
                    t0 = time.perf_counter()
                    acc = finetune(cfg, data, seed, lr, weights)
                    runs.append({"lr": lr, **acc, "seconds": round(time.perf_counter() - t0, 1)})
                    log(
                        f"seed {seed} {arm} lr={lr:g}: "
                        + " ".join(f"{k}={v}" for k, v in runs[-1].items() if k != "lr")
                    )
                chosen = max(runs, key=lambda r: (r["val"], -r["lr"]))
                entry[arm] = {"runs": runs, "chosen": chosen}
        results["seeds"].append(entry)
        write_json(cfg.output_dir / "results.json", results)
    results["seconds"] = round(time.perf_counter() - began, 1)
    write_json(cfg.output_dir / "results.json", results)
    if cfg.stage == "all" and set(cfg.arms) == {"pretrained", "scratch"}:
        table = summarise(results)
        with atomic_path(cfg.output_dir / "summary.md") as tmp:
            Path(tmp).write_text(table)
        log("\n" + table)
    plot(results, cfg.output_dir / "data_efficiency.png")
    log(f"done in {results['seconds']:.0f} s; results in {cfg.output_dir}")
    log_file.close()
    return results


if __name__ == "__main__":
    main(tyro.cli(ExperimentConfig))
