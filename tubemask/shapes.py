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
import threading
from collections.abc import Iterator
from typing import TypeVar

import jaxtyping
from beartype import beartype
from jaxtyping import jaxtyped

__all__ = ["typechecked", "shape_checks_disabled"]

_F = TypeVar("_F")


def typechecked(fn: _F) -> _F:
    """Check argument and return shapes of `fn` at run time (jaxtyping + beartype).

    Dimension names are bound per call, so `"b n"` in two arguments must agree.
    """
    return jaxtyped(typechecker=beartype)(fn)


_lock = threading.Lock()
_open_blocks = 0  # shape_checks_disabled blocks open in this process, all threads together
_before = False  # jaxtyping's switch as it was when the first of them opened


@contextlib.contextmanager
def shape_checks_disabled() -> Iterator[None]:
    """Switch jaxtyping's runtime shape checks off inside the block: for torch.compile, which cannot trace them, and
    for timing code without their per-call Python cost.

    jaxtyping has one switch for the whole process (`jaxtyping.config.jaxtyping_disable`), so while a block is open
    the checks are off in every thread, not only the one that opened it; no thread-local switch exists. What this
    guarantees is that nothing stays changed: blocks nest, may be open in several threads at once and close in any
    order, and the switch goes back to what it was before the first of them opened when the last one closes, also
    when the block raises. Changing `jaxtyping.config` yourself while a block is open is overwritten at that point.
    """
    global _open_blocks, _before
    counted = False  # set together with the count, so an exception on the way in undoes exactly what was done
    try:
        with _lock:
            if _open_blocks == 0:
                _before = jaxtyping.config.jaxtyping_disable
            _open_blocks += 1
            counted = True
            jaxtyping.config.update("jaxtyping_disable", True)
        yield
    finally:
        if counted:
            with _lock:
                _open_blocks -= 1
                if _open_blocks == 0:
                    jaxtyping.config.update("jaxtyping_disable", _before)
