"""Width arithmetic shared by the converters: the `mlp_ratio` that reproduces a stored MLP width."""

import math

__all__ = ["mlp_ratio_for"]


def mlp_ratio_for(hidden_dim: int, dim: int, *, what: str = "MLP") -> float:
    """A float `r` with `int(dim * r) == hidden_dim`, the rule tubemask's `Block` sizes its MLP with.

    `hidden_dim / dim` is usually exact; for widths like ViT-g's `1408 * 48/11 = 6144` the float product can fall just
    below the integer, so the ratio is nudged up by a few ulps until it lands.

    Raises:
        ValueError: when no ratio reproduces `hidden_dim` (it is not a positive int, or `dim` is not positive).
    """
    if dim <= 0 or hidden_dim <= 0:
        raise ValueError(f"{what}: widths must be positive, got hidden_dim={hidden_dim}, dim={dim}")
    ratio = hidden_dim / dim
    for _ in range(8):
        if int(dim * ratio) == hidden_dim:
            return ratio
        ratio = math.nextafter(ratio, math.inf)
    raise ValueError(
        f"{what}: an inner width of {hidden_dim} for token width {dim} cannot be expressed as int({dim} * mlp_ratio)"
    )
