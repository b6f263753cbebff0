"""Clip loading for VideoMAE-style training: decoding, frame sampling, annotation formats, transforms, datasets.

`import tubemask.data` does not need torchcodec; decoding imports it when first asked (see
[`tubemask.data.decoding`][]). Frames travel as uint8 `[t c h w]` until a pipeline normalizes them into the model
input, float `[c t h w]`, or (with `normalize=False`) hands uint8 `[c t h w]` clips to the training loop, which
normalizes the batch on its device with [`normalize_batch`][tubemask.data.model_input.normalize_batch]. Those uint8
clips keep the decoder's channels-last memory (`[t h w c]` storage) through repeats and the collate
([`stack_clips`][tubemask.data.model_input.stack_clips]); `normalize_batch` returns a contiguous float batch.

This namespace holds what a training script calls: annotation readers, decoding, samplers, pipelines, datasets and
their collate functions, the failure log, Mixup and RandAugment, the synthetic dataset makers and the AVA readers and
dataset. The building blocks they are made of (single transforms, index arithmetic, the per-record loader) stay in
their modules: `from tubemask.data.transforms import center_crop`.
"""

from tubemask.data.annotations import (
    AnnotationError,
    VideoRecord,
    read_hmdb51,
    read_kinetics_csv,
    read_list_file,
    read_ssv2,
    read_ucf101,
)
from tubemask.data.ava import AVAFiles, AVAFrame, read_ava_boxes, read_ava_exclusions, read_ava_label_map
from tubemask.data.ava_dataset import AVADataset, collate_ava
from tubemask.data.datasets import FinetuneDataset, MultiViewDataset, PretrainDataset, collate_repeated
from tubemask.data.decoding import DecodeError, MissingDecoderError, VideoReader, read_clip
from tubemask.data.failures import FailureLog
from tubemask.data.loading import DecodeOptions
from tubemask.data.mixup import Mixup
from tubemask.data.model_input import normalize_batch
from tubemask.data.pipelines import EvalPipeline, FinetunePipeline, PretrainPipeline
from tubemask.data.randaugment import RandAugment, parse_randaugment
from tubemask.data.sampling import DenseSampler, SegmentSampler
from tubemask.data.synthetic import cached_synthetic_ucf101, make_synthetic_ucf101
from tubemask.data.synthetic_ava import make_synthetic_ava

__all__ = [
    # annotation files -> VideoRecord lists
    "AnnotationError",
    "VideoRecord",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_list_file",
    "read_ssv2",
    "read_ucf101",
    # decoding
    "DecodeError",
    "DecodeOptions",
    "MissingDecoderError",
    "VideoReader",
    "read_clip",
    # frame samplers, pipelines, datasets and their collate functions
    "DenseSampler",
    "SegmentSampler",
    "EvalPipeline",
    "FinetunePipeline",
    "PretrainPipeline",
    "FinetuneDataset",
    "MultiViewDataset",
    "PretrainDataset",
    "collate_repeated",
    "FailureLog",
    "normalize_batch",
    # fine-tuning augmentation
    "Mixup",
    "RandAugment",
    "parse_randaugment",
    # synthetic datasets
    "cached_synthetic_ucf101",
    "make_synthetic_ucf101",
    "make_synthetic_ava",
    # AVA
    "AVADataset",
    "AVAFiles",
    "AVAFrame",
    "collate_ava",
    "read_ava_boxes",
    "read_ava_exclusions",
    "read_ava_label_map",
]
