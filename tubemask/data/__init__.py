"""Clip loading for VideoMAE-style training: decoding, frame sampling, annotation formats, transforms, datasets.

`import tubemask.data` does not need torchcodec; decoding imports it when first asked (see
[`tubemask.data.decoding`][]). Frames travel as uint8 `[t c h w]` until a pipeline normalizes them into the model
input, float `[c t h w]`, or (with `normalize=False`) hands uint8 `[c t h w]` clips to the training loop, which
normalizes the batch on its device with [`normalize_batch`][tubemask.data.transforms.normalize_batch]. Those uint8
clips keep the decoder's channels-last memory (`[t h w c]` storage) through repeats and the collate
([`stack_clips`][tubemask.data.transforms.stack_clips]); `normalize_batch` returns a contiguous float batch.
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
from tubemask.data.ava import (
    AVA_NUM_CLASSES,
    AVAFiles,
    AVAFrame,
    FrameKey,
    read_ava_boxes,
    read_ava_exclusions,
    read_ava_label_map,
)
from tubemask.data.ava_dataset import AVABatch, AVADataset, AVASample, collate_ava, jitter_boxes
from tubemask.data.datasets import (
    DecodeOptions,
    FinetuneDataset,
    MultiViewDataset,
    PretrainDataset,
    RecordClips,
    SampleKey,
    collate_repeated,
    sample_generator,
)
from tubemask.data.decoding import DecodeError, MissingDecoderError, VideoReader, read_clip, require_torchcodec
from tubemask.data.failures import FailureLog
from tubemask.data.mixup import Mixup, smooth_one_hot
from tubemask.data.pipelines import EvalPipeline, FinetunePipeline, PretrainPipeline
from tubemask.data.randaugment import RandAugment, parse_randaugment
from tubemask.data.sampling import (
    DenseSampler,
    SegmentSampler,
    clip_span,
    dense_indices,
    multiview_indices,
    multiview_segment_indices,
    segment_indices,
)
from tubemask.data.synthetic import (
    MOTION_CLASSES,
    cached_synthetic_ucf101,
    make_synthetic_ucf101,
    render_motion_clip,
    synthetic_ucf101_root,
)
from tubemask.data.synthetic_ava import SYNTHETIC_AVA_CLASSES, SyntheticAVA, make_synthetic_ava
from tubemask.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop,
    channels_first,
    horizontal_flip,
    multi_scale_crop,
    normalize,
    normalize_batch,
    random_erasing,
    random_resized_crop,
    resize_short_side,
    stack_clips,
    three_crop,
)

__all__ = [
    "AVABatch",
    "AVADataset",
    "AVAFiles",
    "AVAFrame",
    "AVASample",
    "AVA_NUM_CLASSES",
    "AnnotationError",
    "RecordClips",
    "DecodeError",
    "DecodeOptions",
    "DenseSampler",
    "EvalPipeline",
    "FailureLog",
    "FinetuneDataset",
    "FinetunePipeline",
    "FrameKey",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOTION_CLASSES",
    "MissingDecoderError",
    "Mixup",
    "MultiViewDataset",
    "PretrainDataset",
    "PretrainPipeline",
    "RandAugment",
    "SYNTHETIC_AVA_CLASSES",
    "SegmentSampler",
    "SyntheticAVA",
    "VideoReader",
    "VideoRecord",
    "cached_synthetic_ucf101",
    "center_crop",
    "channels_first",
    "clip_span",
    "collate_ava",
    "collate_repeated",
    "dense_indices",
    "horizontal_flip",
    "jitter_boxes",
    "make_synthetic_ava",
    "make_synthetic_ucf101",
    "multi_scale_crop",
    "multiview_indices",
    "multiview_segment_indices",
    "normalize",
    "normalize_batch",
    "parse_randaugment",
    "random_erasing",
    "random_resized_crop",
    "read_ava_boxes",
    "read_ava_exclusions",
    "read_ava_label_map",
    "read_clip",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_list_file",
    "read_ssv2",
    "read_ucf101",
    "render_motion_clip",
    "require_torchcodec",
    "resize_short_side",
    "SampleKey",
    "sample_generator",
    "segment_indices",
    "smooth_one_hot",
    "stack_clips",
    "synthetic_ucf101_root",
    "three_crop",
]
