"""tubemask: masked video autoencoder (VideoMAE) pretraining as small, typed, tested pieces.

Masks are `Bool[b n]` tensors with **True = masked** everywhere; token order is raster `(t, h, w)`, `t` slowest.
"""

from tubemask.classification import VideoClassifier, videomae_classifier
from tubemask.decoders import MAEDecoder
from tubemask.detection import ActionDetector, videomae_action_detector
from tubemask.encoders import ViTEncoder
from tubemask.grid import CubeGeometry, token_grid
from tubemask.heads import ClassificationHead, RoIActionHead
from tubemask.layers import Attention, Block, DropPath, Mlp
from tubemask.losses import Loss, reconstruction_mse
from tubemask.mae import MAEOutput, MAEWrapper
from tubemask.masking import FrameMasker, Masker, RandomMasker, RunningCellMasker, TubeMasker
from tubemask.models import (
    videomae_pretrain,
)
from tubemask.pos_embed import (
    LearnedPositionEmbedding,
    ResizedSinusoidPositionEmbedding,
    SinCos3DPositionEmbedding,
    SinusoidPositionEmbedding,
)
from tubemask.targets import PixelTarget, Target
from tubemask.tokenizers import CubeEmbedding, patchify, unpatchify
from tubemask.tokens import gather_tokens, scatter_tokens, split_ids

__version__ = "0.1.0"

__all__ = [
    "ActionDetector",
    "Attention",
    "Block",
    "ClassificationHead",
    "ResizedSinusoidPositionEmbedding",
    "RoIActionHead",
    "CubeEmbedding",
    "CubeGeometry",
    "DropPath",
    "FrameMasker",
    "LearnedPositionEmbedding",
    "Loss",
    "MAEDecoder",
    "MAEOutput",
    "MAEWrapper",
    "Masker",
    "Mlp",
    "PixelTarget",
    "RandomMasker",
    "RunningCellMasker",
    "SinCos3DPositionEmbedding",
    "SinusoidPositionEmbedding",
    "Target",
    "TubeMasker",
    "VideoClassifier",
    "ViTEncoder",
    "gather_tokens",
    "patchify",
    "reconstruction_mse",
    "scatter_tokens",
    "split_ids",
    "token_grid",
    "unpatchify",
    "videomae_action_detector",
    "videomae_classifier",
    "videomae_pretrain",
]
