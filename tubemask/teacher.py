"""Teacher features as reconstruction targets (after MVD, Wang et al., arXiv 2212.04500).

Masked video distillation pretrains a student by reconstructing, for each hidden cube, the feature a frozen teacher
computes at that cube's token from the whole clip, instead of its pixels. The teacher is any model with
`forward_features(video) -> [b n d]` on the student's token grid: a tubemask pretraining model or classifier, and so
any HF transformers or official VideoMAE checkpoint loaded through `tubemask.interop` (`from_hf`,
`load_pretrained_encoder`). MVD's teachers are MAE-pretrained image and video models; the student's decoder then
predicts `d` values per cube.

As MVD's official code does, the target is by default the teacher's last block output *before* its final norm, not
normalised again, and MVD trains on it with a smooth L1 loss
([reconstruction_smooth_l1][tubemask.losses.reconstruction_smooth_l1]; pass it as the model's `loss`). MVD's
`--norm_feature` (a LayerNorm without affine parameters on the targets) is `normalize=True`, and `pre_norm=False`
takes the teacher's `forward_features` (after its final norm) instead.

[TeacherTarget][tubemask.teacher.TeacherTarget] is the [Target][tubemask.targets.Target] piece. It is a plain object,
not a module: a [MAEWrapper][tubemask.mae.MAEWrapper] holding it does not register the teacher as a submodule, so
the teacher's weights are neither trained, nor in the student's state dict, nor moved by `student.to(...)` (the
target moves the teacher to the clip's device on first use).
"""

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

__all__ = ["TeacherTarget"]


class TeacherTarget:
    """The frozen teacher's token features at the queried cubes.

    Args:
        teacher: a module with `forward_features(video) -> [b n d]` (all tokens, raster `(t h w)` order) on the
            student's grid, fed the student's normalised clip; frozen (`requires_grad_(False)`, eval mode) here.
        dim: feature width `d`; default: `teacher.embed_dim`, else its tokenizer's or encoder's `embed_dim`.
        pre_norm: take the output of the teacher's last block before its final norm (MVD; the teacher needs
            `forward_intermediates(video, indices=1)` to give it, as tubemask's pretraining models and classifiers
            do); False: its `forward_features(video)`.
        normalize: layer-normalise each token's features without affine parameters (MVD's `--norm_feature`, off in
            its released recipes), so every cube weighs alike in the loss.
    """

    def __init__(
        self, teacher: nn.Module, *, dim: int | None = None, pre_norm: bool = True, normalize: bool = False
    ) -> None:
        method = "forward_intermediates" if pre_norm else "forward_features"
        if not callable(getattr(teacher, method, None)):
            hint = "; or pass pre_norm=False to use forward_features" if pre_norm else ""
            raise ValueError(f"TeacherTarget: the teacher ({type(teacher).__name__}) needs {method}(video){hint}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.dim = dim if dim is not None else _embed_dim(teacher)
        self.pre_norm = pre_norm
        self.normalize = normalize

    def width(self, *, tubelet_size: int, patch_size: int, channels: int) -> int:
        """The teacher's feature width `d`, whatever the cube geometry."""
        return self.dim

    def __repr__(self) -> str:
        name = type(self.teacher).__name__
        return f"TeacherTarget({name}, dim={self.dim}, pre_norm={self.pre_norm}, normalize={self.normalize})"

    def __call__(
        self,
        video: Float[Tensor, "b c t h w"],
        query_ids: Int[Tensor, "b m"],
        *,
        tubelet_size: int,
        patch_size: int,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> Float[Tensor, "b m d"]:
        """The teacher's features of the queried tokens as float32, without gradients; the teacher runs under the
        caller's autocast, if any (as MVD's does)."""
        b, _, t, h, w = video.shape
        n = (t // tubelet_size) * (h // patch_size) * (w // patch_size)
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != video.device:
            self.teacher.to(video.device)
        self.teacher.eval()
        with torch.no_grad():
            if self.pre_norm:
                features = self.teacher.forward_intermediates(video, indices=1)[0].float()  # the last block only
            else:
                features = self.teacher.forward_features(video).float()
        if features.shape[:2] != (b, n) or features.shape[-1] != self.dim:
            raise ValueError(
                f"TeacherTarget: the teacher gave features {tuple(features.shape)}; the student's grid needs "
                f"({b}, {n}, {self.dim}): use a teacher with the same frames, tubelet and patch size"
            )
        if self.normalize:
            features = F.layer_norm(features, (self.dim,))
        return torch.gather(features, 1, query_ids.unsqueeze(-1).expand(-1, -1, self.dim))


def _embed_dim(teacher: Any) -> int:
    for owner in (teacher, getattr(teacher, "tokenizer", None), getattr(teacher, "encoder", None)):
        dim = getattr(owner, "embed_dim", None)
        if isinstance(dim, int):
            return dim
    raise ValueError(f"TeacherTarget: cannot tell the feature width of {type(teacher).__name__}; pass dim=")
