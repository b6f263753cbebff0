"""Seeds of the recipes' random draws, in one place: per optimizer step, micro-step and rank.

A resumed run must draw the same masks, mixup pairs and dropout as a straight run, and a two-process run the same
masks as a one-process run with the same global batch. Each draw therefore takes its own generator, seeded from the
run's seed and its position in the run, never from a generator that carries state across steps.
"""

import torch

__all__ = ["STEP_STRIDE", "rank_seed", "step_seed", "step_generator"]

STEP_STRIDE = 1_000_003
"""A prime multiplier that keeps the seeds of neighbouring runs (seed, seed + 1) far apart."""


def rank_seed(seed: int, rank: int) -> int:
    """The global-RNG seed of one process after initialisation: drop path and dropout differ between ranks."""
    return seed * STEP_STRIDE + rank


def step_seed(seed: int, step: int, micro: int = 0, rank: int | None = None) -> int:
    """The seed of the draws of optimizer step `step`, accumulation micro-step `micro` and, for draws that differ
    between processes, `rank` (None: one draw for the whole global batch, which every rank slices)."""
    value = (seed * STEP_STRIDE + step) * 97 + micro
    return value if rank is None else value * 1009 + rank


def step_generator(seed: int, step: int, micro: int = 0, rank: int | None = None) -> torch.Generator:
    """A CPU generator seeded with [step_seed][tubemask.train.seeding.step_seed], modulo 2**64 (the largest seed a
    generator takes; large run seeds would overflow it, small ones are unchanged)."""
    return torch.Generator().manual_seed(step_seed(seed, step, micro, rank) % 2**64)
