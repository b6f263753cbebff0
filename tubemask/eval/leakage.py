"""How much of a hidden cube a mask leaves visible nearby in time: a copy-along-the-motion baseline.

Under motion, the content of a hidden cube at slot `k` sits at another place in slot `k - 1` (or `k + 1`). If that
cube is visible, a decoder can copy it instead of learning anything about the clip: the pretext task leaks. The
baseline here does exactly that and nothing else: for each hidden cube it follows the flow to the neighbouring slot
(the previous one; slot 0 looks at slot 1) and copies that cube's pixels when it is visible, else predicts the mean
visible pixel. Its error over the hidden cubes is high when the mask hides content along its motion (motion-guided
masking) and low when the content escapes into visible cubes (tube masking of moving content); `leaked` is the share
of hidden cubes it could copy.
"""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.shapes import typechecked
from tubemask.tokenizers import patchify

__all__ = ["copy_along_motion"]


@typechecked
def copy_along_motion(
    video: Float[Tensor, "b c t h w"],
    mask: Bool[Tensor, "b n"],
    flow: Float[Tensor, "b s gh gw 2"],
    *,
    tubelet_size: int,
    patch_size: int,
) -> dict[str, float]:
    """The copy baseline's mean squared error over the hidden cubes, and the share of hidden cubes it copied.

    Args:
        video: the clip.
        mask: True = hidden, raster `(t h w)` over the token grid.
        flow: backward token flow `[b t-1 h w 2]` (see [tubemask.motion_guided][]): for each cell of slot `k + 1`,
            its source in slot `k`, in cells.
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.

    Returns:
        `{"mse": ..., "leaked": ...}`.
    """
    b = video.shape[0]
    cubes = patchify(video, tubelet_size=tubelet_size, patch_size=patch_size)  # [b n k]
    t, gh, gw = video.shape[2] // tubelet_size, video.shape[3] // patch_size, video.shape[4] // patch_size
    if flow.shape[1] != t - 1 or t < 2:
        raise ValueError(f"copy_along_motion: {t} time slots need a flow of {t - 1} steps, got {flow.shape[1]}")
    hidden = mask.view(b, t, gh, gw)
    ys = torch.arange(gh).view(1, gh, 1)
    xs = torch.arange(gw).view(1, 1, gw)
    source_slot, sy, sx = [], [], []
    for k in range(t):
        step, other = (flow[:, k - 1], k - 1) if k > 0 else (-flow[:, 0], 1)  # slot 0: the reverse of 0 -> 1
        source_slot.append(torch.full((b, gh, gw), other))
        sy.append((ys + step[..., 0]).round().long())
        sx.append((xs + step[..., 1]).round().long())
    slot, sy, sx = torch.stack(source_slot, 1), torch.stack(sy, 1), torch.stack(sx, 1)  # [b t gh gw]
    inside = (sy >= 0) & (sy < gh) & (sx >= 0) & (sx < gw)
    source = (slot * gh + sy.clamp(0, gh - 1)) * gw + sx.clamp(0, gw - 1)  # flat ids, [b t gh gw]
    source_visible = ~torch.gather(mask, 1, source.view(b, -1)).view(b, t, gh, gw)
    copied = hidden & inside & source_visible
    visible_mean = cubes[~mask].mean()
    prediction = torch.where(
        copied.view(b, -1, 1), torch.gather(cubes, 1, source.view(b, -1, 1).expand_as(cubes)), visible_mean
    )
    errors = (prediction - cubes).square().mean(dim=-1)[mask]
    return {"mse": float(errors.mean()), "leaked": float(copied.sum() / hidden.sum())}
