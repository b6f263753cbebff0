"""CUDA paths (skipped without a GPU): bf16/fp16 autocast steps with float32 targets, SDPA kernels, masks on device.

Run on a GPU machine with `bash scripts/gpu_check.sh`.
"""

import pytest
import torch

import tubemask
from tubemask.tokens import split_ids

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_step_keeps_float32_targets_and_matches_fp32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = tubemask.videomae_vit_tiny(patch_size=8).cuda()
    video = torch.randn(2, 3, 8, 32, 32, device="cuda")
    mask = tubemask.TubeMasker(mask_ratio=0.75)(2, model.grid(video.shape), device="cuda")
    with torch.no_grad():
        reference = model(video, mask)
    with torch.autocast("cuda", dtype=dtype):
        out = model(video, mask)
    assert out.target.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert out.pred.dtype == dtype
    torch.testing.assert_close(out.target, reference.target)
    assert abs(out.loss.item() - reference.loss.item()) < 2e-2
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_cuda_matches_cpu() -> None:
    torch.manual_seed(0)
    model = tubemask.videomae_vit_tiny(patch_size=8).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    mask = tubemask.RandomMasker(mask_ratio=0.9)(2, model.grid(video.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cpu = model(video, mask)
        gpu = model.cuda()(video.cuda(), mask.cuda())
    torch.testing.assert_close(gpu.pred.cpu(), cpu.pred, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.loss.cpu(), cpu.loss, atol=1e-5, rtol=1e-5)


def test_flash_attention_runs_in_bf16() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = tubemask.Block(64, num_heads=2).cuda()
    x = torch.randn(2, 40, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_masks_sampled_on_device_split_on_device() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    mask = tubemask.TubeMasker(mask_ratio=0.9)(64, (8, 14, 14), generator=g, device="cuda")
    visible, masked = split_ids(mask)
    assert visible.is_cuda and visible.shape == (64, 160) and masked.shape == (64, 1408)


@pytest.mark.parametrize("normalize", [False, True])
def test_repeated_sampling_on_gpu_frames_equals_stacked_calls(normalize: bool) -> None:
    """NVDEC hands frames over on the GPU: `PretrainPipeline.repeat` takes the copy path there (no CPU resize kernel)
    and must give the clips, random draws and layout of stacking separate calls. RandAugment's CPU shortcuts fall back
    to torchvision's ops on GPU tensors."""
    from tubemask.data import PretrainPipeline, parse_randaugment, stack_clips

    frames = torch.randint(0, 256, (4, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    frames = frames.cuda().contiguous(memory_format=torch.channels_last)
    pipe = PretrainPipeline(input_size=32, flip_p=0.5, normalize=normalize)
    g_ref, g_rep = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = stack_clips([pipe(frames, generator=g_ref) for _ in range(3)])
    batch = pipe.repeat(frames, 3, generator=g_rep)
    assert batch.device.type == "cuda" and torch.equal(batch, expected)
    ra = parse_randaugment("rand-m7-n4-mstd0.5-inc1")
    for seed in range(8):
        out = ra(frames, generator=torch.Generator().manual_seed(seed))
        assert out.device.type == "cuda" and out.dtype == torch.uint8 and out.shape == frames.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_detector_on_a_pinned_ava_batch_under_autocast_matches_fp32(dtype: torch.dtype) -> None:
    from tubemask.data import AVABatch

    torch.manual_seed(0)
    model = tubemask.videomae_action_detector("tiny", patch_size=8, drop_path_rate=0.0, head_dropout=0.0).cuda().eval()
    batch = AVABatch(
        clips=torch.randn(2, 3, 8, 32, 48),
        rois=torch.tensor([[0, 1.5, 2.0, 30.0, 31.0], [1, 10.0, 0.0, 47.0, 20.5], [1, 0.0, 0.0, 8.0, 8.0]]),
        labels=torch.zeros(3, 80),
        scores=torch.ones(3),
        norm_boxes=torch.rand(3, 4).sort(dim=1).values,
        keys=[("a", 902), ("b", 903)],
    ).pin_memory()  # what a DataLoader with pin_memory=True hands over
    assert batch.clips.is_pinned() and batch.rois.is_pinned()
    batch = batch.to("cuda", non_blocking=True)
    with torch.no_grad():
        reference = model(batch.clips, batch.rois)
        with torch.autocast("cuda", dtype=dtype):
            logits = model(batch.clips, batch.rois)
    assert logits.shape == (3, 80) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), reference, atol=5e-2, rtol=5e-2)
