"""Ready-made clip pipelines: decoded uint8 frames `[t c h w]` in, normalized float clip(s) `[c t h w]` out.

With `normalize=False` a pipeline returns uint8 `[c t h w]` (a view, see
[`channels_first`][tubemask.data.model_input.channels_first]) and the training loop normalizes the batch on its
device with [`normalize_batch`][tubemask.data.model_input.normalize_batch]: same values, a quarter of the bytes through
the DataLoader, and the float work off the loader's CPU cores.

Each pipeline is a small frozen dataclass called as `pipeline(frames, generator=g)`; the datasets take any callable
with that signature, so a custom pipeline is a function composed from [`tubemask.data.transforms`][].

| pipeline | VideoMAE use |
|---|---|
| [`PretrainPipeline`][tubemask.data.pipelines.PretrainPipeline] | pretraining: multi-scale crop, optional flip |
| [`FinetunePipeline`][tubemask.data.pipelines.FinetunePipeline] | fine-tuning: RandAugment, random resized crop, flip, random erasing |
| [`EvalPipeline`][tubemask.data.pipelines.EvalPipeline] | testing: short-side resize, then 1 centre or 3 crops |
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Shaped, UInt8
from torch import Tensor

from tubemask.data.model_input import channels_first, stack_clips
from tubemask.data.model_input import normalize as normalize_clip
from tubemask.data.randaugment import RandAugment, parse_randaugment
from tubemask.data.transforms import (
    center_crop,
    horizontal_flip,
    horizontal_flip_unchecked,
    multi_scale_crop,
    multi_scale_crop_unchecked,
    random_erasing,
    random_resized_crop,
    resize_short_side,
    three_crop,
)
from tubemask.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from tubemask.shapes import typechecked

__all__ = ["EvalPipeline", "FinetunePipeline", "PretrainPipeline"]


@dataclass(frozen=True)
class PretrainPipeline:
    """VideoMAE pretraining augmentation: multi-scale crop to `input_size`, flip with `flip_p`, normalize.

    Attributes:
        input_size: Output side in pixels (224 in the paper).
        scales: Multi-scale crop scales of the short side.
        flip_p: Horizontal flip probability (0 as in VideoMAE's UCF101/SSv2 pretraining).
        mean: Normalization mean.
        std: Normalization std.
        normalize: True: float32 normalized clips. False: uint8 `[c t h w]` clips; normalize the batch on the
            training device with [`normalize_batch`][tubemask.data.model_input.normalize_batch]`(batch, mean, std)`.
    """

    input_size: int = 224
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    flip_p: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalize: bool = True

    @typechecked
    def __call__(
        self, frames: UInt8[Tensor, "t c h w"], *, generator: torch.Generator | None = None
    ) -> Shaped[Tensor, "c t _ _"]:
        """Augment (in uint8) and normalize one clip."""
        frames = multi_scale_crop(frames, size=self.input_size, scales=self.scales, generator=generator)
        frames = horizontal_flip(frames, p=self.flip_p, generator=generator)
        return normalize_clip(frames, mean=self.mean, std=self.std) if self.normalize else channels_first(frames)

    @typechecked
    def repeat(
        self, frames: UInt8[Tensor, "t c h w"], repeats: int, *, generator: torch.Generator | None = None
    ) -> Shaped[Tensor, "r c t _ _"]:
        """`repeats` independently augmented clips of the same frames, `[r c t h w]` (repeated sampling).

        The values and memory layout of `stack_clips([self(frames, generator=generator) for _ in range(repeats)])`
        (the same random draws in the same order), but each crop is resized straight into its slot of the batch:
        no per-clip output and no stacking copy. uint8 batches are `[r c t h w]` views of `[r t h w c]` memory, as
        [`stack_clips`][tubemask.data.model_input.stack_clips] makes them; float batches are contiguous.
        [`PretrainDataset`][tubemask.data.datasets.PretrainDataset] calls this for `repeats > 1`.
        """
        if repeats < 1:
            raise ValueError(f"repeats={repeats} must be >= 1")
        t, c = frames.shape[:2]
        size = self.input_size
        device = frames.device
        # Decoded frames keep channels innermost through crop and resize (stack_clips then stacks them as
        # [r t h w c]); other layouts resize and stack as contiguous [c t h w] clips.
        channels_last = c > 1 and frames.stride(1) == 1
        n = 1 if self.normalize else repeats  # float output: resize in uint8 into one reused slot
        if channels_last:
            slots = torch.empty((n, t, size, size, c), dtype=torch.uint8, device=device).permute(0, 1, 4, 2, 3)
        else:
            slots = torch.empty((n, c, t, size, size), dtype=torch.uint8, device=device).transpose(1, 2)
        if self.normalize:  # then normalize from that slot into the float batch
            slots = slots.expand(repeats, -1, -1, -1, -1)
            batch = torch.empty((repeats, c, t, size, size), dtype=torch.float32, device=device)
        else:
            batch = slots.transpose(1, 2)  # [r c t h w]
        for i in range(repeats):
            slot = slots[i]  # [t c size size]
            # the unchecked forms: the frames were checked once on entry (each check costs ~0.1 ms per call)
            multi_scale_crop_unchecked(frames, size=size, scales=self.scales, generator=generator, out=slot)
            flipped = horizontal_flip_unchecked(slot, p=self.flip_p, generator=generator)
            if self.normalize:
                normalize_clip(flipped, mean=self.mean, std=self.std, out=batch[i])
            elif flipped is not slot:
                slot.copy_(flipped)
        return batch


@dataclass(frozen=True)
class FinetunePipeline:
    """VideoMAE fine-tuning augmentation: RandAugment, random resized crop, flip, normalize, random erasing.

    Attributes:
        input_size: Output side in pixels.
        randaugment: A timm spec (`"rand-m7-n4-mstd0.5-inc1"`), a built `RandAugment`, or None to skip.
        scale: Area range of the random resized crop.
        ratio: Aspect range of the random resized crop.
        flip_p: Horizontal flip probability (set 0 for SSv2).
        erase_p: Random erasing probability (0.25 in VideoMAE).
        mean: Normalization mean.
        std: Normalization std.
        normalize: False returns uint8 `[c t h w]` for
            [`normalize_batch`][tubemask.data.model_input.normalize_batch] on the training device; random erasing
            works on normalized clips, so it then needs `erase_p=0`.
    """

    input_size: int = 224
    randaugment: str | RandAugment | None = "rand-m7-n4-mstd0.5-inc1"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    erase_p: float = 0.25
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalize: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.randaugment, str):
            object.__setattr__(self, "randaugment", parse_randaugment(self.randaugment))
        if not self.normalize and self.erase_p > 0:
            raise ValueError(
                f"erase_p={self.erase_p} with normalize=False: random erasing fills normalized clips with N(0, 1) "
                "noise; set erase_p=0 or keep normalize=True"
            )

    @typechecked
    def __call__(
        self, frames: UInt8[Tensor, "t c h w"], *, generator: torch.Generator | None = None
    ) -> Shaped[Tensor, "c t _ _"]:
        """Augment and normalize one clip."""
        frames = self._augment(frames, generator)
        if not self.normalize:
            return channels_first(frames)
        clip = normalize_clip(frames, mean=self.mean, std=self.std)
        return random_erasing(clip, p=self.erase_p, generator=generator, inplace=True)  # clip is ours

    @typechecked
    def repeat(
        self, frames: UInt8[Tensor, "t c h w"], repeats: int, *, generator: torch.Generator | None = None
    ) -> Shaped[Tensor, "r c t _ _"]:
        """`repeats` independently augmented clips of the same frames, `[r c t h w]` (repeated sampling).

        The values of `stack_clips([self(frames, generator=generator) for _ in range(repeats)])` (the same random
        draws in the same order). Normalized clips are written straight into their slot of the float batch and erased
        there: no per-clip float tensor and no stacking copy (about 5 ms per pair of 16 x 224 x 224 clips on one
        core). uint8 clips (`normalize=False`) are stacked by [`stack_clips`][tubemask.data.model_input.stack_clips].
        [`FinetuneDataset`][tubemask.data.datasets.FinetuneDataset] calls this for `repeats > 1`.
        """
        if repeats < 1:
            raise ValueError(f"repeats={repeats} must be >= 1")
        if not self.normalize:
            return stack_clips([channels_first(self._augment(frames, generator)) for _ in range(repeats)])
        t, c = frames.shape[:2]
        size = self.input_size
        batch = torch.empty((repeats, c, t, size, size), dtype=torch.float32, device=frames.device)
        for i in range(repeats):
            normalize_clip(self._augment(frames, generator), mean=self.mean, std=self.std, out=batch[i])
            random_erasing(batch[i], p=self.erase_p, generator=generator, inplace=True)
        return batch

    def _augment(self, frames: Tensor, generator: torch.Generator | None) -> Tensor:
        """RandAugment, random resized crop and flip of one clip, uint8 `[t c size size]`."""
        if isinstance(self.randaugment, RandAugment):
            frames = self.randaugment(frames, generator=generator)
        frames = random_resized_crop(
            frames, size=self.input_size, scale=self.scale, ratio=self.ratio, generator=generator
        )
        return horizontal_flip(frames, p=self.flip_p, generator=generator)


@dataclass(frozen=True)
class EvalPipeline:
    """Test-time views: resize the short side to `short_side`, then `num_crops` crops of `crop_size` (1 or 3).

    Attributes:
        crop_size: Side of each spatial view.
        short_side: Short side after resizing (default: `crop_size`, so three crops span the frame).
        num_crops: 1 (centre) or 3 (along the long side, VideoMAE testing).
        mean: Normalization mean.
        std: Normalization std.
        normalize: False returns uint8 `[c t h w]` views for
            [`normalize_batch`][tubemask.data.model_input.normalize_batch].
    """

    crop_size: int = 224
    short_side: int | None = None
    num_crops: int = 3
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.num_crops not in (1, 3):
            raise ValueError(f"num_crops={self.num_crops}; allowed: 1 (centre) or 3")

    @typechecked
    def __call__(
        self, frames: UInt8[Tensor, "t c h w"], *, generator: torch.Generator | None = None
    ) -> list[Shaped[Tensor, "c t _ _"]]:
        """Return `num_crops` normalized views (the generator is unused; views are deterministic)."""
        frames = resize_short_side(frames, self.short_side or self.crop_size)
        crops = three_crop(frames, self.crop_size) if self.num_crops == 3 else [center_crop(frames, self.crop_size)]
        if not self.normalize:
            return [channels_first(c) for c in crops]
        return [normalize_clip(c, mean=self.mean, std=self.std) for c in crops]
