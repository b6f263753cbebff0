"""torch.compile of the pretraining model: no graph breaks in the block loops, and the same numbers as eager.

Runtime shape checks (jaxtyping + beartype) run Python `isinstance` hooks that Dynamo cannot trace, so the decoder is
compiled with them switched off (`jaxtyping_disable`); the encoder body has none. `MAEWrapper.forward` itself breaks
the graph where it reads the per-row masked count (`masked_count`, a data-dependent Python int), outside the loops.
"""

import pytest
import torch
import torch._dynamo

from tubemask.masking import TubeMasker
from tubemask.models import videomae_pretrain
from tubemask.shapes import shape_checks_disabled
from tubemask.tokens import split_ids


def _setup():
    torch.manual_seed(0)
    model = videomae_pretrain("tiny", patch_size=8).train()
    video = torch.randn(2, 3, 4, 32, 32)
    grid = model.grid(video.shape)
    mask = TubeMasker(mask_ratio=0.75)(2, grid, generator=torch.Generator().manual_seed(0))
    return model, video, grid, mask


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_encoder_compiles_as_one_graph():
    model, video, grid, mask = _setup()
    visible_ids, _ = split_ids(mask)
    tokens = model.tokenizer(video, visible_ids)
    explained = torch._dynamo.explain(model.encoder)(tokens)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    compiled = torch.compile(model.encoder, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(tokens), model.encoder(tokens), rtol=0, atol=0)


def test_decoder_compiles_as_one_graph_without_shape_checks():
    model, video, grid, mask = _setup()
    visible_ids, masked_ids = split_ids(mask)
    visible = torch.randn(2, visible_ids.shape[1], model.decoder.embed_dim)
    eager = model.decoder(visible, visible_ids, masked_ids, grid)  # also fills the position-table cache
    with shape_checks_disabled():
        explained = torch._dynamo.explain(model.decoder)(visible, visible_ids, masked_ids, grid)
        assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
        compiled = torch.compile(model.decoder, fullgraph=True, backend="eager")
        out = compiled(visible, visible_ids, masked_ids, grid)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)


def test_no_graph_break_inside_the_block_loops():
    model, video, grid, mask = _setup()
    with shape_checks_disabled():
        explained = torch._dynamo.explain(model)(video, mask)
    frames = [str(frame) for reason in explained.break_reasons for frame in reason.user_stack]
    assert not [f for f in frames if "tubemask/layers.py" in f], frames
    # the only breaks left are the data-dependent masked count of split_ids / selected_ids
    assert all(any("tubemask/tokens.py" in f for f in map(str, r.user_stack)) for r in explained.break_reasons), [
        (r.reason, [str(f) for f in r.user_stack]) for r in explained.break_reasons
    ]


@pytest.mark.slow
def test_inductor_matches_eager_forward_and_backward():
    model, video, grid, mask = _setup()
    eager = model(video, mask)
    eager.loss.backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    compiled_model = torch.compile(model)
    with shape_checks_disabled():
        out = compiled_model(video, mask)
        out.loss.backward()
    torch.testing.assert_close(out.loss, eager.loss, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.pred, eager.pred, rtol=1e-4, atol=1e-4)
    for name, grad in eager_grads.items():
        got = dict(model.named_parameters())[name].grad
        torch.testing.assert_close(got, grad, rtol=1e-3, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
