"""Hand-made motion features of a clip: the baseline a learned video model has to beat on a synthetic motion task.

For each pair of neighbouring frames the absolute grey-level difference `D_k = |g_{k+1} - g_k|` is summarised by its
energy (mean), the share of pixels that changed (above `threshold`), its centroid, its spread and its orientation
(the angle of the principal axis of its second moments); the centroid's velocity and the frame's own mean intensity
change complete the set. This is the family of features a person would write first to tell motions apart (where the
change is, how much, how it moves, how it turns); fed to a linear classifier
([linear_probe_accuracy][tubemask.eval.diagnostics.linear_probe_accuracy]) they nearly solve the one-object task of
[tubemask.data.motion_clips][] and are the hand-made baseline of `recipes/data_efficiency.py`.
"""

import torch
from jaxtyping import Float, UInt8
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = ["motion_features"]


@typechecked
def motion_features(clips: UInt8[Tensor, "n 3 t h w"], *, threshold: float = 0.05) -> Float[Tensor, "n f"]:
    """Hand-made motion features, `f = 11 (t - 1) - 2` per clip (float32).

    Per difference map `k` (`t - 1` of them): energy, changed share, centroid `x, y`, spread `x, y`, and
    `cos 2a, sin 2a` of its principal-axis angle `a` (an axis has no sign); per pair of neighbouring maps: the centroid
    velocity `x, y`; per frame pair: the change of the mean intensity. Coordinates are in `[0, 1]` of the frame.

    Args:
        clips: uint8 clips `[n 3 t h w]`, at least 2 frames.
        threshold: grey-level change (in `[0, 1]`) above which a pixel counts as changed.

    Raises:
        ValueError: for fewer than 2 frames.
    """
    n, _, t, h, w = clips.shape
    if t < 2:
        raise ValueError(f"motion_features: clips have {t} frames; need at least 2")
    grey = clips.float().mean(dim=1) / 255.0  # [n t h w]
    diff = (grey[:, 1:] - grey[:, :-1]).abs()  # [n k h w]
    energy = diff.mean(dim=(-2, -1))
    changed = (diff > threshold).float().mean(dim=(-2, -1))
    weight = diff / diff.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-8)
    ys = torch.linspace(0, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(0, 1, w).view(1, 1, 1, w)
    cx, cy = (weight * xs).sum(dim=(-2, -1)), (weight * ys).sum(dim=(-2, -1))
    dx, dy = xs - cx[..., None, None], ys - cy[..., None, None]
    vxx, vyy = (weight * dx * dx).sum(dim=(-2, -1)), (weight * dy * dy).sum(dim=(-2, -1))
    vxy = (weight * dx * dy).sum(dim=(-2, -1))
    angle2 = torch.atan2(2 * vxy, vxx - vyy)  # twice the principal-axis angle
    features = [energy, changed, cx, cy, vxx.sqrt(), vyy.sqrt(), torch.cos(angle2), torch.sin(angle2)]
    velocity = [cx[:, 1:] - cx[:, :-1], cy[:, 1:] - cy[:, :-1]]
    brightness = grey.mean(dim=(-2, -1))
    return torch.cat([*features, *velocity, brightness[:, 1:] - brightness[:, :-1]], dim=1)
