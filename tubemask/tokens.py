"""Gather and scatter of tokens by mask (pure functions).

Masks are `Bool[b n]`, True = masked, with the same number of masked tokens in every row. Index tensors list flat
raster indices in ascending order: first the visible ones, then the masked ones.
"""

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tubemask.shapes import typechecked

__all__ = ["split_ids", "selected_ids", "gather_tokens", "scatter_tokens", "masked_count"]


@typechecked
def masked_count(mask: Bool[Tensor, "b n"]) -> int:
    """Number of masked tokens per row.

    Raises:
        ValueError: when rows mask different numbers of tokens (the encoder batches visible tokens as one tensor).
    """
    counts = mask.sum(dim=1)
    if counts.numel() == 0:
        return 0
    first = int(counts[0])
    if bool((counts != first).any()):
        raise ValueError(
            f"mask must hide the same number of tokens in every row; got per-row counts {counts.tolist()[:8]}..."
        )
    return first


@typechecked
def split_ids(
    mask: Bool[Tensor, "b n"], num_masked: int | None = None
) -> tuple[Int[Tensor, "b v"], Int[Tensor, "b m"]]:
    """Ascending raster indices of the visible tokens and of the masked tokens of each row.

    Args:
        mask: True = masked; the same count in every row.
        num_masked: that count, when the caller knows it (a masker's `num_masked(grid)`): taken as given, so no
            device-to-host read is needed. None: counted and checked here ([masked_count][tubemask.tokens.masked_count],
            two reads back from the device).

    Returns:
        `(visible_ids [b v], masked_ids [b m])`, each row sorted ascending, `v + m = n`.
    """
    m = masked_count(mask) if num_masked is None else num_masked
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    v = mask.shape[1] - m
    return order[:, :v], order[:, v:]


@typechecked
def selected_ids(selection: Bool[Tensor, "b n"], count: int | None = None) -> Int[Tensor, "b m"]:
    """Ascending raster indices of the True places of each row (the same count in every row).

    Args:
        selection: True = selected.
        count: the True places per row when the caller knows it (no device-to-host read); None: counted here.

    Raises:
        ValueError: when rows select different numbers of tokens (only checked when `count` is None).
    """
    m = masked_count(selection) if count is None else count
    order = torch.argsort((~selection).to(torch.uint8), dim=1, stable=True)
    return order[:, :m]


@typechecked
def gather_tokens(x: Float[Tensor, "b n *rest"], ids: Int[Tensor, "b v"]) -> Float[Tensor, "b v *rest"]:
    """`x[i, ids[i]]` for every row `i`: pick tokens by flat index."""
    idx = ids.reshape(*ids.shape, *([1] * (x.dim() - 2))).expand(*ids.shape, *x.shape[2:])
    return torch.gather(x, 1, idx)


@typechecked
def scatter_tokens(
    tokens: Float[Tensor, "b v *rest"], ids: Int[Tensor, "b v"], num_tokens: int, *, fill: float = 0.0
) -> Float[Tensor, "b n *rest"]:
    """Place `tokens` at flat indices `ids` of a length-`num_tokens` sequence; other places hold `fill`.

    The inverse of [gather_tokens][tubemask.tokens.gather_tokens] on the gathered places.
    """
    out = tokens.new_full((tokens.shape[0], num_tokens, *tokens.shape[2:]), fill)
    idx = ids.reshape(*ids.shape, *([1] * (tokens.dim() - 2))).expand_as(tokens)
    return out.scatter(1, idx, tokens)
