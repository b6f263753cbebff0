"""Token-grid geometry: how a clip of `t x h x w` pixels splits into cubes.

A cube ("tubelet") is `tubelet_size` frames x `patch_size` x `patch_size` pixels. A clip of shape `(t, h, w)` gives a
grid of `(t // tubelet_size, h // patch_size, w // patch_size)` cubes, flattened in raster order with `t` slowest.
"""

from dataclasses import dataclass

__all__ = ["CubeGeometry", "token_grid"]


def token_grid(frames: int, height: int, width: int, *, tubelet_size: int, patch_size: int) -> tuple[int, int, int]:
    """Grid `(T, H, W)` of cubes for a clip of `frames x height x width` pixels.

    Raises:
        ValueError: when a size is not a positive multiple of its cube side.
    """
    for name, size, side in (
        ("frames", frames, tubelet_size),
        ("height", height, patch_size),
        ("width", width, patch_size),
    ):
        if side <= 0:
            raise ValueError(f"cube side for {name} must be positive, got {side}")
        if size <= 0 or size % side:
            raise ValueError(f"clip {name}={size} must be a positive multiple of {side} (the cube side along {name})")
    return frames // tubelet_size, height // patch_size, width // patch_size


@dataclass(frozen=True)
class CubeGeometry:
    """Cube size and channel count; the numbers every tokenizer, loss and picture agree on.

    Attributes:
        tubelet_size: frames per cube (VideoMAE: 2).
        patch_size: pixels per cube side (VideoMAE: 16).
        channels: colour channels (3 for RGB).
    """

    tubelet_size: int = 2
    patch_size: int = 16
    channels: int = 3

    def __post_init__(self) -> None:
        for name in ("tubelet_size", "patch_size", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"CubeGeometry.{name} must be a positive int, got {value!r}")

    @property
    def values_per_cube(self) -> int:
        """`k = tubelet_size * patch_size**2 * channels`."""
        return self.tubelet_size * self.patch_size**2 * self.channels

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Grid `(T, H, W)` for a clip of `frames x height x width` pixels; see [token_grid][tubemask.grid.token_grid]."""
        return token_grid(frames, height, width, tubelet_size=self.tubelet_size, patch_size=self.patch_size)

    def num_tokens(self, frames: int, height: int, width: int) -> int:
        """Number of cubes `n = T * H * W` in a clip."""
        t, h, w = self.grid(frames, height, width)
        return t * h * w
