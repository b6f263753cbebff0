"""MAEWrapper around three different encoders, dual masking, prediction order, and the size presets."""

import pytest
import torch
from torch import nn

from tubemask import (
    CubeEmbedding,
    MAEDecoder,
    MAEWrapper,
    RunningCellMasker,
    TubeMasker,
    ViTEncoder,
    videomae_pretrain,
)
from tubemask.models import SIZES
from tubemask.pos_embed import sinusoid_table
from tubemask.targets import reconstruction_targets
from tubemask.tokens import selected_ids

DIM, TS, PS = 32, 2, 8
K = TS * PS * PS * 3  # 384 values per cube
VIDEO_SHAPE = (2, 3, 8, 16, 16)  # grid (4, 2, 2): 16 tokens, t % 4 == 0 for the running-cell decoder mask


def vit_encoder() -> nn.Module:
    return ViTEncoder(DIM, depth=2, num_heads=2)


def timm_encoder() -> nn.Module:
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    vit = timm_vit.VisionTransformer(img_size=16, patch_size=8, embed_dim=DIM, depth=2, num_heads=2, num_classes=0)
    return nn.Sequential(*vit.blocks, vit.norm)


def torch_encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(DIM, nhead=2, dim_feedforward=2 * DIM, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


ENCODERS = {"vit": vit_encoder, "timm": timm_encoder, "torch": torch_encoder}


def wrap(encoder: nn.Module, **kwargs) -> MAEWrapper:
    return MAEWrapper(
        encoder,
        tokenizer=CubeEmbedding(DIM, tubelet_size=TS, patch_size=PS),
        decoder=MAEDecoder(16, depth=1, num_heads=2, out_dim=K),
        **kwargs,
    )


def clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(VIDEO_SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=list(ENCODERS))
def model(request) -> MAEWrapper:
    torch.manual_seed(0)
    return wrap(ENCODERS[request.param]())


def test_loss_grads_and_encoder_sees_visible_tokens_only(model):
    video = clip()
    grid = model.grid(video.shape)
    assert grid == (4, 2, 2)
    mask = TubeMasker(mask_ratio=0.75)(2, grid, generator=torch.Generator().manual_seed(1))
    seen = []
    handle = model.encoder.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape, out.shape)))
    out = model(video, mask)
    handle.remove()
    v = 16 - int(mask[0].sum())
    assert v == 4
    assert seen == [((2, v, DIM), (2, v, DIM))]
    assert torch.isfinite(out.loss) and out.loss.shape == ()
    assert out.pred.shape == out.target.shape == (2, 12, K)
    assert out.latent.shape == (2, v, DIM)
    assert not bool(mask.gather(1, out.visible_ids).any()) and bool(mask.gather(1, out.query_ids).all())
    out.loss.backward()
    for name, param in model.encoder.named_parameters():
        assert param.grad is not None, name
        assert bool(torch.isfinite(param.grad).all()), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.encoder.parameters())
    assert float(model.tokenizer.proj.weight.grad.abs().sum()) > 0
    assert float(model.decoder.mask_token.grad.abs().sum()) > 0


def test_dual_masking_reconstructs_masked_and_decoder_visible(model):
    video = clip(1)
    grid = model.grid(video.shape)
    mask = TubeMasker(mask_ratio=0.5)(2, grid, generator=torch.Generator().manual_seed(2))
    decoder_mask = RunningCellMasker(mask_ratio=0.5)(2, grid, generator=torch.Generator().manual_seed(3))
    out = model(video, mask, decoder_mask)
    wanted = mask & ~decoder_mask
    assert torch.equal(out.query_ids, selected_ids(wanted))
    # tube 0.5 hides 2 of 4 cells; the running cell keeps 2 of every 4 time slots of each cell for the decoder
    assert out.query_ids.shape == (2, 4) and out.pred.shape == (2, 4, K)
    for i in range(2):
        assert torch.equal(out.query_ids[i], torch.nonzero(wanted[i]).flatten())
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_pred_and_target_follow_ascending_ids(model):
    model.eval()
    video = clip(2)
    grid = model.grid(video.shape)
    mask = TubeMasker(mask_ratio=0.75)(2, grid, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(video, mask)
        assert bool((out.query_ids[:, 1:] > out.query_ids[:, :-1]).all()), "ascending raster order"
        assert bool((out.visible_ids[:, 1:] > out.visible_ids[:, :-1]).all())
        # target row j is the cube at ids[:, j]
        full = reconstruction_targets(video, torch.arange(16).expand(2, -1), tubelet_size=TS, patch_size=PS)
        torch.testing.assert_close(out.target, torch.stack([full[i, out.query_ids[i]] for i in range(2)]))
        # prediction row j is the decoder's answer for query ids[:, j]: asking in reverse order reverses the rows
        visible = model.encoder_to_decoder(out.latent)
        again = model.decoder(visible, out.visible_ids, out.query_ids, grid)
        torch.testing.assert_close(out.pred, again)
        flipped = model.decoder(visible, out.visible_ids, out.query_ids.flip(1), grid)
        torch.testing.assert_close(flipped, out.pred.flip(1), atol=1e-5, rtol=1e-5)


def test_forward_features(model):
    """Every cube encoded: equal to doing it by hand (each cube's pixels contracted with the tokenizer's Conv3d kernel,
    plus its bias, plus VideoMAE's sinusoid at the flat raster index, through the encoder) and to forward_encoder
    given every id."""
    model.eval()
    video = clip(3)
    with torch.no_grad():
        feats = model.forward_features(video)
        assert feats.shape == (2, 16, DIM)
        # the tokenizer by hand: cube (ti, hi, wi) is video[:, :, ti*TS:(ti+1)*TS, hi*PS:(hi+1)*PS, wi*PS:(wi+1)*PS]
        weight, bias = model.tokenizer.proj.weight, model.tokenizer.proj.bias  # [d c p0 p1 p2], [d]
        tokens = []
        for ti in range(4):
            for hi in range(2):
                for wi in range(2):
                    cube = video[:, :, ti * TS : (ti + 1) * TS, hi * PS : (hi + 1) * PS, wi * PS : (wi + 1) * PS]
                    tokens.append(torch.einsum("bcxyz,dcxyz->bd", cube, weight) + bias)
        by_hand = torch.stack(tokens, dim=1) + sinusoid_table(16, DIM)
        torch.testing.assert_close(feats, model.encoder(by_hand), atol=1e-5, rtol=1e-5)
        every = torch.arange(16).expand(2, -1)
        torch.testing.assert_close(feats, model.forward_encoder(video, every), atol=1e-5, rtol=1e-5)
        # not a constant: another clip gives other features
        assert not torch.allclose(model.forward_features(clip(4)), feats)


def test_wrapper_errors():
    with pytest.raises(ValueError, match="out_dim"):
        MAEWrapper(
            vit_encoder(),
            tokenizer=CubeEmbedding(DIM, tubelet_size=TS, patch_size=PS),
            decoder=MAEDecoder(16, depth=1, num_heads=2, out_dim=K + 1),
        )
    with pytest.raises((ValueError, TypeError), match="target"):  # TypeError under whole-package type checking
        wrap(vit_encoder(), target="edges")
    model = wrap(vit_encoder())
    with pytest.raises(ValueError, match="mask"):
        model(clip(), torch.zeros(2, 15, dtype=torch.bool))
    uneven = torch.zeros(2, 16, dtype=torch.bool)
    uneven[0, 0] = True
    with pytest.raises(ValueError, match="same number"):
        model(clip(), uneven)


def test_grad_checkpointing_of_encoder_and_decoder_keeps_the_gradients():
    torch.manual_seed(0)
    model = MAEWrapper(
        ViTEncoder(DIM, depth=2, num_heads=2, drop_path_rate=0.5),
        tokenizer=CubeEmbedding(DIM, tubelet_size=TS, patch_size=PS),
        decoder=MAEDecoder(16, depth=2, num_heads=2, out_dim=K, drop_path_rate=0.5),
    ).train()
    mask = TubeMasker(0.5)(2, model.grid(VIDEO_SHAPE), generator=torch.Generator().manual_seed(1))

    calls = {"encoder": 0, "decoder": 0}  # forward runs of each part's first block (hooks skip recomputations)
    for part in calls:
        block = getattr(model, part).blocks[0]

        def counted(x, *, forward=block.forward, part=part):
            calls[part] += 1
            return forward(x)

        block.forward = counted

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(3)  # the drop-path draws: replayed by the recomputation
        model(clip(), mask).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    assert calls == {"encoder": 1, "decoder": 1}
    model.set_grad_checkpointing()
    assert model.encoder.grad_checkpointing and model.decoder.grad_checkpointing
    checkpointed = grads()
    assert calls == {"encoder": 3, "decoder": 3}  # each block ran again in the backward: nothing was stored
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)
    model.set_grad_checkpointing(False, decoder=False)
    assert not model.encoder.grad_checkpointing and model.decoder.grad_checkpointing
    torch_encoder_model = wrap(torch_encoder())
    with pytest.raises(TypeError, match="TransformerEncoder has no set_grad_checkpointing method; pass encoder=False"):
        torch_encoder_model.set_grad_checkpointing()
    torch_encoder_model.set_grad_checkpointing(encoder=False)  # the decoder alone works with any encoder
    assert torch_encoder_model.decoder.grad_checkpointing


def test_no_position_table_in_state_dict():
    keys = set(wrap(vit_encoder()).state_dict())
    assert not any("pos_embed" in key for key in keys)
    assert {"tokenizer.proj.weight", "encoder_to_decoder.weight", "decoder.mask_token", "decoder.head.weight"} <= keys


def vit_params(dim: int, depth: int, mlp_ratio: float = 4.0) -> int:
    """Blocks of a VideoMAE ViT: qkv without bias + q_bias + v_bias, proj, two LayerNorms, MLP."""
    hidden = int(dim * mlp_ratio)
    attn = 3 * dim * dim + 2 * dim + dim * dim + dim
    mlp = dim * hidden + hidden + hidden * dim + dim
    return depth * (attn + mlp + 4 * dim)


def videomae_params(dim: int, depth: int, dec_dim: int, dec_depth: int, k: int = 1536) -> int:
    encoder = k * dim + dim + vit_params(dim, depth) + 2 * dim  # patch embed, blocks, final norm
    decoder = dec_dim + vit_params(dec_dim, dec_depth) + 2 * dec_dim + dec_dim * k + k  # mask token ... head
    return encoder + dim * dec_dim + decoder  # encoder_to_decoder has no bias


def test_vit_b_encoder_size_is_the_known_one():
    """86.2M encoder parameters: timm's ViT-B/16 block count less the key bias, with a 2x16x16 cube embedding; and
    the built ViT-B's tokenizer and encoder hold exactly that many."""
    assert vit_params(768, 12) + 1536 * 768 + 768 + 2 * 768 == 86_227_200
    with torch.device("meta"):  # shapes only
        model = videomae_pretrain("base")
    built = sum(p.numel() for part in (model.tokenizer, model.encoder) for p in part.parameters())
    assert built == 86_227_200
    assert sum(p.numel() for p in model.pos_embed.parameters()) == 0  # the fixed sinusoid is not a parameter


@pytest.mark.parametrize(
    ("size", "preset"),
    [
        ("tiny", (192, 4, 3, 96, 2, 3)),
        ("small", (384, 12, 6, 192, 4, 3)),
        ("base", (768, 12, 12, 384, 4, 6)),
        ("large", (1024, 24, 16, 512, 4, 8)),
        ("huge", (1280, 32, 16, 640, 4, 8)),
    ],
)
def test_presets(size, preset):
    dim, depth, heads, dec_dim, dec_depth, dec_heads = preset
    s = SIZES[size]
    assert (s.embed_dim, s.depth, s.num_heads, s.decoder_dim, s.decoder_depth, s.decoder_heads) == preset
    with torch.device("meta"):  # shapes only: no memory, no forward
        model = videomae_pretrain(size)
    assert model.tokenizer.embed_dim == dim and model.tokenizer.proj.kernel_size == (2, 16, 16)
    assert len(model.encoder.blocks) == depth and model.encoder.blocks[0].attn.num_heads == heads
    assert model.encoder.norm.eps == 1e-6
    assert model.decoder.embed_dim == dec_dim and len(model.decoder.blocks) == dec_depth
    assert model.decoder.blocks[0].attn.num_heads == dec_heads
    assert model.decoder.head.out_features == 1536
    assert sum(p.numel() for p in model.parameters()) == videomae_params(dim, depth, dec_dim, dec_depth)


def test_preset_decoder_depth_override():
    with torch.device("meta"):
        model = videomae_pretrain("large", decoder_depth=12)
    assert len(model.decoder.blocks) == 12


def test_tiny_preset_runs():
    torch.manual_seed(0)
    model = videomae_pretrain("tiny")
    video = torch.randn(1, 3, 4, 32, 32)
    grid = model.grid(video.shape)
    out = model(video, TubeMasker(mask_ratio=0.75)(1, grid, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(out.loss) and out.pred.shape == (1, 6, 1536)


@pytest.mark.parametrize("dual", [False, True])
def test_a_forward_given_the_counts_reads_nothing_back_from_the_device(monkeypatch, dual) -> None:
    """With the masker's counts passed, the training forward (and its backward) makes no device-to-host read: every
    Tensor method that would wait for a CUDA device raises here, on the CPU. Without them, the counts are read."""
    torch.manual_seed(0)
    model = videomae_pretrain("tiny", patch_size=8)
    video = torch.randn(2, 3, 8, 32, 32)
    grid = model.grid(video.shape)
    g = torch.Generator().manual_seed(0)
    masker = TubeMasker(mask_ratio=0.75)
    mask = masker(2, grid, generator=g)
    dmask = RunningCellMasker(mask_ratio=0.5)(2, grid, generator=g) if dual else None
    counts = dict(num_masked=masker.num_masked(grid))
    if dual:
        counts["num_queried"] = int((mask[0] & ~dmask[0]).sum())  # on the host, before the masks reach a device
    reads = []

    def refuse(name):
        def read(self, *args, **kwargs):
            reads.append(name)
            raise AssertionError(f"Tensor.{name} read a value back from the device")

        return read

    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse(name))
    out = model(video, mask, dmask, **counts)
    out.loss.backward()
    assert not reads
    with pytest.raises(AssertionError, match="read a value back"):
        model(video, mask, dmask)  # counted from the mask: the reads the counts avoid


def test_intermediates_are_the_blocks_before_the_final_norm():
    """`forward_intermediates`: each encoder block's output over every cube; the final norm of the last one is
    `forward_features`. A foreign encoder without the method is named in the error."""
    torch.manual_seed(0)
    model = wrap(vit_encoder())
    video = clip()
    outs = model.forward_intermediates(video)
    assert len(outs) == len(model.encoder.blocks) and outs[-1].shape == model.forward_features(video).shape
    torch.testing.assert_close(model.encoder.norm(outs[-1]), model.forward_features(video))
    with pytest.raises(TypeError, match="MAEWrapper: the encoder TransformerEncoder has no forward_intermediates"):
        wrap(torch_encoder()).forward_intermediates(video)
    (last,) = model.forward_intermediates(video, indices=1)  # passed on to the encoder
    torch.testing.assert_close(last, outs[-1], rtol=0, atol=0)
