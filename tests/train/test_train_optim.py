import pytest
import torch
from torch import nn

from tubemask.train.optim import build_adamw, default_layer_id, param_groups


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)


class Tiny(nn.Module):
    """Names like tubemask's: tokenizer, pos_embed, mask_token, blocks.{i}, norm, head."""

    def __init__(self, d: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.tokenizer = nn.Linear(4, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.listed = nn.Parameter(torch.zeros(d, d))
        self.blocks = nn.ModuleList([Block(d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 5)

    def no_weight_decay(self) -> set[str]:
        return {"listed"}


def names_by_decay(groups: list[dict]) -> tuple[set[str], set[str]]:
    decay, no_decay = set(), set()
    for group in groups:
        (decay if group["weight_decay"] > 0 else no_decay).update(group["param_names"])
    return decay, no_decay


def test_weight_decay_split() -> None:
    model = Tiny()
    groups = param_groups(model, weight_decay=0.05)
    decay, no_decay = names_by_decay(groups)
    assert decay == {"tokenizer.weight", "blocks.0.fc.weight", "blocks.1.fc.weight", "head.weight"}
    assert {"pos_embed", "mask_token", "listed", "norm.weight", "norm.bias", "head.bias"} <= no_decay
    assert "blocks.1.norm.weight" in no_decay
    assert decay | no_decay == {name for name, _ in model.named_parameters()}
    assert all(group["lr_scale"] == 1.0 for group in groups)


def test_no_weight_decay_of_a_submodule_is_prefixed() -> None:
    outer = nn.Module()
    outer.inner = Tiny()
    _, no_decay = names_by_decay(param_groups(outer, weight_decay=0.1))
    assert "inner.listed" in no_decay


def test_frozen_parameters_are_left_out() -> None:
    model = Tiny()
    model.head.weight.requires_grad_(False)
    names = {n for g in param_groups(model, weight_decay=0.05) for n in g["param_names"]}
    assert "head.weight" not in names


def test_default_layer_id() -> None:
    assert default_layer_id("tokenizer.proj.weight", 12) == 0
    assert default_layer_id("pos_embed", 12) == 0
    assert default_layer_id("cls_token", 12) == 0
    assert default_layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert default_layer_id("encoder.blocks.11.mlp.fc1.bias", 12) == 12
    assert default_layer_id("fc_norm.weight", 12) == 13
    assert default_layer_id("head.weight", 12) == 13
    assert default_layer_id("decoder.blocks.0.norm1.weight", 12) == 13


def test_layer_decay_scales() -> None:
    model = Tiny(depth=2)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)  # num_layers inferred from model.blocks
    scale = {name: g["lr_scale"] for g in groups for name in g["param_names"]}
    assert scale["tokenizer.weight"] == pytest.approx(0.5**3)
    assert scale["pos_embed"] == pytest.approx(0.5**3)
    assert scale["blocks.0.fc.weight"] == pytest.approx(0.5**2)
    assert scale["blocks.1.norm.bias"] == pytest.approx(0.5)
    assert scale["head.weight"] == 1.0
    # groups differ by layer and by decay, never mix them
    for g in groups:
        assert len({default_layer_id(n, 2) for n in g["param_names"]}) == 1


def test_layer_decay_with_encoder_prefix_and_explicit_depth() -> None:
    model = nn.Module()
    model.encoder = Tiny(depth=3)
    groups = param_groups(model, weight_decay=0.0, layer_decay=0.9, num_layers=3)
    scale = {name: g["lr_scale"] for g in groups for name in g["param_names"]}
    assert scale["encoder.blocks.2.fc.weight"] == pytest.approx(0.9)
    assert scale["encoder.tokenizer.weight"] == pytest.approx(0.9**4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"weight_decay": 0.1, "layer_decay": 0.0}, "layer_decay"),
        ({"weight_decay": 0.1, "layer_decay": 1.5}, "layer_decay"),
        ({"weight_decay": 0.1, "layer_decay": 0.5, "layer_id_fn": lambda name, n: 99}, "outside"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        param_groups(Tiny(), **kwargs)


def test_layer_decay_needs_depth_when_it_cannot_be_inferred() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        param_groups(nn.Linear(2, 2), weight_decay=0.1, layer_decay=0.5)


def test_build_adamw_steps_with_scaled_lrs() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = build_adamw(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.95)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
    seen = [p for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    before = model.head.weight.detach().clone()
    out = model.head(model.norm(model.tokenizer(torch.randn(3, 4))))
    out.square().mean().backward()
    opt.step()
    assert not torch.equal(before, model.head.weight)


def test_build_adamw_rejects_bad_lr() -> None:
    with pytest.raises(ValueError, match="lr"):
        build_adamw(Tiny(), lr=0.0, weight_decay=0.05)
