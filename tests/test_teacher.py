"""tubemask.teacher: a frozen teacher's features as targets (MVD), from a tubemask model and from an HF checkpoint."""

import pytest
import torch
import torch.nn.functional as F

import tubemask
from tubemask.teacher import TeacherTarget


def clip(seed=0, b=2):
    return torch.randn(b, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_targets_are_the_teachers_last_block_before_its_final_norm_by_default():
    """MVD's official target: the video teacher's blocks without the final norm, not normalised again."""
    torch.manual_seed(0)
    teacher = tubemask.videomae_pretrain("tiny", patch_size=8)
    video = clip()
    ids = torch.tensor([[0, 3, 7], [1, 2, 5]])
    got = TeacherTarget(teacher)(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    blocks = teacher.encoder.forward_blocks(teacher.embed(video))  # the last block's output, by hand
    torch.testing.assert_close(got, torch.gather(blocks, 1, ids[..., None].expand(-1, -1, 192)))
    assert not torch.allclose(got, torch.gather(teacher.forward_features(video), 1, ids[..., None].expand(-1, -1, 192)))
    torch.testing.assert_close(teacher.encoder.norm(blocks), teacher.forward_features(video))
    normed = TeacherTarget(teacher, normalize=True)(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    torch.testing.assert_close(normed, F.layer_norm(got, (192,)))


def test_targets_are_the_teachers_normalised_features_at_the_queried_tokens():
    torch.manual_seed(0)
    teacher = tubemask.videomae_pretrain("tiny", patch_size=8)
    target = TeacherTarget(teacher, pre_norm=False, normalize=True)
    video = clip()
    ids = torch.tensor([[0, 3, 7], [1, 2, 5]])
    got = target(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    features = F.layer_norm(teacher.forward_features(video), (192,))
    torch.testing.assert_close(got, torch.gather(features, 1, ids[..., None].expand(-1, -1, 192)))
    raw = TeacherTarget(teacher, pre_norm=False)(video, ids, tubelet_size=2, patch_size=8, mean=None, std=None)
    torch.testing.assert_close(
        raw, torch.gather(teacher.forward_features(video), 1, ids[..., None].expand(-1, -1, 192))
    )


def test_the_student_trains_and_the_teacher_stays_out_of_it():
    torch.manual_seed(0)
    teacher = tubemask.videomae_pretrain("tiny", patch_size=8)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tubemask.videomae_pretrain("tiny", patch_size=8, target=TeacherTarget(teacher))
    assert student.decoder.out_dim == 192
    assert not any(k.startswith("teacher") or "_target" in k for k in student.state_dict())
    teacher_params = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_params for p in student.parameters())  # nothing of the teacher is trained
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    video = clip(1)
    masker = tubemask.TubeMasker(0.5)
    mask = masker(2, student.grid(video.shape), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(5):
        out = student(video, mask)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_an_hf_checkpoint_as_teacher():
    transformers = pytest.importorskip("transformers")
    from tubemask.interop import from_hf
    from tubemask.interop.hf_keys import hf_qv_bias_field

    config = transformers.VideoMAEConfig(
        image_size=16,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=1,
        decoder_intermediate_size=32,
        **{hf_qv_bias_field(transformers.VideoMAEConfig): True},
    )
    torch.manual_seed(0)
    teacher = from_hf(transformers.VideoMAEForPreTraining(config))
    target = TeacherTarget(teacher)
    assert target.width(tubelet_size=2, patch_size=8, channels=3) == 32
    out = target(clip(), torch.tensor([[0, 1], [2, 3]]), tubelet_size=2, patch_size=8, mean=None, std=None)
    assert out.shape == (2, 2, 32) and torch.isfinite(out).all()


def test_a_teacher_on_another_grid_is_refused():
    teacher = tubemask.videomae_pretrain("tiny", patch_size=4)
    with pytest.raises(ValueError, match="same frames, tubelet and patch size"):
        TeacherTarget(teacher)(clip(), torch.tensor([[0], [1]]), tubelet_size=2, patch_size=8, mean=None, std=None)
    with pytest.raises(ValueError, match="forward_features"):
        TeacherTarget(torch.nn.Linear(2, 2), pre_norm=False)
    with pytest.raises(ValueError, match=r"needs forward_intermediates\(video\); or pass pre_norm=False"):
        TeacherTarget(torch.nn.Linear(2, 2))


def test_mvds_smooth_l1_loss_trains_the_student():
    """`videomae_pretrain(..., loss=reconstruction_smooth_l1)`: the model's loss is smooth L1 of its predictions."""
    from tubemask.losses import reconstruction_smooth_l1

    torch.manual_seed(0)
    teacher = tubemask.videomae_pretrain("tiny", patch_size=8)
    student = tubemask.videomae_pretrain(
        "tiny", patch_size=8, target=TeacherTarget(teacher), loss=reconstruction_smooth_l1
    )
    video = clip(2)
    mask = tubemask.TubeMasker(0.5)(2, student.grid(video.shape), generator=torch.Generator().manual_seed(0))
    out = student(video, mask)
    torch.testing.assert_close(out.loss, F.smooth_l1_loss(out.pred, out.target))
    out.loss.backward()
