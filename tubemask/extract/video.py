"""One video to its features: decode the frames of a batch of windows once, resize, crop, normalise, encode.

Frames are read once per batch of windows (the union of their indices, so overlapping windows do not decode a frame
twice), resized so the short side is `input_size`, centre-cropped to `input_size x input_size` and normalised with
ImageNet's mean and std as the recipes' clips are (`imagenet_norm=False`: pixels in [0, 1], as VideoMAE V2's
`extract_tad_feature.py` feeds them).
"""

from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float

from tubemask.data.decoding import DecodeError, VideoReader
from tubemask.data.model_input import normalize_batch
from tubemask.data.transforms import center_crop, resize_short_side
from tubemask.extract.feature_model import ClipFeatureModel
from tubemask.extract.windows import window_indices
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.shapes import typechecked

__all__ = ["extract_video"]


@typechecked
def extract_video(
    model: ClipFeatureModel,
    reader: VideoReader,
    *,
    window_frames: int,
    sampling_rate: int,
    window_stride: int,
    input_size: int,
    batch_size: int = 8,
    imagenet_norm: bool = True,
    dtype: Literal["fp32", "bf16"] = "fp32",
) -> Float[np.ndarray, "w d"]:
    """The features of every window of one open video (see [`tubemask.extract.windows`][]), float32 `[w d]`.

    The model runs where its parameters are. When frames fail to decode (a header that over-counts), the reader
    shrinks its frame count to the frames that decode and the windows are made again, once.

    Args:
        model: A [ClipFeatureModel][tubemask.extract.feature_model.ClipFeatureModel] in eval mode.
        reader: The open video.
        window_frames: Frames per window.
        sampling_rate: Step between the frames of a window.
        window_stride: Frames between window starts.
        input_size: Short side resize, then centre crop to `input_size x input_size`.
        batch_size: Windows per forward pass.
        imagenet_norm: ImageNet mean/std normalisation (else pixels in [0, 1]).
        dtype: `"fp32"`, or `"bf16"` autocast on the model's device.

    Returns:
        One row per window, in time order.

    Raises:
        DecodeError: The file is truncated (its header states more frames than decode) or still fails to decode.
    """
    for attempt in range(2):
        if reader.truncated:
            raise DecodeError(
                reader.path, f"truncated: header says {reader.header_frames} frames, {reader.num_frames} decode"
            )
        windows = window_indices(
            reader.num_frames, window_frames=window_frames, sampling_rate=sampling_rate, window_stride=window_stride
        )
        try:
            return _encode(model, reader, windows, input_size, batch_size, imagenet_norm, dtype)
        except DecodeError:
            if attempt or not reader.shrink():
                raise
    raise AssertionError("unreachable")


def _encode(
    model: ClipFeatureModel,
    reader: VideoReader,
    windows: list[list[int]],
    input_size: int,
    batch_size: int,
    imagenet_norm: bool,
    dtype: str,
) -> np.ndarray:
    device = next(model.parameters()).device
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_norm else ((0.0,) * 3, (1.0,) * 3)
    channels = model.tokenizer.in_channels
    mean, std = (mean * channels)[:channels], (std * channels)[:channels]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    rows = []
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        needed = sorted({i for window in batch for i in window})  # each frame decoded and resized once per batch
        frames = reader.get_frames(needed)  # uint8 [u c h w]
        frames = center_crop(resize_short_side(frames, input_size), input_size)
        slot = {index: k for k, index in enumerate(needed)}
        take = torch.tensor([[slot[i] for i in window] for window in batch])  # [b t]
        clips = frames[take].permute(0, 2, 1, 3, 4)  # uint8 [b c t h w]
        clips = normalize_batch(clips.to(device, non_blocking=True), mean, std)
        with torch.inference_mode(), autocast:
            rows.append(model(clips).float().cpu())  # [b d]
    return torch.cat(rows).numpy()
