"""Parity of tubemask with Hugging Face VideoMAE and official checkpoints: numbers, not shapes.

Every HF model is randomly initialised, then its LayerNorms, biases and mask token are perturbed so that a converter
that dropped or swapped one of them would fail. Masks are shared: HF's `bool_masked_pos` is tubemask's `mask`.
"""

import argparse
import dataclasses
import warnings

import pytest
import torch

from tubemask.interop import (
    HFEncoderParts,
    from_hf,
    hf_to_tubemask_state_dict,
    infer_official_layout,
    load_official,
    official_to_tubemask_state_dict,
    to_hf,
    tubemask_to_hf_state_dict,
    tubemask_to_official_state_dict,
)
from tubemask.interop.hf_keys import fit_hf_layout, hf_qv_bias, hf_qv_bias_field
from tubemask.interop.widths import mlp_ratio_for
from tubemask.layers import Block
from tubemask.masking import RandomMasker, TubeMasker
from tubemask.models import SIZES, ViTSize, videomae_pretrain
from tubemask.pos_embed import LearnedPositionEmbedding, sinusoid_table
from tubemask.tokens import split_ids

transformers = pytest.importorskip("transformers")

LOSS_TOL = 1e-5
PRED_TOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    hf_kwargs: dict


BASE = dict(
    image_size=32,
    num_frames=4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=128,
)
CASES = [
    Case("p16-t2-meanpool-eps1e-12-qv-normpix", dict(patch_size=16, tubelet_size=2)),
    Case(
        "p8-t1-finalnorm-eps1e-6-noqv-pixels",
        dict(
            patch_size=8,
            tubelet_size=1,
            hidden_size=48,
            num_attention_heads=3,
            intermediate_size=96,
            decoder_num_hidden_layers=2,
            decoder_num_attention_heads=2,
            use_mean_pooling=False,
            layer_norm_eps=1e-6,
            qv_bias=False,
            norm_pix_loss=False,
        ),
    ),
    Case(
        "p16-t1-finalnorm-eps1e-6-1ch-normpix",
        dict(
            patch_size=16,
            tubelet_size=1,
            hidden_size=64,
            intermediate_size=256,
            use_mean_pooling=False,
            layer_norm_eps=1e-6,
            num_channels=1,
        ),
    ),
    Case(
        "p8-t2-meanpool-eps1e-12-qv-pixels-mlp2.5",
        dict(patch_size=8, tubelet_size=2, intermediate_size=80, decoder_intermediate_size=48, norm_pix_loss=False),
    ),
]
MASKERS = {"tube": TubeMasker(mask_ratio=0.5), "random": RandomMasker(mask_ratio=0.75)}


def hf_config(**kwargs):
    """`VideoMAEConfig(**kwargs)` with `qv_bias` spelled as the installed transformers reads it (`qkv_bias` before
    5.24; 5.17 would keep `qv_bias` as an inert extra attribute and build biases anyway)."""
    if "qv_bias" in kwargs:
        kwargs[hf_qv_bias_field(transformers.VideoMAEConfig)] = kwargs.pop("qv_bias")
    return transformers.VideoMAEConfig(**kwargs)


def make_hf(case: Case, seed: int = 0) -> torch.nn.Module:
    """A random `VideoMAEForPreTraining` with perturbed norms, biases and mask token, in eval mode.

    On transformers 5.17 the perturbed biases include its key biases, which tubemask drops: softmax cancels them."""
    torch.manual_seed(seed)
    config = hf_config(**{**BASE, **case.hf_kwargs})
    model = transformers.VideoMAEForPreTraining(config).eval()
    perturb_(model)
    return model


def perturb_(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias") or name.endswith("mask_token"):
                param.add_(0.5 * torch.randn_like(param))


def hf_inputs(config, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, config.num_frames, config.num_channels, config.image_size, config.image_size, generator=g)


def grid_of(config) -> tuple[int, int, int]:
    side = config.image_size // config.patch_size
    return config.num_frames // config.tubelet_size, side, side


def compare(hf_model, model, pixel_values, mask) -> tuple[float, float]:
    """(|loss difference|, max |prediction difference|) for one clip batch and mask."""
    with torch.no_grad():
        ref = hf_model(pixel_values, bool_masked_pos=mask)
        out = model(pixel_values.permute(0, 2, 1, 3, 4), mask)
    assert out.pred.shape == ref.logits.shape
    return abs(ref.loss.item() - out.loss.item()), (ref.logits - out.pred).abs().max().item()


@pytest.mark.parametrize("masker", sorted(MASKERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_from_hf_matches_hf_loss_and_predictions(case: Case, masker: str) -> None:
    hf_model = make_hf(case)
    model = from_hf(hf_model)
    x = hf_inputs(hf_model.config)
    mask = MASKERS[masker](2, grid_of(hf_model.config), generator=torch.Generator().manual_seed(2))
    assert mask.sum(1).unique().numel() == 1 and 0 < int(mask[0].sum()) < mask.shape[1]
    dloss, dpred = compare(hf_model, model, x, mask)
    print(f"\nparity {case.name} {masker}: |dloss|={dloss:.3e} max|dpred|={dpred:.3e}")
    assert dloss < LOSS_TOL
    assert dpred < PRED_TOL


def test_from_hf_copies_the_settings_that_change_numbers() -> None:
    hf_model = make_hf(CASES[1])
    model = from_hf(hf_model)
    assert isinstance(model.encoder.norm, torch.nn.LayerNorm) and model.encoder.norm.eps == 1e-6
    assert model.encoder.blocks[0].attn.q_bias is None and model.decoder.blocks[0].attn.q_bias is None
    assert model.decoder.norm.eps == 1e-5  # HF's decoder norm: LayerNorm default
    assert model.target == "pixels"
    assert model.encoder.blocks[0].mlp.fc1.out_features == 96
    assert len(model.decoder.blocks) == 2 and model.decoder.blocks[0].attn.num_heads == 2
    one_channel = from_hf(make_hf(CASES[2]))
    assert one_channel.pixel_mean is None and one_channel.pixel_std is None and one_channel.target == "norm_pix"
    mean_pooled = from_hf(make_hf(CASES[0]))
    assert isinstance(mean_pooled.encoder.norm, torch.nn.Identity)
    assert mean_pooled.encoder.blocks[0].norm1.eps == 1e-12


def test_from_hf_keeps_train_or_eval_mode() -> None:
    hf_model = make_hf(CASES[0])
    assert not from_hf(hf_model).training
    hf_model.train()
    model = from_hf(hf_model)
    assert model.training and all(m.training for m in model.modules())


def test_from_hf_gradients_match_in_train_mode() -> None:
    hf_model = make_hf(CASES[1]).train()
    model = from_hf(hf_model)
    x = hf_inputs(hf_model.config)
    mask = MASKERS["tube"](2, grid_of(hf_model.config), generator=torch.Generator().manual_seed(8))
    hf_model(x, bool_masked_pos=mask).loss.backward()
    model(x.permute(0, 2, 1, 3, 4), mask).loss.backward()
    hf_attn = hf_model.videomae.encoder.layer[0].attention.attention
    pairs = {
        "patch embed": (
            hf_model.videomae.embeddings.patch_embeddings.projection.weight.grad,
            model.tokenizer.proj.weight.grad,
        ),
        "qkv": (
            torch.cat([hf_attn.query.weight.grad, hf_attn.key.weight.grad, hf_attn.value.weight.grad]),
            model.encoder.blocks[0].attn.qkv.weight.grad,
        ),
        "mask token": (hf_model.mask_token.grad, model.decoder.mask_token.grad),
        "decoder norm": (hf_model.decoder.norm.weight.grad, model.decoder.norm.weight.grad),
    }
    for name, (ref, got) in pairs.items():
        scale = ref.abs().max().item()
        assert scale > 0, name
        assert (ref - got).abs().max().item() <= 1e-4 * scale, name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_to_hf_round_trip_is_exact(case: Case) -> None:
    hf_model = make_hf(case)
    with torch.no_grad():  # transformers 5.17's key biases: dropped (softmax cancels them), written back as zeros
        for name, param in hf_model.named_parameters():
            if name.endswith("attention.attention.key.bias"):
                param.zero_()
    back = to_hf(from_hf(hf_model), num_frames=hf_model.config.num_frames, image_size=hf_model.config.image_size)
    assert not back.training
    assert hf_qv_bias(back.config) == hf_qv_bias(hf_model.config)
    for field in (*BASE, *case.hf_kwargs, "layer_norm_eps", "use_mean_pooling", "norm_pix_loss"):
        if field != "qv_bias":
            assert getattr(back.config, field) == getattr(hf_model.config, field), field
    sd, sd_back = hf_model.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    for key in sd:
        assert torch.equal(sd[key], sd_back[key]), key
    x = hf_inputs(hf_model.config)
    mask = MASKERS["tube"](2, grid_of(hf_model.config), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = hf_model(x, bool_masked_pos=mask)
        b = back(x, bool_masked_pos=mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_from_hf_encoder_only_matches_videomae_model() -> None:
    hf_model = make_hf(CASES[1]).videomae
    parts = from_hf(hf_model)
    assert isinstance(parts, HFEncoderParts)
    x = hf_inputs(hf_model.config)
    grid = grid_of(hf_model.config)
    mask = MASKERS["random"](2, grid, generator=torch.Generator().manual_seed(4))
    visible_ids, _ = split_ids(mask)
    with torch.no_grad():
        ref = hf_model(x, bool_masked_pos=mask).last_hidden_state
        tokens = parts.tokenizer(x.permute(0, 2, 1, 3, 4), visible_ids)
        out = parts.encoder(tokens + parts.pos_embed(visible_ids, grid, tokens))
    assert (ref - out).abs().max().item() < PRED_TOL


def test_from_hf_rejects_what_it_cannot_reproduce() -> None:
    config = hf_config(**{**BASE, "patch_size": 16, "hidden_act": "gelu_new"})
    with pytest.raises(ValueError, match="hidden_act='gelu_new'"):
        from_hf(transformers.VideoMAEForPreTraining(config))
    classifier = transformers.VideoMAEForVideoClassification(hf_config(**{**BASE, "patch_size": 16, "num_labels": 3}))
    with pytest.raises(TypeError, match="VideoMAEForVideoClassification"):
        from_hf(classifier)


def _no_qv_bias(blocks) -> None:
    for block in blocks:
        block.attn.q_bias = None
        block.attn.v_bias = None


TO_HF_REFUSALS = {  # name: (change to a model HF could express, message)
    "encoder class": (lambda m: setattr(m, "encoder", torch.nn.Sequential()), r"encoder must be a tubemask ViTEncoder"),
    "decoder positions": (
        lambda m: setattr(m.decoder, "pos_embed", LearnedPositionEmbedding(32, (2, 2, 2))),
        r"model.decoder.pos_embed is LearnedPositionEmbedding",
    ),
    "q/v bias in the encoder only": (lambda m: _no_qv_bias(m.decoder.blocks), r"q/v biases in one only"),
    "block widths": (
        lambda m: m.encoder.blocks.__setitem__(1, Block(32, num_heads=4, mlp_ratio=2.0)),
        r"equal \(heads, MLP width\) in every encoder block, got \[\(2, 128\), \(4, 64\)\]",
    ),
    "activation": (
        lambda m: setattr(m.decoder.blocks[0].mlp, "act", torch.nn.GELU(approximate="tanh")),
        r"HF's 'gelu' is exact GELU",
    ),
    "norm eps": (
        lambda m: setattr(m.encoder.blocks[0].norm1, "eps", 1e-5),
        r"one LayerNorm eps for encoder and decoder, the model mixes \[1e-06, 1e-05\]",
    ),
}


@pytest.mark.parametrize("case", list(TO_HF_REFUSALS))
def test_to_hf_names_each_layout_hf_cannot_express(case) -> None:
    model = videomae_pretrain(ViTSize(32, 2, 2, 32, 2, 2), patch_size=16)
    change, message = TO_HF_REFUSALS[case]
    change(model)
    with pytest.raises(ValueError, match=message):
        to_hf(model, num_frames=4, image_size=32)


def test_to_hf_refuses_pixel_targets_of_clips_that_are_not_rgb() -> None:
    model = videomae_pretrain(
        ViTSize(32, 1, 2, 32, 1, 2), patch_size=16, in_channels=1, pixel_mean=None, pixel_std=None, target="pixels"
    )
    with pytest.raises(ValueError, match=r"cannot compute 'pixels' targets for clips that are not 3-channel"):
        to_hf(model, num_frames=4, image_size=32)


def test_to_hf_rejects_or_warns_on_what_hf_cannot_express() -> None:
    model = from_hf(make_hf(CASES[0]))
    model.target = "norm_pix_joint"
    with pytest.raises(ValueError, match="norm_pix_joint"):
        to_hf(model, num_frames=4, image_size=32)
    model.target = "norm_pix"
    with pytest.raises(ValueError, match="multiple"):
        to_hf(model, num_frames=3, image_size=32)
    model.pixel_mean = None
    with pytest.raises(ValueError, match="un-normalises"):
        to_hf(model, num_frames=4, image_size=32)
    official_style = videomae_pretrain(ViTSize(32, 1, 4, 32, 1, 4), patch_size=16)  # decoder norm eps 1e-6
    with pytest.warns(UserWarning, match="decoder norm"):
        hf_model = to_hf(official_style, num_frames=4, image_size=32)
    assert hf_model.config.layer_norm_eps == 1e-6 and not hf_model.config.use_mean_pooling


# --- official checkpoints --------------------------------------------------------------------------------------------

OFFICIAL_CASE = Case(
    "official-like",
    dict(
        patch_size=16,
        tubelet_size=2,
        hidden_size=192,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=768,
        decoder_hidden_size=192,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=3,
        decoder_intermediate_size=768,
        use_mean_pooling=False,
        layer_norm_eps=1e-6,
    ),
)


def official_from_hf(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names -> official VideoMAE names, written out here independently of the library's tables."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in hf_sd.items():
        if key.endswith("attention.attention.key.bias"):  # transformers 5.17 only; official VideoMAE has none
            continue
        key = key.replace("videomae.embeddings.patch_embeddings.projection", "encoder.patch_embed.proj")
        key = key.replace("videomae.layernorm", "encoder.norm")
        key = key.replace("videomae.encoder.layer.", "encoder.blocks.").replace(
            "decoder.decoder_layers.", "decoder.blocks."
        )
        key = key.replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
        key = key.replace("attention.output.dense", "attn.proj")
        key = key.replace("intermediate.dense", "mlp.fc1").replace("output.dense", "mlp.fc2")
        key = key.replace("attention.attention.query.bias", "attn.q_bias")
        key = key.replace("attention.attention.value.bias", "attn.v_bias")
        if ".attention.attention." in key:  # query / key / value weights: fused as rows q, k, v
            block, which = key.split(".attention.attention.")
            qkv.setdefault(block, {})[which.split(".")[0]] = value
            continue
        out[key] = value
    for block, parts in qkv.items():
        out[f"{block}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


@pytest.fixture(scope="module")
def official() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """An HF model whose decoder norm eps is set to the official 1e-6, and its official-layout state dict."""
    hf_model = make_hf(OFFICIAL_CASE, seed=5)
    hf_model.decoder.norm.eps = 1e-6
    return hf_model, official_from_hf(hf_model.state_dict())


def assert_matches_hf(model, hf_model) -> tuple[float, float]:
    x = hf_inputs(hf_model.config, seed=6)
    diffs = []
    for name, masker in MASKERS.items():
        mask = masker(2, grid_of(hf_model.config), generator=torch.Generator().manual_seed(7))
        dloss, dpred = compare(hf_model, model, x, mask)
        print(f"\nparity official {name}: |dloss|={dloss:.3e} max|dpred|={dpred:.3e}")
        assert dloss < LOSS_TOL and dpred < PRED_TOL
        diffs.append((dloss, dpred))
    return diffs[0]


def test_official_layout_names(official) -> None:
    _, sd = official
    assert "encoder.blocks.1.attn.qkv.weight" in sd and "encoder.blocks.0.attn.q_bias" in sd
    assert {"encoder.patch_embed.proj.weight", "encoder.norm.weight", "mask_token", "decoder.head.bias"} <= set(sd)
    assert not any("query" in k or "videomae" in k for k in sd)


@pytest.mark.parametrize("wrapping", ["raw", "model", "module-prefixed", "compiled-v2-with-pos-embed"])
def test_load_official_matches_hf(official, wrapping: str) -> None:
    hf_model, sd = official
    t, hw = 2, 4
    if wrapping == "raw":
        ckpt = dict(sd)
    elif wrapping == "model":
        ckpt = {"model": sd, "epoch": 3}
    elif wrapping == "module-prefixed":
        ckpt = {"module": {f"module.{k}": v for k, v in sd.items()}}
    else:
        ckpt = {f"_orig_mod.{k}": v for k, v in sd.items()}
        ckpt["_orig_mod.encoder.pos_embed"] = sinusoid_table(t * hw, 192)[None]
        ckpt["_orig_mod.pos_embed"] = sinusoid_table(t * hw, 192)[None]
        ckpt["_orig_mod.decoder.pos_embed"] = sinusoid_table(t * hw, 192)[None]
        ckpt = {"model": ckpt}
    model = load_official(ckpt)
    assert not model.training
    assert model.decoder.norm.eps == 1e-6 and model.encoder.blocks[0].norm1.eps == 1e-6
    assert_matches_hf(model, hf_model)


def test_load_official_from_file_with_training_state(official, tmp_path) -> None:
    hf_model, sd = official
    path = tmp_path / "checkpoint-799.pth"
    args = argparse.Namespace(model="pretrain_videomae_small_patch16_224", mask_ratio=0.9, batch_size=32)
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 799, "args": args}, path)
    model = load_official(path)
    assert_matches_hf(model, hf_model)
    same = load_official(str(path), model=from_hf(hf_model))  # into a given model
    assert torch.equal(same.decoder.mask_token, hf_model.mask_token)


def test_official_round_trip_through_tubemask_names(official) -> None:
    _, sd = official
    tm = official_to_tubemask_state_dict(sd)
    assert "tokenizer.proj.weight" in tm and "decoder.mask_token" in tm
    back = tubemask_to_official_state_dict(tm)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def fake_official(dim: int, depth: int, hidden: int, ddim: int, ddepth: int, dhidden: int, *, patch=16, tubelet=2):
    """Shape-only official state dict (meta tensors) of any size."""
    k = 3 * tubelet * patch * patch
    sd = {"encoder.patch_embed.proj.weight": _meta(dim, 3, tubelet, patch, patch), "encoder.norm.weight": _meta(dim)}
    for i in range(depth):
        sd[f"encoder.blocks.{i}.mlp.fc1.weight"] = _meta(hidden, dim)
    for i in range(ddepth):
        sd[f"decoder.blocks.{i}.mlp.fc1.weight"] = _meta(dhidden, ddim)
    sd |= {
        "encoder_to_decoder.weight": _meta(ddim, dim),
        "mask_token": _meta(1, 1, ddim),
        "decoder.head.weight": _meta(k, ddim),
    }
    return sd


def test_infer_official_layout_presets() -> None:
    base = infer_official_layout(official_to_tubemask_state_dict(fake_official(768, 12, 3072, 384, 4, 1536)))
    assert base.size == SIZES["base"] and (base.tubelet_size, base.patch_size, base.in_channels) == (2, 16, 3)
    assert base.mlp_ratio == 4.0 and base.final_norm
    large = infer_official_layout(official_to_tubemask_state_dict(fake_official(1024, 24, 4096, 512, 12, 2048)))
    assert large.size == ViTSize(1024, 24, 16, 512, 12, 8)
    giant = infer_official_layout(
        official_to_tubemask_state_dict(fake_official(1408, 40, 6144, 512, 4, 2234, patch=14)), where="g.pth"
    )
    assert giant.size == ViTSize(1408, 40, 16, 512, 4, 8) and giant.patch_size == 14
    assert int(1408 * giant.mlp_ratio) == 6144 and int(512 * giant.mlp_ratio) == 2234
    assert int(1408 * mlp_ratio_for(6144, 1408)) == 6144


def test_load_official_infers_the_preset_from_shapes(official) -> None:
    _, sd = official
    model = load_official(sd)
    assert model.tokenizer.embed_dim == 192 and len(model.encoder.blocks) == 2
    assert model.encoder.blocks[0].attn.num_heads == 3 and model.decoder.blocks[0].attn.num_heads == 3
    assert (model.tokenizer.tubelet_size, model.tokenizer.patch_size) == (2, 16)
    assert model.encoder.blocks[0].mlp.fc1.out_features == 768 and len(model.decoder.blocks) == 1


class _NotATensor:
    pass


def test_load_official_errors_name_the_keys_and_the_file(official, tmp_path) -> None:
    _, sd = official
    path = tmp_path / "broken.pth"
    torch.save({"model": {k: v for k, v in sd.items() if k != "encoder.blocks.1.attn.v_bias"}}, path)
    with pytest.raises(ValueError, match=r"broken\.pth.*encoder\.blocks\.1\.attn\.v_bias"):
        load_official(path)
    with pytest.warns(UserWarning, match="encoder.blocks.1.attn.v_bias"):
        partial = load_official(path, strict=False)
    assert torch.equal(partial.encoder.blocks[0].attn.v_bias, sd["encoder.blocks.0.attn.v_bias"])

    extra = dict(sd, **{"encoder.blocks.0.gamma_1": torch.ones(192)})
    with pytest.raises(ValueError, match="unexpected keys.*gamma_1"):
        load_official(extra)
    with pytest.raises(ValueError, match="model="):
        load_official(fake_official(100, 1, 400, 192, 1, 768))
    with pytest.raises(ValueError, match="lacks.*encoder.patch_embed.proj.weight"):
        load_official({"encoder.norm.weight": torch.ones(3)})
    learned = dict(sd, pos_embed=torch.randn(1, 8, 192))
    with pytest.raises(ValueError, match="pos_embed.*not VideoMAE's fixed sinusoid"):
        load_official(learned)
    smaller = videomae_pretrain(ViTSize(32, 1, 4, 32, 1, 4), patch_size=16)
    with pytest.raises(
        ValueError,
        match=r"differ in shape.*encoder.patch_embed.proj.weight: checkpoint \(192, 3, 2, 16, 16\) vs model \(32,",
    ):
        load_official(sd, model=smaller)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_official(tmp_path / "missing.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth holds a list"):
        load_official(tmp_path / "list.pth")
    torch.save({"model": sd, "extra": _NotATensor()}, tmp_path / "pickled.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="pickled.pth cannot be read with torch.load\\(weights_only=True\\)"):
            load_official(tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="neither a 'model' nor a 'module'"):
        load_official({"epoch": 3, "weights": {}})


# --- transformers versions: q/v bias layouts ---------------------------------------------------------------------------


def test_a_key_bias_is_dropped_without_changing_the_numbers() -> None:
    """transformers 5.17 biases query, key and value; softmax cancels the key bias, so from_hf drops it."""
    hf_model = make_hf(CASES[0])
    with torch.no_grad():
        for layer in (*hf_model.videomae.encoder.layer, *hf_model.decoder.decoder_layers):
            attn = layer.attention.attention
            if attn.key.bias is None:  # transformers other than 5.17: give the key a bias as 5.17 does
                key = torch.nn.Linear(attn.key.in_features, attn.key.out_features)
                key.weight.copy_(attn.key.weight)
                attn.key = key
            attn.key.bias.copy_(torch.randn_like(attn.key.bias))
    model = from_hf(hf_model)
    x = hf_inputs(hf_model.config)
    mask = MASKERS["tube"](2, grid_of(hf_model.config), generator=torch.Generator().manual_seed(2))
    dloss, dpred = compare(hf_model, model, x, mask)
    assert dloss < LOSS_TOL
    assert dpred < PRED_TOL


def test_state_dicts_read_and_write_each_transformers_layout() -> None:
    """5.x names (`query.bias` / `value.bias`), 4.x names (`q_bias` / `v_bias`) and 5.17's extra `key.bias`."""
    sd = make_hf(CASES[0]).state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("key.bias")}
    expected = hf_to_tubemask_state_dict(sd)
    v4 = {
        k.replace("attention.query.bias", "attention.q_bias").replace("value.bias", "v_bias"): v for k, v in sd.items()
    }
    v517 = dict(sd)
    v517.update({k.replace("query.bias", "key.bias"): torch.ones_like(v) for k, v in sd.items() if "query.bias" in k})
    for layout in (v4, v517):
        got = hf_to_tubemask_state_dict(layout)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    out = tubemask_to_hf_state_dict(expected)
    assert out.keys() == sd.keys()

    class Layout(torch.nn.Module):
        """An HF model as fit_hf_layout reads it: only its state dict's names and shapes."""

        def __init__(self, state: dict) -> None:
            super().__init__()
            self.state = state

        def state_dict(self, *args, **kwargs) -> dict:
            return self.state

    for layout in (v4, v517, sd):
        fitted = fit_hf_layout(out, Layout(layout))
        assert fitted.keys() == layout.keys()
        for key, value in fitted.items():
            assert torch.equal(value, torch.zeros_like(value) if key.endswith("key.bias") else layout[key]), key
