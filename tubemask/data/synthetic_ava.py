"""A synthetic AVA: textured "actors" whose action shows only inside their box, in AVA's file formats.

Each video shows one or two textured rectangles (the actors) over a static textured background. Each actor keeps one
motion for the whole video, `"move left"`, `"move right"` or `"stay still"` (action ids 1, 2, 3), and may also
`"flicker"` (id 4: its colours change from frame to frame), so some actors carry two labels, as AVA's people do.
Appearance, size and lane are drawn independently of the actions, so a single frame does not tell them apart: a
model has to look at the box over time.

[`make_synthetic_ava`][tubemask.data.synthetic_ava.make_synthetic_ava] writes real mp4 files with torchcodec's
encoder and the AVA annotation files (ground truth, person detections, label map, exclusions), so the readers of
[`tubemask.data.ava`][] and the whole decoding path run on it.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tubemask.data.ava import AVAFiles
from tubemask.data.decoding import require_torchcodec
from tubemask.data.motion_clips import random_colour_pair, random_texture
from tubemask.data.synthetic import write_dataset_once

__all__ = ["SYNTHETIC_AVA_CLASSES", "SyntheticAVA", "make_synthetic_ava"]

SYNTHETIC_AVA_CLASSES = ("move left", "move right", "stay still", "flicker")
"""Action names by id - 1; a dataset with `num_classes=k` uses the first `k` (motions first, then flicker)."""

_MOTIONS = 3


@dataclass(frozen=True)
class SyntheticAVA:
    """Where [`make_synthetic_ava`][tubemask.data.synthetic_ava.make_synthetic_ava] put things.

    Attributes:
        root: The dataset directory.
        video_root: `root/videos`, with `<video_id>.mp4`.
        train_csv: Ground truth of the training videos (AVA format, 8 fields).
        val_csv: Ground truth of the validation videos.
        val_detections_csv: Person detections on the validation keyframes (`video,ts,x1,y1,x2,y2,,score`).
        label_map: The classes as an AVA pbtxt.
        exclusions: `video_id,timestamp` of the validation keyframe left out of evaluation.
        class_names: Action names by id - 1.
        time_offset: Movie second at which each file starts (keyframe `t` is at `t - time_offset` s of the file).
    """

    root: Path
    video_root: Path
    train_csv: Path
    val_csv: Path
    val_detections_csv: Path
    label_map: Path
    exclusions: Path
    class_names: tuple[str, ...]
    time_offset: int

    def files(self, *, time_offset: float | None = None) -> AVAFiles:
        """The paths as a detection run reads them ([AVAFiles][tubemask.data.ava.AVAFiles]); `time_offset`: the
        dataset's unless given."""
        paths = (self.video_root, self.train_csv, self.val_csv, self.val_detections_csv, self.label_map)
        return AVAFiles(*paths, self.exclusions, time_offset=self.time_offset if time_offset is None else time_offset)


def _paths(root: Path, num_classes: int, time_offset: int) -> SyntheticAVA:
    notes = root / "annotations"
    return SyntheticAVA(
        root=root,
        video_root=root / "videos",
        train_csv=notes / "ava_train_synthetic.csv",
        val_csv=notes / "ava_val_synthetic.csv",
        val_detections_csv=notes / "ava_val_predicted_boxes.csv",
        label_map=notes / "ava_action_list_synthetic.pbtxt",
        exclusions=notes / "ava_val_excluded_timestamps_synthetic.csv",
        class_names=SYNTHETIC_AVA_CLASSES[:num_classes],
        time_offset=time_offset,
    )


def _render_video(
    rng: np.random.Generator, actors: list[dict], num_frames: int, size: tuple[int, int]
) -> tuple[Tensor, list[Tensor]]:
    """Frames `uint8 [t 3 h w]` and, per actor, its box `[t 4]` in pixels (x1 y1 x2 y2, end exclusive)."""
    h, w = size
    short = min(h, w)
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    bg_a, bg_b = random_colour_pair(rng)
    pattern = random_texture(rng, xs.expand(h, w) / short, ys.expand(h, w) / short)
    frames = (bg_a[:, :, 0] * pattern + bg_b[:, :, 0] * (1 - pattern)).unsqueeze(0).repeat(num_frames, 1, 1, 1)
    lane = w / len(actors)
    s = torch.linspace(0.0, 1.0, num_frames)
    boxes = []
    for j, actor in enumerate(actors):
        bw = int(round(lane * rng.uniform(0.3, 0.4)))
        bh = int(round(h * rng.uniform(0.45, 0.65)))
        top = int(rng.integers(0, h - bh + 1))
        span = lane - bw  # how far the actor can travel in its lane
        start = {1: span * 0.9, 2: span * 0.1}.get(actor["motion"], span * rng.uniform(0.2, 0.8))
        travel = {1: -span * 0.8, 2: span * 0.8}.get(actor["motion"], 0.0)
        left = (j * lane + start + travel * s).round().long()  # [t]
        fg_a, fg_b = random_colour_pair(rng)
        fl_a, fl_b = random_colour_pair(rng)
        u = torch.arange(bw, dtype=torch.float32).view(1, bw) / short
        v = torch.arange(bh, dtype=torch.float32).view(bh, 1) / short
        texture = random_texture(rng, u.expand(bh, bw), v.expand(bh, bw))  # moves with the actor
        flicker = rng.uniform(0, 1, num_frames) < 0.5 if actor["flicker"] else np.zeros(num_frames, dtype=bool)
        for i in range(num_frames):
            a, b = (fl_a, fl_b) if flicker[i] else (fg_a, fg_b)
            x = int(left[i])
            frames[i, :, top : top + bh, x : x + bw] = a[:, :, 0] * texture + b[:, :, 0] * (1 - texture)
        boxes.append(torch.stack([left, torch.full_like(left, top), left + bw, torch.full_like(left, top + bh)], 1))
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8), boxes


def make_synthetic_ava(
    root: str | os.PathLike,
    *,
    num_videos: int = 6,
    seconds: int = 6,
    fps: int = 10,
    size: tuple[int, int] = (96, 128),
    num_classes: int = 4,
    seed: int = 0,
    time_offset: int = 900,
) -> SyntheticAVA:
    """Write (once) a tiny AVA-format dataset of synthetic actors and return its paths.

    Layout under `root`: `videos/<video_id>.mp4` (mpeg4, `seconds * fps` frames) and `annotations/` with
    `ava_train_synthetic.csv`, `ava_val_synthetic.csv` (ground truth; about two thirds of the videos train),
    `ava_val_predicted_boxes.csv` (the validation boxes slightly jittered with scores in [0.8, 1], plus false
    positives with low and high scores), `ava_action_list_synthetic.pbtxt` and
    `ava_val_excluded_timestamps_synthetic.csv` (one validation keyframe). Keyframes are at movie seconds
    `time_offset + 1 .. time_offset + seconds - 1`, one per second. The defaults take about a second on a CPU.

    Idempotent and atomic like [`make_synthetic_ucf101`][tubemask.data.synthetic.make_synthetic_ucf101]: a complete
    dataset made with the same arguments is returned as is (marked by `synthetic.json`); otherwise it is written to a
    temporary sibling directory renamed to `root` at the end.

    Args:
        root: Dataset directory (must not exist, be empty, or hold this same dataset).
        num_videos: Videos (at least 2: one train, one validation).
        seconds: Length of each video (at least 2).
        fps: Frame rate.
        size: `(height, width)`, even sides of at least 32.
        num_classes: The first `num_classes` of `SYNTHETIC_AVA_CLASSES` (1..4; flicker needs 4).
        seed: The same arguments always give the same files.
        time_offset: Movie second of each file's first frame (AVA: 900).

    Returns:
        The paths, as a [`SyntheticAVA`][tubemask.data.synthetic_ava.SyntheticAVA].

    Raises:
        ValueError: Arguments out of range.
        FileExistsError: `root` holds something else.
        MissingDecoderError: torchcodec or FFmpeg's libraries are missing.
    """
    h, w = size
    if num_videos < 2 or seconds < 2 or fps < 1:
        raise ValueError(f"num_videos={num_videos} and seconds={seconds} must be >= 2, fps={fps} >= 1")
    if h < 32 or w < 32 or h % 2 or w % 2:
        raise ValueError(f"size={size}: sides must be even and >= 32 (yuv420 video)")
    if not 1 <= num_classes <= len(SYNTHETIC_AVA_CLASSES):
        raise ValueError(f"num_classes={num_classes}; allowed 1..{len(SYNTHETIC_AVA_CLASSES)}")
    root = Path(root)
    params = dict(
        kind="ava",
        num_videos=num_videos,
        seconds=seconds,
        fps=fps,
        size=[h, w],
        num_classes=num_classes,
        seed=seed,
        time_offset=time_offset,
    )
    paths = _paths(root, num_classes, time_offset)

    def build(tmp: Path) -> None:
        VideoEncoder = require_torchcodec("encoders").VideoEncoder  # lazy: tubemask.data imports without it
        out = _paths(tmp, num_classes, time_offset)
        out.video_root.mkdir()
        out.train_csv.parent.mkdir()
        num_train = max(1, min(num_videos - 1, math.ceil(num_videos * 2 / 3)))
        motions = min(_MOTIONS, num_classes)
        truth: dict[bool, list[str]] = {True: [], False: []}
        detections, excluded = [], []
        for v in range(num_videos):
            rng = np.random.default_rng([seed, v])
            video_id = f"synth{v:03d}"
            actors = [
                {"motion": (v + j) % motions + 1, "flicker": num_classes > _MOTIONS and rng.uniform() < 0.5}
                for j in range(1 + v % 2)
            ]
            if v == 0 and num_classes > _MOTIONS:
                actors[0]["flicker"] = True  # at least one actor with two labels
            frames, boxes = _render_video(rng, actors, seconds * fps, (h, w))
            VideoEncoder(frames, frame_rate=fps).to_file(
                str(out.video_root / f"{video_id}.mp4"), codec="mpeg4", extra_options={"qscale": 3}
            )
            train = v < num_train
            for second in range(1, seconds):
                timestamp = time_offset + second
                for person, (actor, box) in enumerate(zip(actors, boxes, strict=True)):
                    norm = (box[second * fps].float() / torch.tensor([w, h, w, h])).clamp(0, 1).tolist()
                    coords = ",".join(f"{c:.3f}" for c in norm)
                    ids = [actor["motion"]] + ([_MOTIONS + 1] if actor["flicker"] else [])
                    truth[train] += [f"{video_id},{timestamp},{coords},{k},{person}" for k in ids]
                    if not train:
                        jitter = np.clip(np.array(norm) + rng.normal(0, 0.01, 4), 0, 1)
                        jitter[2:] = np.maximum(jitter[2:], jitter[:2])
                        detections.append((video_id, timestamp, jitter, rng.uniform(0.8, 1.0)))
                if not train:
                    for score in (rng.uniform(0.05, 0.5), rng.uniform(0.8, 0.95)) if second % 2 else ():
                        x, y = rng.uniform(0, 0.7), rng.uniform(0, 0.6)
                        fake = np.array([x, y, x + rng.uniform(0.1, 0.3), y + rng.uniform(0.2, 0.4)]).clip(0, 1)
                        detections.append((video_id, timestamp, fake, score))
                    if not excluded:
                        excluded.append(f"{video_id},{timestamp}")
        out.train_csv.write_text("".join(line + "\n" for line in truth[True]))
        out.val_csv.write_text("".join(line + "\n" for line in truth[False]))
        out.val_detections_csv.write_text(
            "".join(
                f"{vid},{ts},{','.join(f'{c:.3f}' for c in box)},,{score:.4f}\n" for vid, ts, box, score in detections
            )
        )
        items = [f'item {{\n  name: "{name}"\n  id: {k}\n}}\n' for k, name in enumerate(out.class_names, start=1)]
        out.label_map.write_text("".join(items))
        out.exclusions.write_text("".join(line + "\n" for line in excluded))

    write_dataset_once(root, params, build)
    return paths
