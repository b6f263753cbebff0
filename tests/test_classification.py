"""Fine-tuning classifier: numbers of the forward pass, drop path + checkpointing, loading pretrained / official /
fine-tuned weights, and exact parity with Hugging Face's VideoMAEForVideoClassification."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tubemask.classification import VideoClassifier, videomae_classifier
from tubemask.heads import ClassificationHead
from tubemask.interop.finetune_weights import interpolate_pos_embed, load_pretrained_encoder
from tubemask.layers import Block
from tubemask.masking import TubeMasker
from tubemask.models import ViTSize, videomae_pretrain
from tubemask.motion_aware import MotionAwareMasker
from tubemask.pos_embed import LearnedPositionEmbedding, sinusoid_table
from tubemask.tokens import split_ids

TINY = ViTSize(32, 2, 2, 16, 1, 2)  # embed 32, depth 2, heads 2; decoder 16 x 1, 2 heads
CLIP = (2, 3, 4, 16, 16)  # patch 8, tubelet 2 -> grid (2, 2, 2), 8 tokens


def _clip(seed: int = 0, shape: tuple[int, ...] = CLIP) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _perturb(module: nn.Module, seed: int = 1, scale: float = 0.1) -> nn.Module:
    """Make every parameter non-trivial: LayerNorm weights away from 1, biases away from 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def _classifier(**kwargs) -> VideoClassifier:
    torch.manual_seed(0)
    args = dict(num_classes=5, patch_size=8, drop_path_rate=0.0, head_dropout=0.0)
    args.update(kwargs)
    return videomae_classifier(TINY, **args)


def test_forward_numbers_match_manual_pipeline():
    model = _perturb(_classifier()).eval()
    x = _clip()
    tokens = model.tokenizer.proj(x).flatten(2).transpose(1, 2) + sinusoid_table(8, 32)
    for block in model.encoder.blocks:
        tokens = block(tokens)
    pooled = nn.functional.layer_norm(
        tokens.mean(1), (32,), model.head.fc_norm.weight, model.head.fc_norm.bias, eps=1e-6
    )
    expected = pooled @ model.head.head.weight.T + model.head.head.bias
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.forward_features(x), tokens, rtol=0, atol=1e-5)
    inter = model.forward_intermediates(x)
    assert len(inter) == 2
    torch.testing.assert_close(inter[-1], tokens, rtol=0, atol=1e-5)
    (first,) = model.forward_intermediates(x, indices=[0])
    torch.testing.assert_close(first, inter[0], rtol=0, atol=0)


def test_builder_layout_and_init():
    model = videomae_classifier("tiny", num_classes=7, patch_size=8)
    keys = set(model.state_dict())
    assert "encoder.norm.weight" not in keys  # fine-tuning layout: fc_norm replaces the final norm
    assert {"head.fc_norm.weight", "head.head.weight", "tokenizer.proj.weight"} <= keys
    assert model.head.fc_norm.eps == 1e-6 and model.head.dropout.p == 0.5
    rates = [b.drop_path.drop_prob for b in model.encoder.blocks[1:]]
    assert rates[-1] == pytest.approx(0.2)
    assert float(model.head.head.weight.detach().std()) < 0.02 * 0.001 * 1.5  # trunc_normal(.02) * init_scale
    assert videomae_classifier("tiny", num_classes=3, final_norm=True).encoder.norm.eps == 1e-6
    with pytest.raises(ValueError, match="unknown size 'gigantic'"):
        videomae_classifier("gigantic", num_classes=3)


def test_no_weight_decay_lists_learned_table():
    assert _classifier().no_weight_decay() == set()
    learned = _classifier(pos_embed=LearnedPositionEmbedding(32, (2, 2, 2)))
    assert learned.no_weight_decay() == {"pos_embed.weight"}


def test_drop_path_is_active_in_training_only():
    model = _perturb(_classifier(drop_path_rate=0.5))
    x = _clip()
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_grad_checkpointing_gives_the_same_gradients_with_drop_path():
    model = _perturb(_classifier(drop_path_rate=0.5, head_dropout=0.5)).train()
    x = _clip()

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(3)
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.set_grad_checkpointing()
    assert model.encoder.grad_checkpointing
    ckpt = grads()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_head_shapes_are_checked():
    head = ClassificationHead(8, 3)
    with pytest.raises(Exception, match="b n d|shape|Type"):
        head(torch.randn(2, 8))
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationHead(8, 0)


# ---------------------------------------------------------------- loading weights


def _pretrained(final_norm: bool = True):
    torch.manual_seed(4)
    return _perturb(videomae_pretrain(TINY, patch_size=8, final_norm=final_norm), seed=5).eval()


def _blocks_out(model, x):
    """Pretraining encoder over all tokens, before its final norm."""
    ids = torch.arange(8)[None].expand(x.shape[0], -1)
    tokens = model.tokenizer(x) + model.pos_embed(ids, (2, 2, 2))
    return model.encoder.forward_blocks(tokens)


def test_load_tubemask_final_checkpoint(tmp_path):
    pre = _pretrained()
    path = tmp_path / "final.pt"
    torch.save({"model": pre.state_dict(), "config": {"size": "tiny"}, "step": 3}, path)
    clf = _classifier().eval()
    report = load_pretrained_encoder(clf, path, strict=True)
    x = _clip()
    torch.testing.assert_close(clf.forward_features(x), _blocks_out(pre, x), rtol=0, atol=0)
    assert report.layout == "tubemask" and report.source == str(path)
    assert report.missing == ["head.fc_norm.bias", "head.fc_norm.weight", "head.head.bias", "head.head.weight"]
    assert report.unexpected == []
    assert "norm.weight" in report.dropped and any("final encoder norm" in n for n in report.notes)
    assert any(k.startswith("decoder.") for k in report.dropped)
    # with a final norm the classifier's features are the pretraining model's
    with_norm = _classifier(final_norm=True).eval()
    load_pretrained_encoder(with_norm, path, strict=True)
    torch.testing.assert_close(with_norm.forward_features(x), pre.forward_features(x), rtol=0, atol=0)


def test_load_tubemask_encoder_export(tmp_path):
    pre = _pretrained()
    sd = {k: v for k, v in pre.state_dict().items() if k.startswith(("tokenizer.", "encoder."))}
    path = tmp_path / "encoder.pt"
    torch.save({"model": sd, "config": {}}, path)
    clf = _classifier().eval()
    report = load_pretrained_encoder(clf, path)
    assert report.unexpected == [] and len(report.loaded) == len(sd) - 2  # all but encoder.norm.{weight,bias}
    torch.testing.assert_close(clf.forward_features(_clip()), _blocks_out(pre, _clip()), rtol=0, atol=0)


def test_load_official_pretraining_checkpoint(tmp_path):
    pre = _pretrained()
    official = {}
    for key, value in pre.state_dict().items():
        key = key.replace("tokenizer.proj.", "encoder.patch_embed.proj.").replace("decoder.mask_token", "mask_token")
        official["module." + key] = value
    official["module.encoder.pos_embed"] = sinusoid_table(8, 32)[None]
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"module": official, "epoch": 799}, path)
    clf = _classifier().eval()
    report = load_pretrained_encoder(clf, path, strict=True)
    assert report.layout == "official-pretrain"
    assert "mask_token" in report.dropped and "encoder_to_decoder.weight" in report.dropped
    assert any("fixed sinusoid" in n and "ignored" in n for n in report.notes)
    torch.testing.assert_close(clf.forward_features(_clip()), _blocks_out(pre, _clip()), rtol=0, atol=0)


def _official_finetuned(model: VideoClassifier, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        for tm, off in (("tokenizer.proj.", "patch_embed.proj."), ("encoder.", ""), ("head.", "")):
            if key.startswith(tm):
                key = off + key[len(tm) :]
                break
        out[prefix + key] = value
    return out


def test_load_official_finetuned_checkpoint_gives_the_same_logits(tmp_path):
    src = _perturb(_classifier(), seed=6).eval()
    sd = _official_finetuned(src, prefix="_orig_mod.backbone.")
    assert "_orig_mod.backbone.fc_norm.weight" in sd and "_orig_mod.backbone.head.weight" in sd
    path = tmp_path / "finetuned.pth"
    torch.save({"state_dict": sd}, path)
    clf = _classifier().eval()
    report = load_pretrained_encoder(clf, path, strict=True)
    assert report.layout == "official-finetune" and report.missing == []
    torch.testing.assert_close(clf(_clip()), src(_clip()), rtol=0, atol=0)
    # another number of classes: everything but the classification layer
    other = _classifier(num_classes=3).eval()
    report = load_pretrained_encoder(other, sd, strict=True)
    assert report.missing == ["head.head.bias", "head.head.weight"]
    assert any("another number of classes" in n for n in report.notes)
    torch.testing.assert_close(
        other.head.pool(other.forward_features(_clip())), src.head.pool(src.forward_features(_clip()))
    )


def test_learned_pos_embed_is_loaded_and_interpolated():
    src = _perturb(_classifier(pos_embed=LearnedPositionEmbedding(32, (2, 2, 2))), seed=7).eval()
    sd = _official_finetuned(src)
    sd["pos_embed"] = sd.pop("pos_embed.weight")[None]  # official layout [1 n d]
    same = _classifier(pos_embed=LearnedPositionEmbedding(32, (2, 2, 2))).eval()
    load_pretrained_encoder(same, sd, strict=True)
    torch.testing.assert_close(same(_clip()), src(_clip()), rtol=0, atol=0)
    # more frames and a larger frame: grid (2, 2, 2) -> (4, 3, 3)
    big = _classifier(pos_embed=LearnedPositionEmbedding(32, (4, 3, 3))).eval()
    with pytest.raises(ValueError, match="cannot tell the grid of the 8-row pos_embed.*source_grid"):
        load_pretrained_encoder(big, sd)  # both frames and frame size changed: ambiguous
    report = load_pretrained_encoder(big, sd, strict=True, source_grid=(2, 2, 2))
    assert any("interpolated trilinearly from grid (2, 2, 2) to (4, 3, 3)" in n for n in report.notes)
    expected = (
        nn.functional.interpolate(
            src.pos_embed.weight.detach().reshape(1, 2, 2, 2, 32).permute(0, 4, 1, 2, 3),
            size=(4, 3, 3),
            mode="trilinear",
            align_corners=False,
        )
        .permute(0, 2, 3, 4, 1)
        .reshape(36, 32)
    )
    torch.testing.assert_close(big.pos_embed.weight.detach(), expected)
    assert big(_clip(shape=(1, 3, 8, 24, 24))).shape == (1, 5)
    # only the frame size changed (or only the frames): the source grid is inferred
    report = load_pretrained_encoder(_classifier(pos_embed=LearnedPositionEmbedding(32, (2, 3, 3))), sd)
    assert any("from grid (2, 2, 2) to (2, 3, 3)" in n for n in report.notes)
    report = load_pretrained_encoder(_classifier(pos_embed=LearnedPositionEmbedding(32, (4, 2, 2))), sd)
    assert any("from grid (2, 2, 2) to (4, 2, 2)" in n for n in report.notes)
    # a constant table stays constant; a learned table into a sinusoid classifier is ignored with a note
    const = interpolate_pos_embed(torch.ones(8, 4), (2, 2, 2), (3, 5, 5))
    torch.testing.assert_close(const, torch.ones(75, 4))
    report = load_pretrained_encoder(_classifier(), sd)
    assert "pos_embed" in report.dropped and any("learned table" in n for n in report.notes)


def test_load_errors_name_the_file_and_keys(tmp_path):
    pre = _pretrained()
    path = tmp_path / "wide.pt"
    torch.save({"model": pre.state_dict()}, path)
    wide = videomae_classifier(ViTSize(48, 2, 2, 16, 1, 2), num_classes=5, patch_size=8)
    with pytest.raises(ValueError, match=r"wide\.pt.*encoder\.blocks\.0|wide\.pt.*tokenizer"):
        load_pretrained_encoder(wide, path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_pretrained_encoder(_classifier(), tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="no encoder weights"):
        load_pretrained_encoder(_classifier(), {"foo.weight": torch.zeros(2)})
    sd = dict(pre.state_dict())
    sd["encoder.blocks.0.attn.k_bias"] = torch.zeros(32)
    with pytest.raises(ValueError, match=r"strict=True.*attn\.k_bias"):
        load_pretrained_encoder(_classifier(), sd, strict=True)
    report = load_pretrained_encoder(_classifier(), sd)
    assert report.unexpected == ["blocks.0.attn.k_bias"]


class _NotATensor:
    pass


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": _NotATensor()}, path)
    with pytest.raises(ValueError, match=r"unsafe\.pt.*weights_only"):
        load_pretrained_encoder(_classifier(), path)


# ---------------------------------------------------------------- Hugging Face parity

transformers = pytest.importorskip("transformers")
from tubemask.interop.hf_classification import classifier_from_hf, classifier_to_hf  # noqa: E402
from tubemask.interop.hf_keys import hf_qv_bias, hf_qv_bias_field  # noqa: E402

HF_CONFIGS = [
    dict(patch_size=8, tubelet_size=2, image_size=16, layer_norm_eps=1e-12, qv_bias=True),
    dict(patch_size=16, tubelet_size=1, image_size=32, layer_norm_eps=1e-6, qv_bias=False),
    dict(patch_size=8, tubelet_size=1, image_size=16, layer_norm_eps=1e-6, qv_bias=True),
    dict(patch_size=16, tubelet_size=2, image_size=32, layer_norm_eps=1e-12, qv_bias=False),
]


def _hf_classifier(cfg: dict):
    cfg = dict(cfg)  # qv_bias as the installed transformers reads it: qkv_bias before 5.24
    cfg[hf_qv_bias_field(transformers.VideoMAEConfig)] = cfg.pop("qv_bias")
    config = transformers.VideoMAEConfig(
        num_frames=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=6,
        **cfg,
    )
    torch.manual_seed(8)
    return _perturb(transformers.VideoMAEForVideoClassification(config), seed=9, scale=0.2).eval()


@pytest.mark.parametrize("cfg", HF_CONFIGS, ids=lambda c: f"p{c['patch_size']}t{c['tubelet_size']}")
def test_hf_to_tubemask_logits_match(cfg):
    hf = _hf_classifier(cfg)
    model = classifier_from_hf(hf)
    assert not model.training and isinstance(model.encoder.norm, nn.Identity)
    assert model.head.fc_norm.eps == 1e-5 and model.encoder.blocks[0].norm1.eps == cfg["layer_norm_eps"]
    assert (model.encoder.blocks[0].attn.q_bias is not None) == cfg["qv_bias"]
    x = _clip(shape=(2, 3, 4, cfg["image_size"], cfg["image_size"]))
    with torch.no_grad():
        expected = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
        got = model(x)
    assert expected.abs().max() > 0.1  # not trivial
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("cfg", HF_CONFIGS, ids=lambda c: f"p{c['patch_size']}t{c['tubelet_size']}")
def test_tubemask_to_hf_logits_match(cfg):
    model = _perturb(
        _classifier(
            num_classes=6,
            patch_size=cfg["patch_size"],
            tubelet_size=cfg["tubelet_size"],
            norm_eps=cfg["layer_norm_eps"],
            qkv_bias=cfg["qv_bias"],
        ),
        seed=10,
        scale=0.2,
    ).eval()
    size = cfg["image_size"]
    with pytest.warns(UserWarning, match="fc_norm eps"):
        hf = classifier_to_hf(model, num_frames=4, image_size=size)
    assert hf_qv_bias(hf.config) == cfg["qv_bias"] and hf.config.layer_norm_eps == cfg["layer_norm_eps"]
    x = _clip(shape=(2, 3, 4, size, size))
    with torch.no_grad():
        expected = model(x)
        got = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max() < 1e-4
    back = classifier_from_hf(hf)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_hf_conversion_errors():
    config = transformers.VideoMAEConfig(
        num_frames=4,
        image_size=16,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        use_mean_pooling=False,
    )
    with pytest.raises(ValueError, match="use_mean_pooling=False"):
        classifier_from_hf(transformers.VideoMAEForVideoClassification(config))
    with pytest.raises(TypeError, match="VideoMAEForVideoClassification"):
        classifier_from_hf(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="final norm"):
        classifier_to_hf(_classifier(final_norm=True), num_frames=4, image_size=16)
    with pytest.raises(ValueError, match="LearnedPositionEmbedding"):
        classifier_to_hf(_classifier(pos_embed=LearnedPositionEmbedding(32, (2, 2, 2))), num_frames=4, image_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="multiple|divis"):
            classifier_to_hf(_classifier(), num_frames=5, image_size=16)


def _no_qv_bias(block) -> None:
    block.attn.q_bias = None
    block.attn.v_bias = None


CLASSIFIER_TO_HF_REFUSALS = {  # name: (change to a classifier HF could express, message)
    "encoder class": (lambda m: setattr(m, "encoder", nn.Sequential()), r"encoder must be a tubemask ViTEncoder"),
    "no fc_norm": (lambda m: setattr(m.head, "fc_norm", nn.Identity()), r"ClassificationHead with fc_norm=True"),
    "no blocks": (lambda m: setattr(m.encoder, "blocks", nn.ModuleList()), r"the encoder has no blocks"),
    "block widths": (
        lambda m: m.encoder.blocks.__setitem__(1, Block(32, num_heads=4, mlp_ratio=2.0)),
        r"equal \(heads, MLP width\) in every block, got \[\(2, 128\), \(4, 64\)\]",
    ),
    "norm eps": (lambda m: setattr(m.encoder.blocks[1].norm2, "eps", 1e-5), r"one layer_norm_eps, the blocks mix"),
    "q/v bias in some blocks": (lambda m: _no_qv_bias(m.encoder.blocks[0]), r"some blocks have q/v biases, some not"),
    "activation": (
        lambda m: setattr(m.encoder.blocks[0].mlp, "act", nn.GELU(approximate="tanh")),
        r"HF's 'gelu' is exact GELU",
    ),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_TO_HF_REFUSALS))
def test_classifier_to_hf_names_each_layout_hf_cannot_express(case):
    model = _classifier()
    change, message = CLASSIFIER_TO_HF_REFUSALS[case]
    change(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fc_norm eps notice is not the point here
        with pytest.raises(ValueError, match=message):
            classifier_to_hf(model, num_frames=4, image_size=16)


# ---- token selection: `model(video, mask)` and `selector=` (EVEREST's fine-tuning) ----------------------------------


def test_an_all_kept_mask_is_the_plain_path():
    model = _perturb(_classifier()).eval()
    x = _clip()
    keep_all = torch.zeros(2, 8, dtype=torch.bool)
    torch.testing.assert_close(model(x, keep_all), model(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(model.forward_features(x, keep_all, num_masked=0), model.forward_features(x))


def test_dropped_cubes_match_the_manual_pipeline_over_the_kept_tokens():
    """The encoder runs over the kept cubes only, in raster order, each with its own position; the head pools them."""
    model = _perturb(_classifier()).eval()
    x = _clip()
    mask = torch.tensor([[1, 0, 0, 1, 0, 1, 1, 0], [0, 0, 1, 1, 1, 0, 1, 0]], dtype=torch.bool)
    tokens = model.tokenizer.proj(x).flatten(2).transpose(1, 2) + sinusoid_table(8, 32)
    kept = torch.stack([tokens[i][~mask[i]] for i in range(2)])  # [2 4 32]
    for block in model.encoder.blocks:
        kept = block(kept)
    pooled = nn.functional.layer_norm(kept.mean(1), (32,), model.head.fc_norm.weight, model.head.fc_norm.bias, eps=1e-6)
    expected = pooled @ model.head.head.weight.T + model.head.head.bias
    torch.testing.assert_close(model(x, mask), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.forward_features(x, mask, num_masked=4), kept, rtol=0, atol=1e-5)


def test_kept_tokens_are_the_pretraining_encoders_visible_tokens(tmp_path):
    """With the pretraining encoder's weights (and its final norm), the classifier's tokens over the kept cubes are
    `MAEWrapper.forward_encoder`'s over the same visible cubes (the path checked against HF transformers)."""
    pre = _perturb(_pretrained()).eval()
    torch.save({"model": pre.state_dict()}, tmp_path / "final.pt")
    clf = _classifier(final_norm=True).eval()
    load_pretrained_encoder(clf, tmp_path / "final.pt", strict=True)
    x = _clip(3)
    mask = TubeMasker(0.5)(2, (2, 2, 2), generator=torch.Generator().manual_seed(0))
    visible = split_ids(mask)[0]
    torch.testing.assert_close(clf.forward_features(x, mask), pre.forward_encoder(x, visible), rtol=0, atol=0)


def _moving_square(batch: int = 2, frames: int = 4, side: int = 16) -> torch.Tensor:
    """A bright 4-pixel square moving right 2 pixels per frame over a static background."""
    video = torch.zeros(batch, 3, frames, side, side)
    for f in range(frames):
        video[:, :, f, 2:6, 2 * f : 2 * f + 4] = 1.0
    return video


def test_the_selector_applies_the_motion_aware_mask_in_training_and_evaluation():
    masker = MotionAwareMasker(mask_ratio=0.5)
    model = _perturb(_classifier(selector=masker))
    x = _moving_square()
    grid = model.grid(x.shape)
    mask = masker(2, grid, generator=torch.Generator().manual_seed(0), video=x)
    model.eval()
    torch.testing.assert_close(model(x), model(x, mask), rtol=0, atol=0)  # evaluation: ties drawn from seed 0
    assert torch.equal(model.select(x)[0], mask) and model.select(x)[1] == 4
    model.train()  # no dropout or drop path here: only the selection differs between calls
    torch.manual_seed(5)
    first = model(x)
    torch.manual_seed(5)
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)  # training: ties from the global RNG


def test_evaluation_with_a_selector_is_deterministic_on_a_static_clip():
    """Every cube ties on a static clip: evaluation still gives the same logits on every call."""
    model = _perturb(_classifier(selector=MotionAwareMasker(mask_ratio=0.5))).eval()
    x = torch.zeros(2, 3, 4, 16, 16)
    x[:, 0] = _clip(4)[:, 0, :1]  # one frame repeated: no motion anywhere
    torch.manual_seed(0)
    first = model(x)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)


@settings(max_examples=15, deadline=None)
@given(ratio=st.floats(0.0, 0.95), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_the_encoder_sees_the_kept_count_for_any_drop_ratio(ratio: float, batch: int, seed: int):
    """For any drop ratio, the encoder's sequence holds `n - int(ratio * n)` tokens and the logits are finite."""
    model = _classifier(selector=MotionAwareMasker(mask_ratio=ratio)).eval()
    x = _clip(seed, (batch, 3, 4, 16, 16))
    mask, dropped = model.select(x)
    assert dropped == int(ratio * 8) and mask.sum(1).tolist() == [dropped] * batch
    assert model.forward_features(x, mask, num_masked=dropped).shape == (batch, 8 - dropped, 32)
    assert torch.isfinite(model(x)).all()


def test_a_bad_mask_names_what_is_wrong():
    model = _classifier().eval()
    x = _clip()
    with pytest.raises(ValueError, match="mask has 6 tokens per row"):
        model(x, torch.zeros(2, 6, dtype=torch.bool))
    uneven = torch.zeros(2, 8, dtype=torch.bool)
    uneven[0, 0] = True
    with pytest.raises(ValueError, match="same number of tokens in every row"):
        model(x, uneven)
