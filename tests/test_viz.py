import sys

import pytest
import torch
from einops import rearrange

from tubemask.viz import (
    masked_input,
    reconstruct_video,
    reconstruction_frames,
    reconstruction_grid,
    save_reconstruction_mp4,
    save_reconstruction_png,
    unnormalize,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
T, P = 2, 4  # tubelet, patch


def clip(b: int = 2, t: int = 4, h: int = 8, w: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in (0.1, 0.9) and the normalised model input."""
    g = torch.Generator().manual_seed(0)
    pixels = 0.1 + 0.8 * torch.rand(b, 3, t, h, w, generator=g)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1, 1), torch.tensor(STD).view(1, 3, 1, 1, 1)
    return pixels, (pixels - mean) / std


def cubes(pixels: torch.Tensor) -> torch.Tensor:
    """Independent oracle: b (t h w) (p0 p1 p2) c."""
    return rearrange(pixels, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=T, p1=P, p2=P)


def norm_pix_targets(pixels: torch.Tensor) -> torch.Tensor:
    x = cubes(pixels)
    mean, var = x.mean(dim=2, keepdim=True), x.var(dim=2, unbiased=True, keepdim=True)
    return ((x - mean) / (var.sqrt() + 1e-6)).flatten(2)  # (p0 p1 p2 c), channel fastest


def mask_and_ids(b: int, n: int, masked: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randperm(n, generator=g)[:masked].sort().values for _ in range(b)])
    mask = torch.zeros(b, n, dtype=torch.bool).scatter(1, ids, True)
    return mask, ids


@pytest.mark.parametrize("norm_pix", [True, False])
def test_perfect_predictions_rebuild_the_clip(norm_pix: bool) -> None:
    pixels, video = clip()
    n = 2 * 2 * 3
    mask, ids = mask_and_ids(2, n, 9)
    targets = norm_pix_targets(pixels) if norm_pix else cubes(pixels).flatten(2)
    pred = torch.gather(targets, 1, ids[..., None].expand(-1, -1, targets.shape[-1]))
    recon = reconstruct_video(
        video, pred, ids, mask, tubelet_size=T, patch_size=P, norm_pix=norm_pix, mean=MEAN, std=STD
    )
    torch.testing.assert_close(recon, pixels, atol=1e-5, rtol=0)


def test_visible_cubes_come_from_the_input_and_unpredicted_masked_cubes_are_grey() -> None:
    pixels, video = clip(b=1)
    n = 12
    mask, ids = mask_and_ids(1, n, 8)
    predicted = ids[:, :4]  # dual masking: the decoder reconstructs half of the masked cubes
    pred = torch.full((1, 4, T * P * P * 3), 5.0)  # garbage, clamped to 1
    recon = reconstruct_video(
        video, pred, predicted, mask, tubelet_size=T, patch_size=P, norm_pix=False, mean=MEAN, std=STD
    )
    got, want = cubes(recon), cubes(pixels)
    visible = ~mask[0]
    torch.testing.assert_close(got[0, visible], want[0, visible], atol=1e-6, rtol=0)
    assert torch.all(got[0, predicted[0]] == 1.0)
    assert torch.all(got[0, ids[0, 4:]] == 0.5)


def test_masked_input_greys_masked_cubes() -> None:
    pixels, video = clip(b=1)
    mask, _ = mask_and_ids(1, 12, 6)
    out = cubes(masked_input(video, mask, tubelet_size=T, patch_size=P, mean=MEAN, std=STD))
    assert torch.all(out[0, mask[0]] == 0.5)
    torch.testing.assert_close(out[0, ~mask[0]], cubes(pixels)[0, ~mask[0]], atol=1e-6, rtol=0)
    torch.testing.assert_close(unnormalize(video, mean=MEAN, std=STD), pixels, atol=1e-6, rtol=0)


def test_reconstruct_errors() -> None:
    _, video = clip(b=1)
    mask, ids = mask_and_ids(1, 12, 6)
    k = T * P * P * 3
    visible_id = (~mask[0]).nonzero()[0].view(1, 1)
    with pytest.raises(ValueError, match="visible"):
        reconstruct_video(video, torch.zeros(1, 1, k), visible_id, mask, tubelet_size=T, patch_size=P, norm_pix=False)
    with pytest.raises(ValueError, match="values per cube"):
        reconstruct_video(video, torch.zeros(1, 6, k - 1), ids, mask, tubelet_size=T, patch_size=P, norm_pix=False)
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        reconstruct_video(video, torch.zeros(1, 6, k), ids + 12, mask, tubelet_size=T, patch_size=P, norm_pix=False)
    with pytest.raises(ValueError, match="12"):
        masked_input(video, torch.zeros(1, 5, dtype=torch.bool), tubelet_size=T, patch_size=P)


def test_grid_layout_and_png(tmp_path) -> None:
    pixels, _ = clip(b=1, t=10)
    original = pixels[0]
    grid = reconstruction_grid(original, original * 0, original, max_frames=4, pad=2)
    assert grid.shape == (3, 3 * 8 + 4 * 2, 4 * 12 + 5 * 2)
    torch.testing.assert_close(grid[:, 2:10, 2:14], original[:, 0])  # first column is frame 0
    torch.testing.assert_close(grid[:, 2:10, -14:-2], original[:, 9])  # last column is the last frame
    assert torch.all(grid[:, 12:20, 2:14] == 0)  # second row: the "masked" clip
    path = save_reconstruction_png(tmp_path / "png" / "recon.png", original, original, original, max_frames=4)
    from matplotlib.image import imread

    assert imread(path).shape[:2] == (32, 58)
    assert [p.name for p in path.parent.iterdir()] == ["recon.png"]


def test_grey_clips_show_as_grey_rgb_and_other_channel_counts_are_refused() -> None:
    grey = torch.rand(1, 4, 8, 12)
    grid = reconstruction_grid(grey, grey, grey, max_frames=4, pad=2)
    assert grid.shape == (3, 32, 58) and torch.equal(grid[0], grid[1]) and torch.equal(grid[1], grid[2])
    torch.testing.assert_close(grid[0, 2:10, 2:14], grey[0, 0])
    assert reconstruction_frames(grey, grey, grey).shape[1] == 3
    with pytest.raises(ValueError, match=r"1 or 3 channels, got a clip of shape \(2, 4, 8, 12\)"):
        reconstruction_grid(*(torch.rand(2, 4, 8, 12),) * 3)
    with pytest.raises(ValueError, match="max_frames must be >= 1, got 0"):
        reconstruction_grid(grey, grey, grey, max_frames=0)


def test_frames_are_padded_to_even_sizes() -> None:
    c = torch.rand(3, 3, 9, 7)
    frames = reconstruction_frames(c, c, c)
    assert frames.dtype == torch.uint8 and frames.shape == (3, 3, 10, 26)  # 3*7 + 2*2 = 25 -> 26
    assert torch.all(frames[:, :, 9] == 0) and torch.all(frames[:, :, :, 25] == 0)


def test_mp4_round_trip(tmp_path) -> None:
    decoders = pytest.importorskip("torchcodec.decoders")
    t, h, w = 6, 31, 32  # odd height must be padded for h264
    colours = torch.linspace(0.2, 0.8, t).view(1, t, 1, 1)
    original = colours.expand(3, t, h, w).contiguous()
    path = save_reconstruction_mp4(tmp_path / "recon.mp4", original, original * 0.5, original, fps=4)
    assert [p.name for p in tmp_path.iterdir()] == ["recon.mp4"]
    decoded = decoders.VideoDecoder(str(path))[:]
    assert decoded.shape == (t, 3, h + 1, 3 * w + 4)
    got = decoded[:, :, 4:-4, 4 : w - 4].float() / 255  # interior of the first panel, away from edges
    want = colours.view(t, 1, 1, 1).expand_as(got)
    assert (got - want).abs().mean() < 0.03


def test_mp4_without_torchcodec_says_what_is_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec.encoders", None)
    c = torch.rand(3, 2, 4, 4)
    with pytest.raises(ImportError, match="torchcodec"):
        save_reconstruction_mp4(tmp_path / "x.mp4", c, c, c)
    assert list(tmp_path.iterdir()) == []
