"""Recipe configs: fill the options a user left at `None` from a preset, and store a config in a checkpoint.

Every recipe has a config dataclass whose preset-dependent options default to `None` ("the preset's value") and a
few presets (the paper's settings with real data, a CPU-sized run on synthetic data). A preset is a plain dict of
option values, so a sibling recipe (another dataset) is `dict(PAPER, epochs=800)`, not a patched module.
"""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

__all__ = ["DatasetPreset", "fill_from_preset", "config_dict"]

Config = TypeVar("Config")


def fill_from_preset(cfg: Config, *presets: Mapping[str, Any]) -> Config:
    """A copy of the dataclass `cfg` whose `None` options take the value of the last preset that names them.

    Options the user gave (not `None`) always win. Raises ValueError when a preset names an option the config does
    not have, so a renamed option cannot silently stop taking its preset value.
    """
    names = {f.name for f in dataclasses.fields(cfg)}
    merged: dict[str, Any] = {}
    for preset in presets:
        unknown = sorted(set(preset) - names)
        if unknown:
            raise ValueError(f"preset names options that {type(cfg).__name__} does not have: {', '.join(unknown)}")
        merged.update(preset)
    return dataclasses.replace(cfg, **{k: v for k, v in merged.items() if getattr(cfg, k) is None})


def config_dict(cfg: Any) -> dict[str, Any]:
    """The dataclass `cfg` as plain values (paths as strings), loadable with `torch.load(weights_only=True)`."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


@dataclass(frozen=True)
class DatasetPreset:
    """A dataset as a recipe sees it: how to read its video lists, how to sample its frames, the paper's settings.

    A sibling recipe (HMDB51, SSv2, Kinetics-400) is the UCF101 recipe run with another preset and a config subclass
    that adds the dataset's file options; nothing in the base recipe is replaced.

    Attributes:
        name: the dataset's name, for logs.
        read: `read(cfg, train=...)` -> the train (or test) records under `cfg.data_root`.
        paper: option values of the paper's recipe for this dataset (they fill the options left at `None`).
        synthetic: option values that also hold for the synthetic stand-in without `--data-root` (e.g. no flip
            where the motion's direction is the label), over the recipe's synthetic preset.
        sampling: `"dense"` (`--num-frames` frames every `--sampling-rate`) or `"segment"` (TSN: one frame from each
            of `--num-frames` equal segments, as for SSv2).
        class_names: `class_names(cfg, records, num_classes)` -> a name per label; None: the folder of each label's
            videos.
    """

    name: str
    read: Callable[..., list]
    paper: Mapping[str, Any] = field(default_factory=dict)
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    sampling: Literal["dense", "segment"] = "dense"
    class_names: Callable[..., list[str]] | None = None


@dataclass
class TrainConfig:
    """The options every recipe has: run, schedule, optimizer step, processes, checkpoints. A recipe's config
    subclasses it and adds its data, model and method options. `None` means "the preset's value"."""

    output_dir: Path = Path("outputs/run")
    """Checkpoints, metrics, pictures and final.pt go here."""
    model: Literal["tiny", "small", "base", "large", "huge"] | None = None
    """Size preset (paper: base; synthetic: tiny). Must match a --finetune checkpoint."""
    patch_size: int | None = None
    """Pixels per cube side (paper: 16; synthetic: 8). Must match a --finetune checkpoint."""
    epochs: int | None = None
    """Epochs of the schedule."""
    max_steps: int | None = None
    """Stop after this many optimizer steps WITHOUT changing the schedule (which follows --epochs)."""
    batch_size: int | None = None
    """Videos (clips) per process and micro-step."""
    accum_steps: int = 1
    """Gradient accumulation micro-steps per optimizer step."""
    lr: float | None = None
    """Absolute peak learning rate; default --base-lr x total batch in clips / 256."""
    base_lr: float | None = None
    """Learning rate per 256 clips of total batch."""
    min_lr: float = 1e-6
    """Final learning rate of the cosine."""
    warmup_epochs: float | None = None
    """Linear warmup."""
    weight_decay: float | None = None
    """AdamW weight decay, not on norms, biases, positions and tokens."""
    clip_grad: float | None = None
    """Clip the gradients' global norm to this value (the paper's recipes: no clipping)."""
    workers: int = 2
    """DataLoader worker processes per training process."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train."""
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    """Autocast precision (default bf16 on CUDA, fp32 on CPU). Losses and targets are float32."""
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"
    """Under torchrun: DDP, or FSDP2 (parameters sharded per block); auto = FSDP2 for large and huge."""
    compile: bool = False
    """torch.compile the model for training (runtime shape checks are off for the run: Dynamo cannot trace them)."""
    grad_checkpointing: bool = False
    """Recompute block activations in the backward (less memory, ~30% more compute)."""
    seed: int = 0
    """Seed of initialisation, data order, augmentation, masks and mixup."""
    checkpoint_every: int | None = None
    """Save a checkpoint every N optimizer steps (default: once per epoch)."""
    keep_checkpoints: int = 3
    """Checkpoints kept in --output-dir."""
    resume: bool = False
    """Continue from the latest checkpoint in --output-dir."""
    max_bad_steps: int = 5
    """Non-finite losses in a row that abort the run."""
    tensorboard: bool = False
    """Also write TensorBoard scalars."""

    def peak_lr(self, clips_per_step: int) -> tuple[float, str]:
        """The peak learning rate for a total batch of `clips_per_step` clips, and how it was chosen (for the log):
        `--lr` as given, else `--base-lr x clips / 256` (the linear scaling rule of the paper's recipes)."""
        if self.lr is not None:
            return self.lr, "given by --lr"
        return self.base_lr * clips_per_step / 256, f"= {self.base_lr:g} x {clips_per_step} / 256"
