"""tubemask: masked video autoencoder (VideoMAE) pretraining as small, typed, tested pieces.

The names here are the ones a model is composed of: maskers, the cube tokenizer, the wrapper, encoder and decoder,
targets and the loss, and the builders of the paper's models. Layers, position tables and token helpers stay in their
modules (`tubemask.layers`, `tubemask.pos_embed`, `tubemask.tokens`, ...).

Masks are `Bool[b n]` tensors with **True = masked** everywhere; token order is raster `(t, h, w)`, `t` slowest.
"""

from tubemask.classification import VideoClassifier, videomae_classifier
from tubemask.decoders import MAEDecoder
from tubemask.detection import ActionDetector, videomae_action_detector
from tubemask.encoders import ViTEncoder
from tubemask.losses import Loss, reconstruction_mse
from tubemask.mae import MAEOutput, MAEWrapper
from tubemask.masking import FrameMasker, Masker, RandomMasker, RunningCellMasker, TubeMasker, draw_mask
from tubemask.models import videomae_pretrain
from tubemask.targets import PixelTarget, Target
from tubemask.tokenizers import CubeEmbedding

__version__ = "0.1.0"

__all__ = [
    "TubeMasker",
    "FrameMasker",
    "RandomMasker",
    "RunningCellMasker",
    "Masker",
    "draw_mask",
    "CubeEmbedding",
    "MAEWrapper",
    "MAEOutput",
    "ViTEncoder",
    "MAEDecoder",
    "Target",
    "PixelTarget",
    "Loss",
    "reconstruction_mse",
    "videomae_pretrain",
    "videomae_classifier",
    "VideoClassifier",
    "videomae_action_detector",
    "ActionDetector",
]
