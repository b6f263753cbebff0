"""Attention against a hand-written softmax attention with VideoMAE's biases; drop path; the pre-norm block."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tubemask.layers import _BF16_AS_FP32_MAX_TOKENS, Attention, Block, DropPath, Mlp, drop_path, qkv_attention


def manual_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(dh)) V per head, with the fused (q_bias, 0, v_bias) bias, then the output projection."""
    b, n, d = x.shape
    heads, dh = attn.num_heads, d // attn.num_heads
    w = attn.qkv.weight
    q = x @ w[:d].T + attn.q_bias
    k = x @ w[d : 2 * d].T  # no key bias
    v = x @ w[2 * d :].T + attn.v_bias

    def split(z):
        return z.view(b, n, heads, dh).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize(("dim", "heads", "n"), [(8, 1, 1), (12, 3, 5), (16, 4, 7)])
def test_attention_matches_manual(dim, heads, n):
    torch.manual_seed(0)
    attn = Attention(dim, num_heads=heads).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, n, dim)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), manual_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_attention_bias_layout():
    attn = Attention(8, num_heads=2)
    assert attn.qkv.bias is None
    with torch.no_grad():
        attn.q_bias.fill_(1.0)
        attn.v_bias.fill_(2.0)
    bias = attn.qkv_bias()
    assert bias.tolist() == [1.0] * 8 + [0.0] * 8 + [2.0] * 8
    names = {name for name, _ in attn.named_parameters()}
    assert names == {"qkv.weight", "q_bias", "v_bias", "proj.weight", "proj.bias"}
    plain = Attention(8, num_heads=2, qkv_bias=False)
    assert plain.qkv_bias() is None and plain.q_bias is None
    with pytest.raises(ValueError, match="num_heads"):
        Attention(10, num_heads=3)


def test_attention_is_permutation_equivariant():
    torch.manual_seed(1)
    attn = Attention(8, num_heads=2).eval()
    x = torch.randn(1, 6, 8)
    perm = torch.randperm(6)
    with torch.no_grad():
        torch.testing.assert_close(attn(x[:, perm]), attn(x)[:, perm], atol=1e-6, rtol=1e-5)


def test_drop_path_eval_is_identity():
    x = torch.randn(4, 3, 5)
    module = DropPath(0.7).eval()
    assert torch.equal(module(x), x)
    assert torch.equal(drop_path(x, 0.7, training=False), x)
    assert torch.equal(drop_path(x, 0.0, training=True), x)


def test_drop_path_train_drops_whole_samples():
    x = torch.randn(64, 3, 5)
    out = drop_path(x, 0.5, training=True, generator=torch.Generator().manual_seed(0))
    kept = out.flatten(1).ne(0).all(dim=1)
    dropped = out.flatten(1).eq(0).all(dim=1)
    assert bool((kept | dropped).all()), "each sample is kept or dropped whole"
    assert 0 < int(kept.sum()) < 64
    torch.testing.assert_close(out[kept], x[kept] / 0.5)
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)


def test_block_residual_structure():
    torch.manual_seed(2)
    block = Block(12, num_heads=3, mlp_ratio=2.0).eval()
    for norm in (block.norm1, block.norm2):
        assert norm.eps == 1e-6
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        h = x + block.attn(block.norm1(x))
        expected = h + block.mlp(block.norm2(h))
        torch.testing.assert_close(block(x), expected)
        # zero both branch outputs: the block is the identity
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
        assert torch.equal(block(x), x)


def test_block_shapes_and_names():
    block = Block(16, num_heads=4, mlp_ratio=4.0, drop_path=0.1)
    assert isinstance(block.mlp, Mlp) and block.mlp.fc1.out_features == 64
    assert isinstance(block.drop_path, DropPath)
    assert isinstance(Block(16, num_heads=4).drop_path, nn.Identity)
    names = set(block.state_dict())
    assert {"norm1.weight", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "mlp.fc1.weight", "mlp.fc2.bias"} <= names


@pytest.mark.parametrize(("b", "n", "dim", "heads"), [(2, 7, 8, 2), (1, 33, 24, 3), (3, 160, 64, 4)])
def test_qkv_attention_cpu_path_is_bit_identical_to_sdpa(b, n, dim, heads):
    """The CPU flash path with the stacked backward gives SDPA's output and qkv gradient exactly."""
    torch.manual_seed(0)
    qkv = torch.randn(b, n, 3 * dim, requires_grad=True)
    grad = torch.randn(b, n, dim)
    out = qkv_attention(qkv, heads)
    (g,) = torch.autograd.grad(out, qkv, grad)
    q, k, v = qkv.view(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, dim)
    (g_ref,) = torch.autograd.grad(ref, qkv, grad)
    assert torch.equal(out, ref) and torch.equal(g, g_ref)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):  # the backend switch is honoured
        math_out = qkv_attention(qkv, heads)
    assert math_out.grad_fn is not None and "CPUFlashAttention" not in type(math_out.grad_fn).__name__
    torch.testing.assert_close(math_out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [7, _BF16_AS_FP32_MAX_TOKENS, _BF16_AS_FP32_MAX_TOKENS + 1])
def test_qkv_attention_cpu_bf16_short_sequences_run_the_float32_kernel(n):
    """bf16 up to the threshold with a gradient to come: SDPA in float32 rounded to bf16, exactly; longer, or without
    a gradient: SDPA's bf16 kernel, exactly."""
    b, dim, heads = 2, 32, 2
    torch.manual_seed(0)
    qkv = torch.randn(b, n, 3 * dim).bfloat16().requires_grad_()
    grad = torch.randn(b, n, dim).bfloat16()
    out = qkv_attention(qkv, heads)
    (g,) = torch.autograd.grad(out, qkv, grad)
    assert out.dtype == g.dtype == torch.bfloat16
    short = n <= _BF16_AS_FP32_MAX_TOKENS
    ref_in = qkv.detach().float().requires_grad_() if short else qkv
    q, k, v = ref_in.view(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, dim)
    (g_ref,) = torch.autograd.grad(ref, ref_in, grad.to(ref.dtype))
    assert torch.equal(out, ref.bfloat16()) and torch.equal(g, g_ref.bfloat16())
    q, k, v = qkv.detach().view(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4).unbind(0)
    ref_bf16 = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, dim)
    with torch.no_grad():  # no backward to speed up: the bf16 kernel, whose forward is the faster one
        assert torch.equal(qkv_attention(qkv, heads), ref_bf16)
    assert torch.equal(qkv_attention(qkv.detach(), heads), ref_bf16)
