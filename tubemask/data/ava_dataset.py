"""AVA keyframe clips with their person boxes, moved through the same resize, crop and flip as the frames.

[`AVADataset`][tubemask.data.ava_dataset.AVADataset] decodes `num_frames` frames at `frame_stride` centred on each
keyframe of [`read_ava_boxes`][tubemask.data.ava.read_ava_boxes]; [`collate_ava`][tubemask.data.ava_dataset.collate_ava]
batches a variable number of boxes per clip as RoIAlign's `[r 5]` rois. Training draws its scale, crop, flip, box
jitter and colour jitter from the sample's generator; testing resizes only (both sides multiples of the patch size).
A keyframe whose time does not fall inside its video under the time offset raises
[`KeyframeOutsideVideo`][tubemask.data.ava_dataset.KeyframeOutsideVideo]: a wrong `time_offset` (900 for AVA's
15-minute cuts, 0 for full movies) would otherwise decode the wrong second.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.data import Dataset

from tubemask.data.ava import AVAFrame, FrameKey
from tubemask.data.ava_augment import extend_boxes, hsv_jitter, jitter_boxes, official_box_jitter
from tubemask.data.clip_geometry import ClipGeometry, draw_train_geometry, eval_geometry
from tubemask.data.decoding import DecodeError, VideoReader, read_clip
from tubemask.data.failures import FailureLog
from tubemask.data.loading import DecodeOptions, SampleKey, load_with_substitutes, sample_generator, split_key
from tubemask.data.model_input import normalize
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.shapes import typechecked

__all__ = ["AVABatch", "AVADataset", "AVASample", "KeyframeOutsideVideo", "collate_ava"]


class KeyframeOutsideVideo(ValueError):
    """A keyframe's time, `timestamp - time_offset`, is not inside its video: the offset does not fit the files
    (AVA's 15-minute cuts start at movie second 900; full movies at 0). Not a bad video, so never replaced by another
    keyframe.

    Attributes:
        path: The video file.
        key: The keyframe `(video_id, timestamp)`.
        time_offset: The offset it was read with.
        length: The video's length in seconds (its frames over its frame rate).
    """

    def __init__(self, path: str | os.PathLike, key: FrameKey, time_offset: float, length: float) -> None:
        time = key[1] - time_offset
        super().__init__(
            f"{path}: keyframe {key[0]},{key[1]} is at {time:g} s of the file under time offset {time_offset:g} "
            f"(timestamp - offset), outside the video's {length:.2f} s; AVA's 15-minute cuts start at movie second "
            "900 (--time-offset 900), full movies at 0 (--time-offset 0)"
        )
        self.path, self.key, self.time_offset, self.length = str(path), key, time_offset, length


@typechecked
@dataclass(frozen=True, eq=False)
class AVASample:
    """One keyframe clip with its boxes.

    Attributes:
        clip: Normalised `[c t h w]` clip; `h` and `w` are multiples of the dataset's `size_multiple`.
        boxes: `[r 4]` boxes `x1 y1 x2 y2` in pixels of `clip` (after resize, crop and flip), clipped to it.
        norm_boxes: `[r 4]` the frame's normalised boxes as annotated (what evaluation compares; not jittered).
        labels: `[r classes]` multi-hot actions as float (BCE targets).
        scores: `[r]` box scores (1.0 for ground truth).
        key: The keyframe.
    """

    clip: Float[Tensor, "c t h w"]
    boxes: Float[Tensor, "r 4"]
    norm_boxes: Float[Tensor, "r 4"]
    labels: Float[Tensor, "r classes"]
    scores: Float[Tensor, " r"]
    key: FrameKey


class AVADataset(Dataset):
    """Keyframe clips of AVA with their person boxes (VideoMAE's detection fine-tuning and testing).

    `dataset[i]` decodes `num_frames` frames at `frame_stride` centred on keyframe `i`: its time inside the file is
    `timestamp - time_offset` seconds (AVA's files start at second 900 of the movie), the keyframe's frame index is
    `k = round(time * fps)` with the stream's average frame rate, and the clip takes indices
    `k + frame_stride * (j - num_frames // 2)`, `j = 0..num_frames-1`; the frames of the window that run past an
    edge of the video are clamped to it. The keyframe itself must lie inside the video (`0 <= k < ` the frame count
    the file states), else [`KeyframeOutsideVideo`][tubemask.data.ava_dataset.KeyframeOutsideVideo] is raised: a
    configuration error (the time offset), not a bad file, so it is never substituted.

    - Training (`train=True`): the short side is resized to a random integer in `scale_jitter`, a random
      `crop_size` square is cut (no crop with `crop_size=None`: then each side is rounded to `size_multiple`),
      the clip is mirrored with probability `flip`, and each box is jittered by up to `box_jitter` of its size
      ([`jitter_boxes`][tubemask.data.ava_augment.jitter_boxes]), or with `official_box_jitter` each edge as
      VideoMAE's AVA code does ([`official_box_jitter`][tubemask.data.ava_augment.official_box_jitter]); with
      `colour_jitter` the clip is recoloured in HSV space ([`hsv_jitter`][tubemask.data.ava_augment.hsv_jitter]).
      A box that the crop cuts away keeps its row with zero width or height (as SlowFast does), so a sample always
      has one row per annotated box.
    - Testing: the short side is resized to `short_side` and the long side to the multiple of `size_multiple`
      nearest the aspect-preserving length (both sides multiples of `size_multiple`); no crop, no flip. The boxes
      given to the model are widened by `test_box_extension`
      ([`extend_boxes`][tubemask.data.ava_augment.extend_boxes]; VideoMAE: `(0.1, 0.05)`); `norm_boxes` stay the
      detector's, as reported.

    All randomness of sample `i` in epoch `e` comes from
    [`sample_generator(seed, e, i)`][tubemask.data.loading.sample_generator] in a fixed order (short side, crop
    offset, flip, box jitter, colour jitter); a key may also be an `(epoch, index)` pair, as in the other datasets.
    A video that is missing (no `<video_root>/<video_id><ext>` for any of `video_extensions`), does not decode, or
    is cut short before the keyframe (the header states more frames than decode) is counted in `failures` and
    replaced by another keyframe drawn from the same generator, so the returned `key` says which keyframe a sample
    is; `strict=True` raises instead. At test time an evaluator should thus keep the first result per key. A
    truncated video (its header states more frames than decode) is named in `failures` once
    ([`record_truncated`][tubemask.data.failures.FailureLog.record_truncated]); its keyframes inside the frames that
    decode are used.

    Args:
        frames: Keyframes, e.g. `read_ava_boxes(...)` (a mapping's values are used, in order).
        video_root: Directory with the videos.
        train: Training augmentation (True) or the test transform.
        num_frames: Frames per clip.
        frame_stride: Frame step between them.
        time_offset: Movie second at which the files start (900 for AVA's cut movies, 0 for uncut files).
        short_side: Test short side.
        scale_jitter: Training short side range, inclusive.
        crop_size: Training square crop (a multiple of `size_multiple`, at most `scale_jitter[0]`), or None.
        flip: Training probability of a horizontal flip.
        box_jitter: Training box jitter, a fraction of each box's size.
        official_box_jitter: Jitter training boxes as VideoMAE's AVA code does instead (`box_jitter` is then unused).
        colour_jitter: Recolour training clips in HSV space as VideoMAE's AVA code does.
        test_box_extension: Test-time widening and heightening of the boxes the model pools, fractions of the box.
        size_multiple: Output sides are multiples of this (the patch size).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
        decode: Decoding options (`seek_mode="approximate"` skips the packet scan of long movies at open).
        seed: Base seed.
        video_extensions: File extensions tried, in order.
        strict: Raise on the first bad video instead of substituting.
        max_substitutions: Bad videos in a row tolerated for one sample before raising.
    """

    def __init__(
        self,
        frames: Sequence[AVAFrame] | Mapping[FrameKey, AVAFrame],
        video_root: str | os.PathLike,
        *,
        train: bool,
        num_frames: int = 16,
        frame_stride: int = 4,
        time_offset: float = 900.0,
        short_side: int = 256,
        scale_jitter: tuple[int, int] = (256, 320),
        crop_size: int | None = 224,
        flip: float = 0.5,
        box_jitter: float = 0.0,
        official_box_jitter: bool = False,
        colour_jitter: bool = False,
        test_box_extension: tuple[float, float] = (0.0, 0.0),
        size_multiple: int = 16,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        decode: DecodeOptions | None = None,
        seed: int = 0,
        video_extensions: Sequence[str] = (".mp4", ".mkv", ".webm", ".avi"),
        strict: bool = False,
        max_substitutions: int = 20,
    ) -> None:
        self.frames = list(frames.values()) if isinstance(frames, Mapping) else list(frames)
        if not self.frames:
            raise ValueError("AVADataset needs at least one keyframe")
        if num_frames < 1 or frame_stride < 1 or size_multiple < 1 or short_side < 1:
            raise ValueError(
                f"num_frames={num_frames}, frame_stride={frame_stride}, size_multiple={size_multiple} and "
                f"short_side={short_side} must be >= 1"
            )
        if not 1 <= scale_jitter[0] <= scale_jitter[1]:
            raise ValueError(f"scale_jitter={scale_jitter} must be (low, high) with 1 <= low <= high")
        if crop_size is not None and (crop_size % size_multiple or not size_multiple <= crop_size <= scale_jitter[0]):
            raise ValueError(
                f"crop_size={crop_size} must be a multiple of size_multiple={size_multiple} and at most the smallest "
                f"training short side scale_jitter[0]={scale_jitter[0]}"
            )
        if not 0.0 <= flip <= 1.0 or box_jitter < 0 or min(test_box_extension) < 0:
            raise ValueError(
                f"flip={flip} must be in [0, 1], box_jitter={box_jitter} and test_box_extension={test_box_extension} "
                ">= 0"
            )
        self.video_root = Path(video_root)
        self.train = train
        self.num_frames, self.frame_stride, self.time_offset = num_frames, frame_stride, time_offset
        self.short_side, self.scale_jitter, self.crop_size = short_side, tuple(scale_jitter), crop_size
        self.flip, self.box_jitter, self.size_multiple = flip, box_jitter, size_multiple
        self.official_box_jitter, self.colour_jitter = official_box_jitter, colour_jitter
        self.test_box_extension = (float(test_box_extension[0]), float(test_box_extension[1]))
        self.mean, self.std = tuple(mean), tuple(std)
        self.decode = decode or DecodeOptions()
        self.seed, self.epoch = seed, 0
        self.video_extensions = tuple(video_extensions)
        self.strict, self.max_substitutions = strict, max_substitutions
        self.failures = FailureLog()
        self._paths: dict[str, Path | None] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` makes (call before iterating each epoch)."""
        self.epoch = epoch

    def video_path(self, video_id: str) -> Path | None:
        """The first `<video_root>/<video_id><ext>` that exists, or None."""
        if video_id not in self._paths:
            found = (self.video_root / f"{video_id}{ext}" for ext in self.video_extensions)
            self._paths[video_id] = next((p for p in found if p.is_file()), None)
        return self._paths[video_id]

    def keyframe_index(self, timestamp: int, fps: float) -> int:
        """The frame of the file at movie second `timestamp`: `round((timestamp - time_offset) * fps)`."""
        return int(round((timestamp - self.time_offset) * fps))

    def frame_indices(self, timestamp: int, fps: float, num_decodable: int) -> list[int]:
        """Indices of the clip of the keyframe at movie second `timestamp`; the window's frames past an edge are
        clamped to `0..num_decodable - 1` (the keyframe's own place is checked by the caller)."""
        k = self.keyframe_index(timestamp, fps)
        raw = [k + self.frame_stride * (j - self.num_frames // 2) for j in range(self.num_frames)]
        return [min(max(i, 0), max(num_decodable - 1, 0)) for i in raw]

    def _decode(self, frame: AVAFrame) -> Tensor:
        path = self.video_path(frame.video_id)
        if path is None:
            tried = "/".join(self.video_extensions)
            raise DecodeError(self.video_root / frame.video_id, f"no video file with extension {tried}")
        reader = VideoReader(
            path,
            seek_mode=self.decode.seek_mode,
            num_ffmpeg_threads=self.decode.num_ffmpeg_threads,
            device=self.decode.device,
        )
        fps = reader.fps
        if not fps or fps <= 0:
            raise DecodeError(path, f"no average frame rate in the header ({fps!r})")
        stated = max(reader.num_frames, reader.header_frames or 0)  # a cut-short file still states its full length
        k = self.keyframe_index(frame.timestamp, fps)
        if not 0 <= k < stated:
            raise KeyframeOutsideVideo(path, frame.key, self.time_offset, stated / fps)
        frames, _ = read_clip(
            reader, lambda n: self.frame_indices(frame.timestamp, fps, n), max_attempts=self.decode.max_attempts
        )
        if reader.truncated:  # named even when the keyframe lies in the lost part (then also a failed load below)
            self.failures.record_truncated(str(path), reader.header_frames, reader.num_frames)
        if k >= reader.num_frames:  # the header's length holds it, the frames that decode do not: a bad file
            raise DecodeError(
                path,
                f"keyframe {frame.key} (frame {k}) lies in the part of the file that does not decode (only "
                f"{reader.num_frames} of {stated} frames decode)",
            )
        return frames

    def _geometry(self, h: int, w: int, generator: torch.Generator) -> ClipGeometry:
        if not self.train:
            return eval_geometry(h, w, self.short_side, self.size_multiple)
        return draw_train_geometry(
            h, w, self.scale_jitter, self.crop_size, self.size_multiple, self.flip, generator=generator
        )

    def __getitem__(self, index: SampleKey) -> AVASample:
        epoch, index = split_key(index, self.epoch)
        if not 0 <= index < len(self.frames):
            raise IndexError(f"index {index} out of range for {len(self.frames)} keyframes")
        generator = sample_generator(self.seed, epoch, index)
        frames, used = load_with_substitutes(
            lambda i: self._decode(self.frames[i]),
            index,
            count=len(self.frames),
            generator=generator,
            failures=self.failures,
            strict=self.strict,
            max_substitutions=self.max_substitutions,
            what="keyframes",
            name=lambda i: self.frames[i].key,
            hint="most of the videos may be missing or unreadable",
        )
        frame = self.frames[used]
        geometry = self._geometry(frames.shape[-2], frames.shape[-1], generator)
        boxes = frame.boxes
        if self.train and self.official_box_jitter:
            boxes = official_box_jitter(boxes, generator)
        elif self.train and self.box_jitter > 0:
            boxes = jitter_boxes(boxes, self.box_jitter, generator)
        elif not self.train and max(self.test_box_extension) > 0:
            boxes = extend_boxes(boxes, self.test_box_extension)
        pixels = geometry.frames(frames)
        if self.train and self.colour_jitter:
            pixels = hsv_jitter(pixels, generator)
        clip = normalize(pixels, mean=self.mean, std=self.std)
        return AVASample(
            clip=clip,
            boxes=geometry.boxes(boxes),
            norm_boxes=frame.boxes,
            labels=frame.labels.float(),
            scores=frame.scores,
            key=frame.key,
        )


@typechecked
@dataclass(frozen=True, eq=False)
class AVABatch:
    """A batch of keyframe clips and all their boxes, as a RoI head takes them.

    Attributes:
        clips: `[b c t h w]` normalised clips.
        rois: `[r 5]` one row per box: `(clip index in the batch, x1, y1, x2, y2)` in pixels of the clips
            (`torchvision.ops.roi_align`'s format).
        labels: `[r classes]` multi-hot float targets.
        scores: `[r]` box scores.
        norm_boxes: `[r 4]` the annotated normalised boxes.
        keys: The keyframe of each clip (`keys[int(rois[j, 0])]` is the keyframe of box `j`; see
            [`roi_keys`][tubemask.data.ava_dataset.AVABatch.roi_keys]).
    """

    clips: Float[Tensor, "b c t h w"]
    rois: Float[Tensor, "r 5"]
    labels: Float[Tensor, "r classes"]
    scores: Float[Tensor, " r"]
    norm_boxes: Float[Tensor, "r 4"]
    keys: list[FrameKey]

    def roi_keys(self) -> list[FrameKey]:
        """The keyframe of each box, in roi order."""
        return [self.keys[int(i)] for i in self.rois[:, 0].tolist()]

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "AVABatch":
        """The batch with `fn` applied to every tensor (the keys copied)."""
        tensors = {name: fn(getattr(self, name)) for name in ("clips", "rois", "labels", "scores", "norm_boxes")}
        return AVABatch(**tensors, keys=list(self.keys))

    def pin_memory(self) -> "AVABatch":
        """The batch with every tensor in page-locked host memory (a DataLoader with `pin_memory=True` calls this, so
        `to(device, non_blocking=True)` can overlap the copy with compute). Needs an accelerator."""
        return self._map(Tensor.pin_memory)

    def to(self, device: str | torch.device, *, non_blocking: bool = False) -> "AVABatch":
        """The batch with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))


def collate_ava(samples: list[AVASample]) -> AVABatch:
    """Batch [`AVASample`][tubemask.data.ava_dataset.AVASample]s: stack the clips (one shape: use a crop, or batch size 1
    for test clips of different aspect) and concatenate the boxes, tagged with their clip's index."""
    if not samples:
        raise ValueError("collate_ava needs at least one sample")
    shapes = {tuple(s.clip.shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"clips of different shapes {sorted(shapes)} cannot be batched; use batch_size=1 for them")
    owner = torch.cat([torch.full((len(s.boxes), 1), float(i)) for i, s in enumerate(samples)])
    return AVABatch(
        clips=torch.stack([s.clip for s in samples]),
        rois=torch.cat([owner, torch.cat([s.boxes for s in samples])], dim=1),
        labels=torch.cat([s.labels for s in samples]),
        scores=torch.cat([s.scores for s in samples]),
        norm_boxes=torch.cat([s.norm_boxes for s in samples]),
        keys=[s.key for s in samples],
    )
