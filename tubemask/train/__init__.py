"""Training infrastructure the recipes compose: optimizer groups, schedules, checkpoints, distributed setup, logs.

Each submodule is one concept; the names below are re-exported for convenience.
"""

from tubemask.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tubemask.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    cleanup,
    get_logger,
    rank0_print,
    setup_distributed,
    wrap_ddp,
    wrap_fsdp2,
)
from tubemask.train.logs import (
    JsonlLogger,
    SmoothedValue,
    TensorBoardWriter,
    ThroughputMeter,
    plot_loss_curve,
    read_jsonl,
)
from tubemask.train.nonfinite import NonFiniteGuard
from tubemask.train.optim import build_adamw, default_layer_id, param_groups
from tubemask.train.schedule import WarmupCosine, apply_lr, apply_weight_decay, cosine_schedule, scaled_lr

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "DistributedContext",
    "all_reduce_mean",
    "cleanup",
    "get_logger",
    "rank0_print",
    "setup_distributed",
    "wrap_ddp",
    "wrap_fsdp2",
    "JsonlLogger",
    "SmoothedValue",
    "TensorBoardWriter",
    "ThroughputMeter",
    "plot_loss_curve",
    "read_jsonl",
    "NonFiniteGuard",
    "build_adamw",
    "default_layer_id",
    "param_groups",
    "WarmupCosine",
    "apply_lr",
    "apply_weight_decay",
    "cosine_schedule",
    "scaled_lr",
]
