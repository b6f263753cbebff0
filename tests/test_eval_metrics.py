"""Evaluation metrics (top-k, multi-view protocol, confusion matrix, accumulator across batches and ranks) and the
representation diagnostics (token statistics, participation ratio, linear probe)."""

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from recipe_helpers import exit_worker

from tubemask.eval import (
    MultiViewAccumulator,
    confusion_matrix,
    linear_probe_accuracy,
    multiview_predictions,
    participation_ratio,
    per_class_accuracy,
    save_confusion_matrix_png,
    token_diagnostics,
    topk_accuracy,
)


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    labels = torch.tensor([1, 2, 1, 0])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(1 / 4)  # only row 0
    assert acc[2] == pytest.approx(3 / 4)  # rows 0, 2 and 3 (0.3 ties, topk keeps index 0 first)
    assert acc[5] == 1.0  # k beyond the class count
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        topk_accuracy(logits, torch.tensor([0, 1, 2, 3]))
    assert math.isnan(topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))[1])


def test_multiview_is_softmax_then_mean():
    logits = torch.tensor([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])  # one video, three views
    probs = multiview_predictions(logits)
    expected = torch.stack([torch.tensor([10.0, 0.0]).softmax(0), torch.tensor([0.0, 3.0]).softmax(0)]).T
    expected = (expected[:, 0] + 2 * expected[:, 1]) / 3
    torch.testing.assert_close(probs[0], expected)
    assert probs.argmax().item() == 1  # averaging logits instead would pick class 0
    assert logits.mean(1).argmax().item() == 0
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))


def test_confusion_and_per_class_by_hand():
    preds = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 1, 2, 2, 1])
    matrix = confusion_matrix(preds, labels, 4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(labels.tolist(), preds.tolist(), strict=True):
        expected[t, p] += 1
    torch.testing.assert_close(matrix, expected)
    per_class = per_class_accuracy(preds, labels, 4)
    torch.testing.assert_close(per_class[:3], torch.tensor([1.0, 0.5, 0.5]))
    assert math.isnan(per_class[3].item())
    with pytest.raises(ValueError, match="preds must lie"):
        confusion_matrix(torch.tensor([4]), torch.tensor([0]), 4)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40))
def test_confusion_matrix_properties(c, pairs):
    preds = torch.tensor([p % c for p, _ in pairs])
    labels = torch.tensor([t % c for _, t in pairs])
    matrix = confusion_matrix(preds, labels, c)
    assert int(matrix.sum()) == len(pairs)
    torch.testing.assert_close(matrix.sum(1), torch.bincount(labels, minlength=c))
    accuracy = float(matrix.diagonal().sum()) / len(pairs)
    assert accuracy == pytest.approx(float((preds == labels).float().mean()))
    per_class = per_class_accuracy(preds, labels, c)
    assert bool(((per_class >= 0) & (per_class <= 1) | per_class.isnan()).all())


def test_save_confusion_matrix_png(tmp_path):
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    out = save_confusion_matrix_png(matrix, tmp_path / "sub" / "cm.png", class_names=["a", "b", "c"], title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2 class names for a 3-class matrix"):
        save_confusion_matrix_png(matrix, tmp_path / "x.png", class_names=["a", "b"])


def _views(num_videos=6, num_views=3, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_videos, num_views, num_classes, generator=g) * 3
    labels = torch.randint(0, num_classes, (num_videos,), generator=g)
    return logits, labels


def test_accumulator_matches_direct_protocol_in_any_batch_order():
    logits, labels = _views()
    v, w, c = logits.shape
    acc = MultiViewAccumulator(v, w, c)
    order = torch.randperm(v * w, generator=torch.Generator().manual_seed(1))
    for chunk in order.split(4):
        vi, wi = chunk // w, chunk % w
        acc.update(logits[vi, wi], labels[vi], vi, wi)
    result = acc.compute()
    probs = multiview_predictions(logits)
    torch.testing.assert_close(result.probs, probs)
    direct = topk_accuracy(probs, labels)
    assert result.top1 == direct[1] and result.top5 == direct[5]
    torch.testing.assert_close(result.per_class, per_class_accuracy(probs.argmax(1), labels, c), equal_nan=True)
    assert result.num_videos == v and result.missing_views == 0


def test_accumulator_missing_views_duplicates_and_clashes():
    logits, labels = _views()
    acc = MultiViewAccumulator(6, 3, 5)
    vi, wi = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2])
    acc.update(torch.zeros(3, 5), labels[vi], vi, wi)  # overwritten below
    acc.update(logits[vi, wi], labels[vi], vi, wi)
    result = acc.compute()
    assert result.num_videos == 2 and result.missing_views == 6 * 3 - 3
    torch.testing.assert_close(result.probs[0], multiview_predictions(logits[:1, :2])[0])
    torch.testing.assert_close(result.probs[1], logits[1, 2].softmax(0))
    with pytest.raises(ValueError, match="video 0 seen with label"):
        acc.update(logits[0, :1], (labels[:1] + 1) % 5, torch.tensor([0]), torch.tensor([2]))
    with pytest.raises(ValueError, match="view_index must lie"):
        acc.update(logits[0, :1], labels[:1], torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="no logits"):
        MultiViewAccumulator(2, 2, 5).compute()


def _rank_main(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, labels = _views()
        v, w, c = logits.shape
        acc = MultiViewAccumulator(v, w, c)
        places = torch.arange(v * w)
        mine = places[rank::world]
        mine = torch.cat([mine, places[:1]])  # DistributedSampler-style padding: place 0 twice
        vi, wi = mine // w, mine % w
        acc.update(logits[vi, wi], labels[vi], vi, wi)
        result = acc.compute()
        if rank == 0:
            torch.save({"probs": result.probs, "top1": result.top1, "missing": result.missing_views}, out_file)
    finally:
        dist.destroy_process_group()
    exit_worker()


@pytest.mark.slow
def test_accumulator_across_two_ranks(tmp_path):
    init_file = os.path.join(tempfile.mkdtemp(dir=tmp_path), "init")
    out_file = str(tmp_path / "out.pt")
    mp.spawn(_rank_main, args=(2, init_file, out_file), nprocs=2, join=True)
    out = torch.load(out_file, weights_only=True)
    logits, labels = _views()
    probs = multiview_predictions(logits)
    torch.testing.assert_close(out["probs"], probs)
    assert out["top1"] == topk_accuracy(probs, labels)[1] and out["missing"] == 0


# ---------------------------------------------------------------- diagnostics


def test_participation_ratio_matches_eigenvalues():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g) * torch.tensor([3.0, 2.0, 1.0, 1.0, 0.5, 0.1])
    eig = torch.linalg.eigvalsh(torch.cov(x.double().T))
    assert participation_ratio(x) == pytest.approx(float(eig.sum() ** 2 / (eig**2).sum()), rel=1e-9)
    rank_one = torch.randn(50, 1, generator=g) * torch.randn(1, 8, generator=g)
    assert participation_ratio(rank_one) == pytest.approx(1.0, rel=1e-6)
    assert 7.0 < participation_ratio(torch.randn(4000, 8, generator=g)) <= 8.0
    assert math.isnan(participation_ratio(torch.ones(5, 3)))


def test_token_diagnostics():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(4, 10, 16, generator=g)
    out = token_diagnostics(tokens)
    assert out["mean_norm"] == pytest.approx(float(tokens.norm(dim=-1).mean()), rel=1e-6)
    assert out["participation_ratio"] == pytest.approx(participation_ratio(tokens.reshape(40, 16)))
    # tokens that only encode their position: the per-position mean explains all the variance
    positional = torch.randn(1, 10, 16, generator=g).expand(4, -1, -1)
    assert token_diagnostics(positional)["position_variance_fraction"] == pytest.approx(1.0)
    # tokens that ignore position: position explains about (n - 1) / (b n - 1) by chance, far from 1
    assert token_diagnostics(torch.randn(64, 10, 16, generator=g))["position_variance_fraction"] < 0.05


def test_linear_probe_separates_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 16, generator=g) * 2

    def data(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return means[y] + torch.randn(n, 16, generator=g), y

    (xtr, ytr), (xte, yte) = data(120), data(200)
    acc = linear_probe_accuracy(xtr, ytr, xte, yte, epochs=50)
    assert acc > 0.9
    assert linear_probe_accuracy(xtr, ytr, xte, yte, epochs=50) == acc
    shuffled = linear_probe_accuracy(torch.randn(120, 16, generator=g), ytr, torch.randn(200, 16, generator=g), yte)
    assert shuffled < 0.45  # chance 0.25
    with pytest.raises(Exception, match="test_feats"):  # the shape checker names the argument
        linear_probe_accuracy(xtr, ytr, xte[:, :8], yte)


def test_pooled_features_views():
    from tubemask.eval.diagnostics import pooled_features

    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)  # 2 time slots x 3 cells
    mean, per_time = pooled_features(tokens, 2)
    torch.testing.assert_close(mean, tokens.mean(dim=1))
    torch.testing.assert_close(per_time[:, :3], tokens[:, :3].mean(dim=1))
    torch.testing.assert_close(per_time[:, 3:], tokens[:, 3:].mean(dim=1))
    with pytest.raises(ValueError, match="time_slots=4"):
        pooled_features(tokens, 4)


def test_probe_encoder_tells_time_order_the_mean_cannot():
    """Two classes whose tokens hold the same values in opposite time order: the mean pool cannot separate them,
    the per-time view can."""
    from tubemask.eval.diagnostics import ProbeSet, probe_encoder

    gen = torch.Generator().manual_seed(0)

    def clips(n):
        labels = torch.arange(n) % 2
        a, b = torch.randn(n, 1, 4, generator=gen), torch.randn(n, 1, 4, generator=gen)
        first = torch.where(labels.view(-1, 1, 1) == 0, a + 3, a - 3)
        second = torch.where(labels.view(-1, 1, 1) == 0, b - 3, b + 3)
        return torch.cat([first.expand(n, 2, 4), second.expand(n, 2, 4)], dim=1), labels  # [n 4 4]: t=2, cells=2

    (xtr, ytr), (xte, yte) = clips(40), clips(40)
    result = probe_encoder(lambda x: x, ProbeSet(xtr, ytr, xte, yte), time_slots=2, batch_size=16)
    assert result["probe_per_time"] == 1.0
    assert result["probe_mean_pool"] < 0.8
    assert result["participation_ratio"] >= 1.0 and result["token_norm"] > 0


def test_probe_set_checks_sizes():
    from tubemask.eval.diagnostics import ProbeSet

    with pytest.raises(ValueError, match="train has 3 clips and 2 labels"):
        ProbeSet(torch.zeros(3, 2), torch.zeros(2), torch.zeros(1, 2), torch.zeros(1))


def test_plot_diagnostics_writes_png(tmp_path):
    from tubemask.eval.diagnostics import plot_diagnostics

    rows = [
        {"step": 0, "probe_mean_pool": 0.5, "probe_per_time": 0.6, "participation_ratio": 12.0, "token_norm": 11.0},
        {"step": 100, "loss": 0.5, "zero_floor": 0.6, "probe_mean_pool": 0.7, "participation_ratio": float("nan")},
    ]
    path = plot_diagnostics(rows, tmp_path / "sub" / "d.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no row"):
        plot_diagnostics([{"epoch": 1}], tmp_path / "e.png")
