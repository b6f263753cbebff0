"""In-memory synthetic motion clips: render_motion_dataset and the background choices of render_motion_clip."""

import numpy as np
import pytest
import torch

from tubemask.data.motion_clips import MOTION_CLASSES, render_motion_clip, render_motion_dataset


def test_dataset_is_deterministic_balanced_and_seeded():
    clips, labels = render_motion_dataset(7, num_classes=3, num_frames=4, size=(16, 20), seed=5)
    assert clips.shape == (7, 3, 4, 16, 20) and clips.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    again, _ = render_motion_dataset(7, num_classes=3, num_frames=4, size=(16, 20), seed=5)
    assert torch.equal(clips, again)
    other, _ = render_motion_dataset(7, num_classes=3, num_frames=4, size=(16, 20), seed=6)
    assert not (clips.flatten(1)[:, None] == other.flatten(1)[None]).all(dim=2).any()
    assert len({c.numpy().tobytes() for c in clips}) == 7  # no two clips alike


def test_dataset_clip_is_the_rendered_clip_channels_first():
    clips, labels = render_motion_dataset(3, num_classes=2, num_frames=3, size=(12, 12), seed=4, background="flat")
    for i in range(3):
        clip_seed = int(np.random.SeedSequence([4, i]).generate_state(1)[0])
        frames = render_motion_clip(int(labels[i]), num_frames=3, size=(12, 12), seed=clip_seed, background="flat")
        assert torch.equal(clips[i], frames.permute(1, 0, 2, 3))


@pytest.mark.parametrize("label", range(len(MOTION_CLASSES)))
def test_backgrounds_share_object_and_trajectory(label):
    textured = render_motion_clip(label, num_frames=6, size=(24, 24), seed=3)
    black = render_motion_clip(label, num_frames=6, size=(24, 24), seed=3, background="black")
    flat = render_motion_clip(label, num_frames=6, size=(24, 24), seed=3, background="flat")
    # Where the black version is pure black the object is absent (or faded); there the flat one is one colour.
    background = (black == 0).all(dim=1)  # [t h w]
    assert background.float().mean() > 0.3
    pixels = flat.permute(1, 0, 2, 3)[:, background]  # [3 p]
    assert (pixels == pixels[:, :1]).all()
    # The object pixels agree across backgrounds (same draws), where fully opaque.
    obj = ~background & (textured == flat).all(dim=1)
    assert obj.any() or MOTION_CLASSES[label] in ("FadeIn", "FadeOut")


def test_bad_arguments():
    with pytest.raises(ValueError, match="count"):
        render_motion_dataset(-1)
    with pytest.raises(ValueError, match="num_classes"):
        render_motion_dataset(2, num_classes=len(MOTION_CLASSES) + 1)
