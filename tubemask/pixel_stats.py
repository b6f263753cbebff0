"""The per-channel pixel statistics VideoMAE normalises its clips with, shared by the data and the model side.

The data pipelines normalise clips with them ([`normalize`][tubemask.data.model_input.normalize],
[`normalize_batch`][tubemask.data.model_input.normalize_batch]) and the reconstruction targets undo that normalisation
([`PixelTarget`][tubemask.targets.PixelTarget]), so both must read the same numbers. This module imports nothing, so
either layer may use it (importing it does not load torchvision).
"""

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet in [0, 1] pixels: what VideoMAE normalises its clips with."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet in [0, 1] pixels."""
