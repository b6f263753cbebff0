"""Reconstruction pictures and videos: what the masked autoencoder saw and what it predicted.

All functions work in pixel space `[0, 1]`. The model's input is usually normalised with the dataset mean / std, so
pass those (`mean`, `std`, per channel) to undo it. Masks are `Bool[b n]` with **True = masked** (hidden from the
encoder), tokens in raster `(t, h, w)` order, cube values laid out as `(p0 p1 p2 c)`, channel fastest.

Typical use after a pretraining step:

```python
original = unnormalize(video, mean=mean, std=std)
masked = masked_input(video, mask, tubelet_size=2, patch_size=16, mean=mean, std=std)
recon = reconstruct_video(video, pred, masked_ids, mask, tubelet_size=2, patch_size=16,
                          norm_pix=True, mean=mean, std=std)
save_reconstruction_png("recon.png", original[0], masked[0], recon[0])
```
"""

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from tubemask.atomic import atomic_path
from tubemask.grid import token_grid
from tubemask.shapes import typechecked
from tubemask.tokenizers import patchify, unpatchify

__all__ = [
    "unnormalize",
    "masked_input",
    "reconstruct_video",
    "reconstruction_grid",
    "reconstruction_frames",
    "save_reconstruction_png",
    "save_reconstruction_mp4",
    "save_model_reconstruction",
]

NORM_PIX_EPS = 1e-6
"""The epsilon of VideoMAE's norm-pix targets: `(x - mean) / (std + eps)`."""

_Stat = Sequence[int | float] | Tensor | float | None


def _channel_stat(value: _Stat, video: Tensor, name: str) -> Tensor | None:
    if value is None:
        return None
    stat = torch.as_tensor(value, dtype=video.dtype, device=video.device).flatten()
    channels = video.shape[1]
    if stat.numel() not in (1, channels):
        raise ValueError(f"{name} has {stat.numel()} values; expected 1 or one per channel ({channels})")
    return stat.expand(channels).view(1, channels, 1, 1, 1)


@typechecked
def unnormalize(
    video: Float[Tensor, "b c t h w"], *, mean: _Stat = None, std: _Stat = None
) -> Float[Tensor, "b c t h w"]:
    """Undo per-channel normalisation: `video * std + mean` (either may be `None` to skip it)."""
    mean_t = _channel_stat(mean, video, "mean")
    std_t = _channel_stat(std, video, "std")
    out = video if std_t is None else video * std_t
    return out if mean_t is None else out + mean_t


def _check_mask(mask: Tensor, n: int, grid: tuple[int, int, int]) -> None:
    if mask.shape[1] != n:
        raise ValueError(f"mask has {mask.shape[1]} tokens per clip; the clip's grid {grid} has {n}")


@typechecked
def masked_input(
    video: Float[Tensor, "b c t h w"],
    mask: Bool[Tensor, "b n"],
    *,
    tubelet_size: int,
    patch_size: int,
    mean: _Stat = None,
    std: _Stat = None,
    fill: float | int = 0.5,
) -> Float[Tensor, "b c t h w"]:
    """The clip as the encoder sees it: pixels in `[0, 1]` with every masked cube (mask True) set to `fill` (grey).

    Args:
        video: the model input, normalised with `mean` / `std`.
        mask: True = masked, `n = T*H*W` tokens in raster order.
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.
        mean: per-channel mean the input was normalised with (`None`: the input is already in `[0, 1]`).
        std: per-channel std the input was normalised with.
        fill: grey level of masked cubes.
    """
    grid = token_grid(*video.shape[2:], tubelet_size=tubelet_size, patch_size=patch_size)
    cubes = patchify(unnormalize(video, mean=mean, std=std), tubelet_size=tubelet_size, patch_size=patch_size)
    _check_mask(mask, cubes.shape[1], grid)
    cubes = cubes.masked_fill(mask[..., None], fill)
    out = unpatchify(cubes, grid, tubelet_size=tubelet_size, patch_size=patch_size, channels=video.shape[1])
    return out.clamp(0.0, 1.0)


@typechecked
def reconstruct_video(
    video: Float[Tensor, "b c t h w"],
    pred: Float[Tensor, "b m k"],
    masked_ids: Int[Tensor, "b m"],
    mask: Bool[Tensor, "b n"],
    *,
    tubelet_size: int,
    patch_size: int,
    norm_pix: bool,
    mean: _Stat = None,
    std: _Stat = None,
    fill: float | int = 0.5,
) -> Float[Tensor, "b c t h w"]:
    """Rebuild pixels in `[0, 1]`: visible cubes from the input, masked cubes from the predictions.

    With `norm_pix=True` the predictions are in per-cube normalised units (VideoMAE's norm-pix targets); each is
    mapped back with the mean and unbiased std, per channel, of the ORIGINAL cube at that position, as in VideoMAE's
    visualisation. With `norm_pix=False` they are taken as pixel values in `[0, 1]`. Masked cubes that have no
    prediction (dual masking: the decoder reconstructs only some of them) are set to `fill`.

    Args:
        video: the model input, normalised with `mean` / `std`.
        pred: decoder predictions, one `k`-vector (`(p0 p1 p2 c)` layout) per id in `masked_ids`.
        masked_ids: flat raster indices of the predicted cubes; every one must be masked in `mask`.
        mask: True = masked.
        tubelet_size: frames per cube.
        patch_size: pixels per cube side.
        norm_pix: whether `pred` is in per-cube normalised units.
        mean: per-channel mean the input was normalised with (`None`: the input is already in `[0, 1]`).
        std: per-channel std the input was normalised with.
        fill: grey level of masked cubes without a prediction.

    Raises:
        ValueError: when `k` disagrees with the cube size, ids are out of range, or an id is not masked.
    """
    b, c = video.shape[:2]
    masked_ids = masked_ids.long()
    grid = token_grid(*video.shape[2:], tubelet_size=tubelet_size, patch_size=patch_size)
    cubes = patchify(unnormalize(video, mean=mean, std=std), tubelet_size=tubelet_size, patch_size=patch_size)
    n, k = cubes.shape[1:]
    _check_mask(mask, n, grid)
    if pred.shape[2] != k:
        raise ValueError(f"pred has {pred.shape[2]} values per cube; cubes of this clip hold {k}")
    if masked_ids.numel() and (int(masked_ids.min()) < 0 or int(masked_ids.max()) >= n):
        raise ValueError(
            f"masked_ids must be in [0, {n}), got values in [{int(masked_ids.min())}, {int(masked_ids.max())}]"
        )
    if not bool(mask.gather(1, masked_ids).all()):
        raise ValueError("masked_ids holds ids whose mask entry is False (visible); predictions belong to masked cubes")

    if norm_pix:
        per_channel = cubes.gather(1, masked_ids[..., None].expand(-1, -1, k)).view(b, -1, k // c, c)
        cube_mean = per_channel.mean(dim=2, keepdim=True)
        cube_std = per_channel.var(dim=2, unbiased=True, keepdim=True).sqrt() + NORM_PIX_EPS
        pixels = (pred.view(b, -1, k // c, c) * cube_std + cube_mean).view(b, -1, k)
    else:
        pixels = pred
    out = cubes.masked_fill(mask[..., None], fill)
    out = out.scatter(1, masked_ids[..., None].expand(-1, -1, k), pixels.to(out.dtype))
    return unpatchify(out, grid, tubelet_size=tubelet_size, patch_size=patch_size, channels=c).clamp(0.0, 1.0)


def _frame_ids(frames: int, max_frames: int) -> Tensor:
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if frames <= max_frames:
        return torch.arange(frames)
    return torch.linspace(0, frames - 1, max_frames).round().long()


def _as_rgb(clip: Tensor) -> Tensor:
    if clip.shape[0] == 3:
        return clip
    if clip.shape[0] == 1:
        return clip.expand(3, *clip.shape[1:])
    raise ValueError(f"pictures need 1 or 3 channels, got a clip of shape {tuple(clip.shape)}")


@typechecked
def reconstruction_grid(
    original: Float[Tensor, "c t h w"],
    masked: Float[Tensor, "c t h w"],
    recon: Float[Tensor, "c t h w"],
    *,
    max_frames: int = 8,
    pad: int = 2,
) -> Float[Tensor, "3 H W"]:
    """One picture: rows original / masked input / reconstruction, columns frames, white `pad`-pixel gaps.

    When the clip has more than `max_frames` frames, evenly spaced frames are shown.
    """
    ids = _frame_ids(original.shape[1], max_frames)
    _, _, h, w = original.shape
    rows, cols = 3, len(ids)
    grid = torch.ones(3, rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, dtype=original.dtype)
    for r, clip in enumerate((original, masked, recon)):
        clip = _as_rgb(clip.detach().cpu().clamp(0.0, 1.0))
        for col, frame in enumerate(ids.tolist()):
            y, x = pad + r * (h + pad), pad + col * (w + pad)
            grid[:, y : y + h, x : x + w] = clip[:, frame]
    return grid


def save_reconstruction_png(
    path: str | os.PathLike,
    original: Tensor,
    masked: Tensor,
    recon: Tensor,
    *,
    max_frames: int = 8,
) -> Path:
    """Write [reconstruction_grid][tubemask.viz.reconstruction_grid] of one clip as a PNG, atomically.

    Args:
        path: the `.png` file; parent directories are created.
        original: the clip in `[0, 1]`, `c t h w`.
        masked: the masked input in `[0, 1]`, `c t h w`.
        recon: the reconstruction in `[0, 1]`, `c t h w`.
        max_frames: at most this many frame columns.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    try:
        from matplotlib.image import imsave
    except ImportError as error:
        raise ImportError("save_reconstruction_png needs matplotlib: pip install matplotlib") from error
    picture = reconstruction_grid(original, masked, recon, max_frames=max_frames)
    array = picture.permute(1, 2, 0).float().numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        imsave(tmp, array, format="png")
    return path


@typechecked
def reconstruction_frames(
    original: Float[Tensor, "c t h w"],
    masked: Float[Tensor, "c t h w"],
    recon: Float[Tensor, "c t h w"],
    *,
    pad: int = 2,
) -> UInt8[Tensor, "t 3 H W"]:
    """Video frames with original / masked input / reconstruction side by side, as uint8 `t 3 H W`.

    `H` and `W` are padded (black) up to even numbers, as H.264 with 4:2:0 chroma requires.
    """
    _, t, h, w = original.shape
    width = 3 * w + 2 * pad
    height_even, width_even = h + h % 2, width + width % 2
    frames = torch.zeros(t, 3, height_even, width_even, dtype=torch.uint8)
    for i, clip in enumerate((original, masked, recon)):
        clip = _as_rgb(clip.detach().cpu().float().clamp(0.0, 1.0))
        x = i * (w + pad)
        frames[:, :, :h, x : x + w] = (clip.permute(1, 0, 2, 3) * 255.0).round().to(torch.uint8)
    return frames


def save_reconstruction_mp4(
    path: str | os.PathLike,
    original: Tensor,
    masked: Tensor,
    recon: Tensor,
    *,
    fps: float | int = 8,
    crf: int | None = None,
) -> Path:
    """Write [reconstruction_frames][tubemask.viz.reconstruction_frames] as an MP4 with torchcodec, atomically.

    Args:
        path: the `.mp4` file; parent directories are created.
        original: the clip in `[0, 1]`, `c t h w`.
        masked: the masked input in `[0, 1]`, `c t h w`.
        recon: the reconstruction in `[0, 1]`, `c t h w`.
        fps: frames per second.
        crf: encoder quality (lower is better; FFmpeg's default when `None`).

    Raises:
        ImportError: when torchcodec (or the FFmpeg libraries it needs) cannot be loaded.
        ValueError: when `fps <= 0`.
    """
    if fps <= 0:
        raise ValueError(f"save_reconstruction_mp4: fps must be > 0, got {fps}")
    try:
        from torchcodec.encoders import VideoEncoder
    except (ImportError, OSError, RuntimeError) as error:
        raise ImportError(
            "save_reconstruction_mp4 needs torchcodec with FFmpeg's shared libraries "
            "(pip install torchcodec; Debian: apt-get install ffmpeg); save_reconstruction_png needs neither"
        ) from error
    frames = reconstruction_frames(original, masked, recon)
    path = Path(path)
    with atomic_path(path) as tmp:
        VideoEncoder(frames, frame_rate=float(fps)).to_file(str(tmp), crf=crf, pixel_format="yuv420p")
    return path


@torch.no_grad()
def save_model_reconstruction(
    model: torch.nn.Module,
    video: Float[Tensor, "1 c t h w"],
    mask: Bool[Tensor, "1 n"],
    decoder_mask: Bool[Tensor, "1 n"] | None,
    stem: str | os.PathLike,
    *,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    write: bool = True,
) -> None:
    """Run a pretraining model (an `MAEWrapper`) on one clip in eval mode and write original / masked input /
    reconstruction as `<stem>.png` and, when an mp4 encoder is at hand, `<stem>.mp4`.

    Args:
        model: the `MAEWrapper` (its tokenizer, pixel mean / std and target say how to map predictions back).
        video: the normalised clip.
        mask: True = hidden from the encoder.
        decoder_mask: dual masking's decoder mask (None: every masked cube is reconstructed).
        stem: the output path without suffix.
        autocast: a context for the forward (e.g. bf16 autocast).
        write: False runs only the forward (a sharded model's forward is a collective every rank must join).
    """
    was_training = model.training
    model.eval()
    with autocast():
        out = model(video, mask, decoder_mask)
    model.train(was_training)
    if not write:
        return
    tokenizer = model.tokenizer
    mean, std = model.pixel_mean, model.pixel_std
    geometry = dict(tubelet_size=tokenizer.tubelet_size, patch_size=tokenizer.patch_size, mean=mean, std=std)
    video, mask = video.float().cpu(), mask.cpu()
    original = unnormalize(video, mean=mean, std=std)[0]
    masked = masked_input(video, mask, **geometry)[0]
    norm_pix = model.target == "norm_pix"
    recon = reconstruct_video(video, out.pred.float().cpu(), out.query_ids.cpu(), mask, norm_pix=norm_pix, **geometry)[
        0
    ]
    stem = Path(stem)
    save_reconstruction_png(stem.with_suffix(".png"), original, masked, recon)
    try:
        save_reconstruction_mp4(stem.with_suffix(".mp4"), original, masked, recon)
    except Exception as error:  # no mp4 encoder (torchcodec/FFmpeg) must not end a long run
        print(f"warning: could not write {stem.with_suffix('.mp4')}: {error}")
