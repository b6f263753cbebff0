"""AVA detection: the RoI head's numbers, boxes at the edges, the detector's gradients, checkpointing, loading a
pretraining encoder with its final norm, layer-decay groups, and errors for bad boxes."""

import subprocess
import sys

import pytest
import torch
from torch import nn
from torchvision.ops import roi_align

from tubemask.detection import ActionDetector, videomae_action_detector
from tubemask.heads import RoIActionHead
from tubemask.interop.finetune_weights import load_pretrained_encoder
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.train.optim import build_adamw

TINY = ViTSize(32, 2, 2, 16, 1, 2)  # embed 32, depth 2, heads 2; decoder 16 x 1, 2 heads
CLIP = (2, 3, 4, 32, 48)  # patch 8, tubelet 2 -> grid (2, 4, 6), 48 tokens: non-square on purpose


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _perturb(module: nn.Module, seed: int = 1, scale: float = 0.1) -> nn.Module:
    """Make every parameter non-trivial: LayerNorm weights away from 1, biases away from 0."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=_gen(seed)))
    return module


def _detector(**kwargs) -> ActionDetector:
    torch.manual_seed(0)
    args = dict(num_classes=5, patch_size=8, drop_path_rate=0.0, head_dropout=0.0)
    args.update(kwargs)
    return videomae_action_detector(TINY, **args)


def _rois() -> torch.Tensor:
    return torch.tensor(
        [[0, 0.0, 0.0, 48.0, 32.0], [0, 5.0, 3.0, 20.0, 30.0], [1, 30.5, 10.0, 47.0, 31.0], [1, 8.0, 8.0, 16.0, 16.0]]
    )


# --- the head -------------------------------------------------------------------------------------------------------


def _head(d: int = 6, classes: int = 4, **kwargs) -> RoIActionHead:
    torch.manual_seed(0)
    return _perturb(RoIActionHead(d, classes, spatial_scale=1 / 8, dropout=0.0, **kwargs)).eval()


def test_head_matches_direct_computation():
    b, d, grid = 2, 6, (3, 4, 6)
    volume = torch.randn(b, d, *grid, generator=_gen(0))  # the feature map by hand: [b d T H W]
    tokens = volume.flatten(2).transpose(1, 2)  # raster (t, h, w), t slowest
    head = _head(d)
    rois = _rois()
    pooled = roi_align(volume.mean(2), rois, output_size=7, spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
    expected = pooled.amax(dim=(2, 3)) @ head.head.weight.T + head.head.bias
    torch.testing.assert_close(head(tokens, grid, rois), expected)
    torch.testing.assert_close(head.pool(tokens, grid, rois), pooled.amax(dim=(2, 3)))


def test_box_covering_one_cell_reads_that_cell():
    # aligned=True: the box of cell (i, j) maps to [j - 0.5, j + 0.5] on the map; its middle bin samples the cell's
    # centre exactly, and every other sample interpolates towards smaller neighbours, so the max is the cell itself
    b, d, grid, p = 1, 5, (2, 4, 6), 8
    volume = -torch.rand(b, d, *grid, generator=_gen(1))  # everything negative ...
    i, j = 2, 3
    volume[:, :, :, i, j] = 1.0 + torch.rand(b, d, grid[0], generator=_gen(2))  # ... but the chosen cell
    tokens = volume.flatten(2).transpose(1, 2)
    rois = torch.tensor([[0, j * p, i * p, (j + 1) * p, (i + 1) * p]], dtype=torch.float32)
    pooled = _head(d).pool(tokens, grid, rois)
    torch.testing.assert_close(pooled[0], volume[0, :, :, i, j].mean(1))


def test_boxes_outside_the_frame_and_empty_rois():
    b, d, grid = 2, 6, (2, 4, 6)
    tokens = torch.randn(b, 48, d, generator=_gen(3))
    head = _head(d)
    far = torch.tensor([[0, -100.0, -100.0, -50.0, -60.0], [1, 200.0, 100.0, 300.0, 400.0]])
    torch.testing.assert_close(head(tokens, grid, far), head.head.bias.expand(2, -1))  # zeros beyond the border
    partly = torch.tensor([[1, -20.0, -10.0, 10.0, 12.0]])
    assert head(tokens, grid, partly).isfinite().all()
    empty = head(tokens, grid, torch.zeros(0, 5))
    assert empty.shape == (0, 4)


def test_head_init_and_dropout():
    torch.manual_seed(0)
    head = RoIActionHead(16, 80, dropout=0.5, init_scale=1.0)
    assert head.head.bias.abs().max() == 0 and 0.015 < head.head.weight.std() < 0.025
    torch.manual_seed(0)
    small = RoIActionHead(16, 80)  # VideoMAE: init_scale 0.001
    torch.testing.assert_close(small.head.weight, 0.001 * head.head.weight)
    assert small.dropout.p == 0.0  # VideoMAE's AVA head: max pool -> Linear, no dropout
    assert head.spatial_scale == 1 / 16 and head.output_size == 7 and head.aligned
    with pytest.raises(ValueError, match="dropout must be in"):
        RoIActionHead(16, dropout=1.0)
    with pytest.raises(ValueError, match="num_classes must be positive"):
        RoIActionHead(16, 0)


def test_bad_rois_and_grids_raise_clear_errors():
    head = _head(6)
    tokens = torch.randn(2, 48, 6, generator=_gen(4))
    grid = (2, 4, 6)
    with pytest.raises(ValueError, match=r"roi 1 has batch index 2.0.*\[0, 2\)"):
        head(tokens, grid, torch.tensor([[0, 0.0, 0, 8, 8], [2, 0.0, 0, 8, 8]]))
    with pytest.raises(ValueError, match=r"roi 0 has batch index 0.5"):
        head(tokens, grid, torch.tensor([[0.5, 0.0, 0, 8, 8]]))
    with pytest.raises(ValueError, match=r"roi 0 has batch index -1.0"):
        head(tokens, grid, torch.tensor([[-1.0, 0.0, 0, 8, 8]]))
    with pytest.raises(ValueError, match=r"roi 0 = \[0.0, 9.0, 0.0, 8.0, 8.0\] has x2 < x1"):
        head(tokens, grid, torch.tensor([[0, 9.0, 0, 8, 8]]))
    with pytest.raises(ValueError, match="non-finite"):
        head(tokens, grid, torch.tensor([[0, float("nan"), 0, 8, 8]]))
    with pytest.raises(ValueError, match=r"token grid \(2, 4, 5\) holds 40 tokens, the input has 48"):
        head(tokens, (2, 4, 5), torch.tensor([[0, 0.0, 0, 8, 8]]))


# --- the detector ---------------------------------------------------------------------------------------------------


def test_detector_forward_matches_manual_pipeline_on_non_square_clips():
    model = _perturb(_detector()).eval()
    x = torch.randn(CLIP, generator=_gen(5))
    assert model.grid(x.shape) == (2, 4, 6)
    rois = _rois()
    logits = model(x, rois)
    assert logits.shape == (4, 5)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 48, 32)
    volume = tokens.transpose(1, 2).reshape(2, 32, 2, 4, 6)
    pooled = roi_align(volume.mean(2), rois, output_size=7, spatial_scale=1 / 8, sampling_ratio=0, aligned=True)
    head = model.head.head
    torch.testing.assert_close(logits, pooled.amax(dim=(2, 3)) @ head.weight.T + head.bias)
    assert model(x, torch.zeros(0, 5)).shape == (0, 5)


def test_builder_layout():
    model = videomae_action_detector("tiny", patch_size=8)
    keys = set(model.state_dict())
    assert {"tokenizer.proj.weight", "encoder.blocks.3.attn.qkv.weight", "encoder.norm.weight", "head.head.weight"} <= (
        keys
    )
    assert isinstance(model.encoder.norm, nn.LayerNorm)
    assert model.head.spatial_scale == 1 / 8 and model.head.num_classes == 80
    assert model.encoder.blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert model.head.dropout.p == 0.0 and model.head.aligned  # no dropout, as the official AVA head
    assert not videomae_action_detector("tiny", patch_size=8, aligned=False).head.aligned
    assert model.no_weight_decay() == set()
    with pytest.raises(ValueError, match="unknown size 'giant'"):
        videomae_action_detector("giant")


def test_gradient_reaches_the_encoder():
    model = _detector(drop_path_rate=0.1, head_dropout=0.5).train()
    x = torch.randn(CLIP, generator=_gen(6))
    targets = torch.zeros(4, 5)
    targets[:, 1] = 1.0
    loss = nn.functional.binary_cross_entropy_with_logits(model(x, _rois()), targets)
    loss.backward()
    for name in (
        "tokenizer.proj.weight",
        "encoder.blocks.0.attn.qkv.weight",
        "encoder.norm.weight",
        "head.head.weight",
    ):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_grad_checkpointing_gives_the_same_gradients():
    x = torch.randn(CLIP, generator=_gen(7))

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = _perturb(_detector(drop_path_rate=0.3)).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(11)
        model(x, _rois()).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_loads_a_pretraining_encoder_with_its_final_norm():
    torch.manual_seed(3)
    pretrain = _perturb(videomae_pretrain(TINY, patch_size=8), seed=4).eval()
    model = _detector().eval()
    report = load_pretrained_encoder(model, pretrain.state_dict(), strict=True)
    assert "encoder.norm.weight" in report.loaded and "encoder.norm.bias" in report.loaded
    assert report.missing == ["head.head.bias", "head.head.weight"]
    x = torch.randn(CLIP, generator=_gen(8))
    n = 48
    expected = pretrain.forward_encoder(x, torch.arange(n).expand(2, n))
    torch.testing.assert_close(model.forward_features(x), expected, rtol=0, atol=1e-5)


def test_layer_decay_groups_put_the_head_on_top():
    model = _detector()
    opt = build_adamw(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in opt.param_groups for name in g["param_names"]}
    decay = {name: g["weight_decay"] for g in opt.param_groups for name in g["param_names"]}
    assert scale["head.head.weight"] == scale["encoder.norm.weight"] == 1.0
    assert scale["encoder.blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["encoder.blocks.0.mlp.fc1.weight"] == 0.25
    assert scale["tokenizer.proj.weight"] == 0.125
    assert decay["head.head.weight"] == 0.05 and decay["head.head.bias"] == 0.0 and decay["encoder.norm.weight"] == 0.0


def test_importing_does_not_import_torchvision():
    code = "import sys, tubemask.detection, tubemask.eval.ava; assert 'torchvision' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bfloat16_head_keeps_float32_boxes():
    head = _head(6)
    grid = (1, 2, 64)  # 512 pixels wide at patch 8: bfloat16 spaces numbers there 2 pixels apart
    tokens = torch.randn(1, 128, 6, generator=_gen(9))
    rois = torch.tensor([[0, 301.0, 3.0, 333.0, 13.0]])
    low = head.pool(tokens.bfloat16(), grid, rois)
    assert low.dtype == torch.bfloat16
    expected = head.pool(tokens.bfloat16().float(), grid, rois)  # only the features are rounded
    torch.testing.assert_close(low.float(), expected.bfloat16().float(), rtol=0, atol=0)
    rounded = head.pool(tokens.bfloat16().float(), grid, rois.bfloat16().float())  # what bfloat16 boxes would give
    assert (rounded - expected).abs().max() > 0.05


def test_loads_official_detection_names_head_included():
    # VideoMAE's AVA code names its parts patch_embed.proj / blocks.{i} / norm / head: all of them load
    source = _perturb(_detector(), seed=5).eval()
    renames = (("tokenizer.", "patch_embed."), ("encoder.", ""), ("head.head.", "head."))
    official = {}
    for key, value in source.state_dict().items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        official[key] = value
    model = _detector().eval()
    report = load_pretrained_encoder(model, official, strict=True)
    assert report.missing == [] and report.layout == "official-finetune"
    x = torch.randn(CLIP, generator=_gen(10))
    torch.testing.assert_close(model(x, _rois()), source(x, _rois()))
