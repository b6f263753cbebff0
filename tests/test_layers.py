"""Attention against a hand-written softmax attention with VideoMAE's biases; drop path; the pre-norm block."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tubemask.layers import Attention, Block, DropPath, Mlp, drop_path, qkv_attention


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


def split_qkv(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v `[b heads n hd]` of a fused `[b n 3d]` projection, written independently of tubemask.layers."""
    b, n, three_d = qkv.shape
    d = three_d // 3
    return tuple(z.reshape(b, n, heads, d // heads).transpose(1, 2) for z in qkv.split(d, dim=-1))


def softmax_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(Q K^T / sqrt(dh)) V per head, heads merged back to `[b n d]`."""
    q, k, v = split_qkv(qkv, heads)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v
    return out.transpose(1, 2).reshape(qkv.shape[0], qkv.shape[1], -1)


# (b, n, dim, heads): a single token, odd lengths, the ViT-S encoder's 160 visible tokens, past 256 (where the
# removed CPU fast path switched its bf16 rule)
ATTENTION_SHAPES = [(2, 1, 8, 2), (2, 7, 8, 2), (1, 33, 24, 3), (2, 160, 64, 4), (1, 300, 32, 2)]


@pytest.mark.parametrize(("b", "n", "dim", "heads"), ATTENTION_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qkv_attention_matches_softmax_attention(b, n, dim, heads, dtype):
    """Output and `qkv` gradient against softmax attention computed in float64, at each dtype's tolerance, and
    exactly SDPA called on separately made q, k, v."""
    torch.manual_seed(0)
    qkv = torch.randn(b, n, 3 * dim).to(dtype).requires_grad_()
    grad = torch.randn(b, n, dim).to(dtype)
    out = qkv_attention(qkv, heads)
    (g,) = torch.autograd.grad(out, qkv, grad)
    assert out.dtype == g.dtype == dtype and out.shape == (b, n, dim)
    exact_in = qkv.detach().double().requires_grad_()
    exact = softmax_attention(exact_in, heads)
    (g_exact,) = torch.autograd.grad(exact, exact_in, grad.double())
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(out.double(), exact, **tol)
    torch.testing.assert_close(g.double(), g_exact, **tol)
    sdpa_in = qkv.detach().clone().requires_grad_()
    q, k, v = split_qkv(sdpa_in, heads)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, dim)
    (g_ref,) = torch.autograd.grad(ref, sdpa_in, grad)
    assert torch.equal(out, ref) and torch.equal(g, g_ref)


@pytest.mark.parametrize(("b", "n", "dim", "heads"), ATTENTION_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qkv_attention_numbers_do_not_depend_on_grad_mode(b, n, dim, heads, dtype):
    """The same output with and without grad, for an input that needs a gradient or not (an evaluation forward
    computes the training forward's numbers)."""
    torch.manual_seed(1)
    qkv = torch.randn(b, n, 3 * dim).to(dtype)
    with_grad = qkv_attention(qkv.clone().requires_grad_(), heads)
    assert with_grad.grad_fn is not None
    with torch.no_grad():
        no_grad = qkv_attention(qkv.clone().requires_grad_(), heads)
    assert torch.equal(with_grad.detach(), no_grad)
    assert torch.equal(qkv_attention(qkv, heads), no_grad)
    with torch.inference_mode():
        assert torch.equal(qkv_attention(qkv, heads), no_grad)


def test_attention_under_cpu_bf16_autocast_does_not_depend_on_grad_mode():
    """A block's attention under CPU bf16 autocast (the recipes' `--precision bf16`): training and evaluation forwards
    give the same numbers."""
    torch.manual_seed(2)
    attn = Attention(64, num_heads=4).eval()
    x = torch.randn(2, 160, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_out = attn(x)
        with torch.no_grad():
            eval_out = attn(x)
    assert train_out.dtype == torch.bfloat16 and train_out.requires_grad
    assert torch.equal(train_out.detach(), eval_out)


def test_qkv_attention_honours_the_sdpa_backend_switch():
    """`sdpa_kernel` picks the kernel (here the math one), and the values stay those of softmax attention."""
    torch.manual_seed(3)
    qkv = torch.randn(2, 9, 48)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        out = qkv_attention(qkv, 2)
    torch.testing.assert_close(out, softmax_attention(qkv, 2), rtol=1e-5, atol=1e-6)
