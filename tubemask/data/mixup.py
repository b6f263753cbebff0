"""Batch-level mixup / cutmix for clips, with label smoothing (timm's `Mixup` in batch mode).

Each batch is mixed with its own reverse (`x.flip(0)`). With probability `switch_prob` the batch uses cutmix (one box,
the same in every frame, pasted from the partner clip) instead of mixup (a convex blend); the mixing weight `lam`
comes from `Beta(alpha, alpha)`, and for cutmix is corrected to the exact pasted area. Targets are smoothed one-hot
vectors mixed with the same `lam`: `lam * y + (1 - lam) * y.flip(0)`.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = ["Mixup", "smooth_one_hot"]


@typechecked
def smooth_one_hot(labels: Int[Tensor, " b"], num_classes: int, smoothing: float = 0.0) -> Float[Tensor, "b k"]:
    """One-hot targets with label smoothing: `1 - smoothing + smoothing / k` on the label, `smoothing / k` elsewhere.

    Args:
        labels: Class indices in `[0, num_classes)`.
        num_classes: `k`.
        smoothing: In [0, 1).

    Returns:
        Float targets whose rows sum to 1.
    """
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.min().item()}..{labels.max().item()}")
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


@dataclass(frozen=True)
class Mixup:
    """Mix a batch of clips and their labels (VideoMAE fine-tuning: mixup 0.8, cutmix 1.0, smoothing 0.1).

    Attributes:
        num_classes: Number of classes `k`.
        mixup_alpha: Beta parameter for mixup; 0 disables mixup.
        cutmix_alpha: Beta parameter for cutmix; 0 disables cutmix.
        prob: Probability that a batch is mixed at all.
        switch_prob: Probability of cutmix when both are enabled.
        label_smoothing: Smoothing of the one-hot targets.
    """

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1

    @typechecked
    def __call__(
        self,
        clips: Float[Tensor, "b c t h w"],
        labels: Int[Tensor, " b"],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Float[Tensor, "b c t h w"], Float[Tensor, "b k"]]:
        """Mix `clips` and return them with soft targets.

        Args:
            clips: A batch of normalized clips.
            labels: Their class indices.
            generator: Randomness for the decision, the mode, `lam` and the box.

        Returns:
            `(mixed clips, targets [b k])`; the clips are a new tensor when mixed.
        """
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        draws = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        use_mixup, use_cutmix = self.mixup_alpha > 0, self.cutmix_alpha > 0
        if draws[0] >= self.prob or not (use_mixup or use_cutmix):
            return clips, targets
        cutmix = use_cutmix and (not use_mixup or draws[1] < self.switch_prob)
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=generator)))
        lam = float(rng.beta(*(2 * [self.cutmix_alpha if cutmix else self.mixup_alpha])))
        partner = clips.flip(0)
        if cutmix:
            h, w = clips.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            mixed = clips.clone()
            mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            mixed = clips * lam + partner * (1.0 - lam)
        return mixed, targets * lam + targets.flip(0) * (1.0 - lam)
