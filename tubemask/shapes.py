"""The axis alphabet and the runtime shape checker shared by every public entry point.

Axis names (one vocabulary across the package):

| axis | meaning |
|---|---|
| `b` | batch |
| `c` | channels (3 for RGB) |
| `t h w` | frames, height, width in pixels |
| `n` | all tokens of a clip (`T*H*W` cubes in raster order, `t` slowest) |
| `v` | visible tokens (seen by the encoder) |
| `m` | masked tokens the decoder reconstructs |
| `d` | width of a token |
| `k` | values per cube (`tubelet_size * patch_size**2 * c`) |

Masks are `Bool[Tensor, "b n"]` with **True = masked** (hidden from the encoder) everywhere in tubemask.
"""

import contextlib
from collections.abc import Iterator
from typing import TypeVar

import jaxtyping
from beartype import beartype
from jaxtyping import Bool, Float, Int, jaxtyped
from torch import Tensor

__all__ = [
    "Bool",
    "Float",
    "Int",
    "Tensor",
    "typechecked",
    "shape_checks_disabled",
    "Mask",
    "Video",
    "Tokens",
    "TokenIds",
]

_F = TypeVar("_F")


def typechecked(fn: _F) -> _F:
    """Check argument and return shapes of `fn` at run time (jaxtyping + beartype).

    Dimension names are bound per call, so `"b n"` in two arguments must agree.
    """
    return jaxtyped(typechecker=beartype)(fn)


Mask = Bool[Tensor, "b n"]
"""Token mask, True = masked (hidden from the encoder)."""
Video = Float[Tensor, "b c t h w"]
"""A batch of clips, channels first then time."""
Tokens = Float[Tensor, "b n d"]
"""Token features in raster (t, h, w) order."""
TokenIds = Int[Tensor, "b m"]
"""Flat token indices into the raster order."""


@contextlib.contextmanager
def shape_checks_disabled() -> Iterator[None]:
    """Switch jaxtyping's runtime shape checks off inside the block (restored after): for torch.compile, which cannot
    trace them, and for timing code without their per-call Python cost."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)
