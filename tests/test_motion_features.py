"""tubemask.eval.motion_features: the width, and that each feature reads what it says on clips made to order."""

import pytest
import torch

from tubemask.eval.motion_features import motion_features


def square_clip(xs, ys, t=4, size=32, side=6):
    clip = torch.zeros(1, 3, t, size, size, dtype=torch.uint8)
    for k in range(t):
        clip[0, :, k, ys[k] : ys[k] + side, xs[k] : xs[k] + side] = 255
    return clip


def test_width_and_a_still_clip():
    f = motion_features(torch.zeros(2, 3, 8, 16, 16, dtype=torch.uint8))
    assert f.shape == (2, 11 * 7 - 2) and torch.isfinite(f).all()
    assert f[:, :14].abs().max() == 0  # no change: no energy, nothing changed


def test_centroid_velocity_follows_a_moving_square():
    right = motion_features(square_clip([2, 6, 10, 14], [10] * 4))
    left = motion_features(square_clip([14, 10, 6, 2], [10] * 4))
    k = 3
    cx = slice(2 * k, 3 * k)
    vx = slice(8 * k, 8 * k + k - 1)
    assert (right[0, cx][1:] > right[0, cx][:-1]).all() and (right[0, vx] > 0).all()
    assert (left[0, vx] < 0).all()
    energy, changed = right[0, :k], right[0, k : 2 * k]
    assert (energy > 0).all() and (changed > 0).all()


def test_orientation_of_a_horizontal_change():
    clip = torch.zeros(1, 3, 2, 32, 32, dtype=torch.uint8)
    clip[0, :, 1, 15:17, 4:28] = 255  # a horizontal bar appears
    f = motion_features(clip)
    cos2a, sin2a = f[0, 6], f[0, 7]
    assert cos2a == pytest.approx(1.0, abs=1e-3) and abs(sin2a) < 1e-3


def test_one_frame_is_an_error():
    with pytest.raises(ValueError, match="1 frames"):
        motion_features(torch.zeros(1, 3, 1, 8, 8, dtype=torch.uint8))
