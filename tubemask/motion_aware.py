"""Motion-aware token selection (after EVEREST, Hwang et al., arXiv 2211.10636): encode the cubes that change.

Most cubes of a video repeat their neighbour in time; EVEREST spends the encoder on the few that change and the
decoder on the next few, and drops the rest. Here each cube's motion energy is the mean absolute pixel change of
its frames from the frame before (the first frame of the clip counts its change to the second), over the cube's
pixels and channels; or, given a cube embedding (`embed=model.tokenizer`), the L2 distance of each cube's embedding
to the cube at the same place one time slot earlier (EVEREST's own measure, on the patch embeddings of the model being
trained; the first slot counts its distance to the second). Cubes are ranked by energy, ties broken by a
permutation drawn from the generator, so a static clip (every energy equal) gets a uniformly random selection and the
counts never change:

- the encoder sees the `n - int(mask_ratio * n)` highest-ranked cubes
  ([MotionAwareMasker][tubemask.motion_aware.MotionAwareMasker] is a content-aware masker: `needs_video = True`);
- the decoder reconstructs the next `int(query_ratio * n)` cubes: `masker.decoder_mask(...)` gives the dual-masking
  decoder mask (True = not reconstructed) for `model(video, mask, decoder_mask=...)`;
- every lower-ranked cube is neither seen nor reconstructed.

With `visible="random"` the encoder's cubes are instead a uniformly random draw from the generator among the
`visible + queried` highest-ranked cubes, and the decoder reconstructs the rest of them: EVEREST's official
pretraining code keeps the most moving share of the clip and splits it at random between the encoder and the
decoder, so a clip's encoder input changes from step to step. The fixed split (`"top"`, the default) shows the encoder
the same cubes of a clip every time; both keep the same cubes and the same counts.

A cube's rank needs the clip, so the masker is called with `video=` (as [draw_mask][tubemask.masking.draw_mask]
does for a content-aware masker); without it the selection is uniformly random.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tubemask.masking import check_grid, check_mask_ratio, masked_units
from tubemask.shapes import typechecked

__all__ = ["MotionAwareMasker", "cube_motion_energy", "token_motion_energy", "rank_cubes", "shuffle_leading"]


@typechecked
def cube_motion_energy(video: Float[Tensor, "b c t h w"], grid: tuple[int, int, int]) -> Float[Tensor, "b n"]:
    """Mean absolute change from the previous frame of each cube's pixels, `[b t*h*w]` in raster `(t h w)` order.

    A single-frame clip has no motion: every energy is 0.

    Raises:
        ValueError: when the clip does not split into `grid` cubes.
    """
    b, c, frames, height, width = video.shape
    t, h, w = grid
    if frames % t or height % h or width % w:
        raise ValueError(f"cube_motion_energy: a {frames}x{height}x{width} clip does not split into a {grid} grid")
    if frames < 2:
        return video.new_zeros(b, t * h * w, dtype=torch.float32)
    x = video.float()
    change = (x[:, :, 1:] - x[:, :, :-1]).abs()  # [b c t-1 h w]: frame k+1 against frame k
    change = torch.cat([change[:, :, :1], change], dim=2)  # frame 0 counts its change to frame 1
    pt, ph, pw = frames // t, height // h, width // w
    cubes = change.view(b, c, t, pt, h, ph, w, pw)
    return cubes.mean(dim=(1, 3, 5, 7)).reshape(b, t * h * w)


@typechecked
def token_motion_energy(tokens: Float[Tensor, "b n d"], grid: tuple[int, int, int]) -> Float[Tensor, "b n"]:
    """L2 distance of each cube's embedding to the one at the same place a time slot earlier, `[b t*h*w]` in raster
    `(t h w)` order; the first slot counts its distance to the second (EVEREST). One time slot: every energy is 0.

    Raises:
        ValueError: when `tokens` does not hold one token per cube of `grid`.
    """
    b, n, d = tokens.shape
    t, h, w = grid
    if n != t * h * w:
        raise ValueError(f"token_motion_energy: {n} tokens for a {grid} grid of {t * h * w} cubes")
    if t < 2:
        return tokens.new_zeros(b, n, dtype=torch.float32)
    x = tokens.float().view(b, t, h * w, d)
    distance = (x[:, 1:] - x[:, :-1]).norm(dim=-1)  # [b t-1 hw]: slot k+1 against slot k
    return torch.cat([distance[:, :1], distance], dim=1).reshape(b, n)


def rank_cubes(energy: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """`[b n]` cube ids from the highest energy to the lowest; equal energies in an order drawn from `generator`."""
    b, n = energy.shape
    source = generator.device if generator is not None else energy.device
    shuffle = torch.rand((b, n), dtype=torch.float64, generator=generator, device=source).argsort(dim=1)
    shuffle = shuffle.to(energy.device)
    shuffled = torch.gather(energy, 1, shuffle)
    order = shuffled.argsort(dim=1, descending=True, stable=True)  # ties keep the drawn order
    return torch.gather(shuffle, 1, order)


def shuffle_leading(ids: Tensor, k: int, *, generator: torch.Generator | None = None) -> Tensor:
    """`ids` `[b n]` with the first `k` of each row in an order drawn from `generator`, the rest as they were."""
    b, n = ids.shape
    if not 0 <= k <= n:
        raise ValueError(f"shuffle_leading: k={k} must be in [0, {n}]")
    source = generator.device if generator is not None else ids.device
    order = torch.rand((b, k), dtype=torch.float64, generator=generator, device=source).argsort(dim=1)
    return torch.cat([torch.gather(ids[:, :k], 1, order.to(ids.device)), ids[:, k:]], dim=1)


@dataclass(frozen=True)
class MotionAwareMasker:
    """Show the encoder the cubes that move most; hand the decoder the next ones (EVEREST).

    Args:
        mask_ratio: share of cubes hidden from the encoder, in `[0, 1)` (`int(mask_ratio * n)` cubes).
        query_ratio: share of all cubes the decoder reconstructs, taken in rank order right after the visible ones
            (`int(query_ratio * n)` cubes, at least 1; 0 < query_ratio <= mask_ratio). None: every hidden cube
            (plain MAE decoding, no cube dropped).
        visible: which of the `visible + queried` highest-ranked cubes the encoder sees: `"top"`, the highest-ranked
            ones (the decoder takes the next ranks); `"random"`, a uniform draw among them (the decoder takes the
            others), as EVEREST's official pretraining code does. With `query_ratio=None` every cube is kept, so
            `"random"` is plain random masking.
        embed: a cube embedding `[b c t h w] -> [b n d]` (e.g. the model's `tokenizer`): rank by
            [token_motion_energy][tubemask.motion_aware.token_motion_energy] of its output, computed without
            gradients, as EVEREST does. None: by [cube_motion_energy][tubemask.motion_aware.cube_motion_energy] of the
            pixels. It is called outside the model's forward, where FSDP2 keeps a module's parameters sharded: with
            FSDP2, pass an unsharded copy or rank by pixels.
    """

    mask_ratio: float = 0.9
    query_ratio: float | None = None
    visible: Literal["top", "random"] = "top"
    embed: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)
    needs_video: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_mask_ratio(self.mask_ratio)
        if self.visible not in ("top", "random"):
            raise ValueError(f"MotionAwareMasker: visible={self.visible!r} must be 'top' or 'random'")
        if self.query_ratio is None:
            return
        check_mask_ratio(self.query_ratio, name="query_ratio")
        if not 0 < self.query_ratio <= self.mask_ratio:
            raise ValueError(
                f"MotionAwareMasker: query_ratio={self.query_ratio} must be in (0, mask_ratio={self.mask_ratio}]"
            )

    def num_masked(self, grid: tuple[int, int, int]) -> int:
        """Cubes hidden from the encoder per row."""
        t, h, w = check_grid(grid, 0)
        return masked_units(self.mask_ratio, t * h * w, "tokens")

    def num_queried(self, grid: tuple[int, int, int]) -> int:
        """Cubes the decoder reconstructs per row (pass it as `num_queried=` with the decoder mask)."""
        t, h, w = check_grid(grid, 0)
        hidden = self.num_masked(grid)
        if self.query_ratio is None:
            return hidden
        return min(hidden, max(1, int(self.query_ratio * t * h * w)))

    def ranks(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        video: Float[Tensor, "b c t h w"] | None = None,
    ) -> Tensor:
        """`[b n]` cube ids from the most to the least moving (uniformly random order without `video`)."""
        t, h, w = check_grid(grid, batch_size)
        if video is None:
            energy = torch.zeros(batch_size, t * h * w, device=device)
        else:
            if video.shape[0] != batch_size:
                raise ValueError(f"video holds {video.shape[0]} clips but batch_size is {batch_size}")
            energy = self.energy(video, grid)
            energy = energy.to(device) if device is not None else energy
        return rank_cubes(energy, generator=generator)

    def energy(self, video: Float[Tensor, "b c t h w"], grid: tuple[int, int, int]) -> Float[Tensor, "b n"]:
        """Each cube's motion energy: of its embedding when the masker has `embed`, else of its pixels."""
        if self.embed is None:
            return cube_motion_energy(video, grid)
        with torch.no_grad():
            return token_motion_energy(self.embed(video), grid)

    def selection(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        video: Float[Tensor, "b c t h w"] | None = None,
    ) -> Tensor:
        """`[b n]` cube ids in the order the masks read them: the encoder's cubes first, then the decoder's, then
        the dropped ones. The ranking itself with `visible="top"`; with `"random"` its kept head is shuffled."""
        ranks = self.ranks(batch_size, grid, generator=generator, device=device, video=video)
        if self.visible == "top":
            return ranks
        kept = ranks.shape[1] - self.num_masked(grid) + self.num_queried(grid)
        return shuffle_leading(ranks, kept, generator=generator)

    def __call__(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        video: Float[Tensor, "b c t h w"] | None = None,
    ) -> Bool[Tensor, "b n"]:
        """The encoder mask, True = hidden: every cube but the `n - num_masked` the encoder sees."""
        order = self.selection(batch_size, grid, generator=generator, device=device, video=video)
        return self.masks_from_ranks(order, grid)[0]

    def masks_from_ranks(self, ranks: Tensor, grid: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        """`(mask, decoder_mask)` from a ranking or [selection][tubemask.motion_aware.MotionAwareMasker.selection]:
        hidden = all but the first `visible`; decoder mask True everywhere but the next `num_queried`."""
        b, n = ranks.shape
        visible = n - self.num_masked(grid)
        queried = self.num_queried(grid)
        position = torch.empty_like(ranks).scatter_(1, ranks, torch.arange(n, device=ranks.device).expand(b, n))
        mask = position >= visible
        decoder_mask = ~((position >= visible) & (position < visible + queried))
        return mask, decoder_mask

    def decoder_mask(
        self,
        batch_size: int,
        grid: tuple[int, int, int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        video: Float[Tensor, "b c t h w"] | None = None,
    ) -> tuple[Bool[Tensor, "b n"], Bool[Tensor, "b n"]]:
        """`(mask, decoder_mask)` from one ranking: the encoder mask and the dual-masking decoder mask (True = not
        reconstructed), for `model(video, mask, decoder_mask=decoder_mask, num_masked=..., num_queried=...)`."""
        order = self.selection(batch_size, grid, generator=generator, device=device, video=video)
        return self.masks_from_ranks(order, grid)
