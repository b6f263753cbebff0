"""CUDA paths (skipped without a GPU): bf16/fp16 autocast steps with float32 targets, SDPA kernels, masks on device,
and the pieces of a training step that must not wait for the device (`torch.cuda.set_sync_debug_mode`).

Run on a GPU machine with `bash scripts/gpu_check.sh`.
"""

import contextlib
import traceback
import warnings
from pathlib import Path

import pytest
import torch

import tubemask
from tubemask.layers import Block
from tubemask.tokens import split_ids

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_step_keeps_float32_targets_and_matches_fp32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=8).cuda()
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
    model = tubemask.videomae_pretrain("tiny", patch_size=8).eval()
    video = torch.randn(2, 3, 8, 32, 32)
    mask = tubemask.RandomMasker(mask_ratio=0.9)(2, model.grid(video.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cpu = model(video, mask)
        gpu = model.cuda()(video.cuda(), mask.cuda())
    torch.testing.assert_close(gpu.pred.cpu(), cpu.pred, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.loss.cpu(), cpu.loss, atol=1e-5, rtol=1e-5)


def test_flash_attention_runs_in_bf16() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = Block(64, num_heads=2).cuda()
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
    from tubemask.data import PretrainPipeline, parse_randaugment
    from tubemask.data.model_input import stack_clips

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
    from tubemask.data.ava_dataset import AVABatch

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


@contextlib.contextmanager
def no_device_sync():
    """Inside, any CUDA call that makes the host wait for the device raises (`set_sync_debug_mode("error")`)."""
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def test_normalize_batch_on_the_gpu_does_not_sync() -> None:
    """The recipes' per-batch path: pinned uint8 batch, non-blocking copy, normalise on the device (its per-channel
    scale and shift are made once per device and input range, on the first call: a blocking copy, outside the check)."""
    from tubemask.data import normalize_batch

    batch = torch.randint(0, 256, (2, 3, 4, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pinned = batch.contiguous(memory_format=torch.channels_last_3d).pin_memory()
    normalize_batch(pinned.to("cuda"))  # first uint8 call on this device
    normalize_batch(pinned.to("cuda").float() / 255)  # first float call: its scale differs (made once per peak)
    with no_device_sync():
        out = normalize_batch(pinned.to("cuda", non_blocking=True))
        low = normalize_batch(out, dtype=torch.bfloat16)  # float input: taken as [0, 1]
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(out.cpu(), normalize_batch(batch))


def test_targets_and_loss_on_the_gpu_do_not_sync() -> None:
    from tubemask.losses import reconstruction_mse
    from tubemask.targets import reconstruction_targets

    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, 4, 16, 16, generator=g).cuda()
    ids = torch.tensor([[0, 3, 5], [1, 2, 7]], device="cuda")  # grid (2, 2, 2) of 2 x 8 x 8 cubes
    pred = torch.randn(2, 3, 2 * 8 * 8 * 3, generator=g).cuda().requires_grad_()
    kinds = ("norm_pix", "norm_pix_joint", "pixels")
    for kind in kinds:  # first calls: the per-channel tensors are made once per device
        reconstruction_targets(video, ids, tubelet_size=2, patch_size=8, kind=kind)
    with no_device_sync():
        for kind in kinds:
            target = reconstruction_targets(video, ids, tubelet_size=2, patch_size=8, kind=kind)
            reconstruction_mse(pred, target).backward()
    expected = reconstruction_targets(video.cpu(), ids.cpu(), tubelet_size=2, patch_size=8, kind="norm_pix")
    torch.testing.assert_close(
        reconstruction_targets(video, ids, tubelet_size=2, patch_size=8).cpu(), expected, atol=1e-5, rtol=1e-5
    )


def test_clipped_fused_adamw_step_does_not_sync() -> None:
    """The optimizer-step tail: gradient clipping (foreach; no non-finite check, which reads the norm back) and the
    fused AdamW of `build_adamw`. Its state is made on the first step, so the second one is checked."""
    from tubemask.train.optim import build_adamw

    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=8).cuda()
    opt = build_adamw(model, lr=1e-3, weight_decay=0.05)
    params = [p for p in model.parameters() if p.requires_grad]

    def clipped_step() -> torch.Tensor:
        for p in params:
            p.grad = torch.randn_like(p)
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True, error_if_nonfinite=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return norm

    first = clipped_step()  # makes the optimizer state
    with no_device_sync():
        second = clipped_step()
    assert torch.isfinite(first) and torch.isfinite(second)


def _sync_here() -> None:
    torch.zeros(1, device="cuda").item()  # a sync the detector below must see


def test_a_training_step_given_the_mask_count_does_not_sync() -> None:
    """One pretraining step (normalise, tube mask on the device, bf16 forward given the masker's count, backward,
    clipping, fused AdamW) never makes the host wait for the device. Every synchronising call is recorded with its
    Python stack (`set_sync_debug_mode("warn")`; warnings from the backward's threads are replayed on this one); a
    sync placed in this test checks that the recording sees them."""
    from tubemask.data import normalize_batch
    from tubemask.train.optim import build_adamw

    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=8).cuda().train()
    opt = build_adamw(model, lr=1e-3, weight_decay=0.05)
    batch = torch.randint(0, 256, (2, 3, 8, 32, 32), dtype=torch.uint8).pin_memory()
    masker = tubemask.TubeMasker(mask_ratio=0.75)
    generator = torch.Generator(device="cuda").manual_seed(0)

    def step() -> None:
        video = normalize_batch(batch.to("cuda", non_blocking=True))
        grid = model.grid(video.shape)
        mask = masker(2, grid, generator=generator, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(video, mask, num_masked=masker.num_masked(grid)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True, error_if_nonfinite=False)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # first step: optimizer state, cuBLAS handles, per-device constants
    stacks: list[traceback.StackSummary] = []

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" in str(message):
            stacks.append(traceback.extract_stack())

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
            _sync_here()
        finally:
            torch.cuda.set_sync_debug_mode(0)

    def where(stack: traceback.StackSummary) -> str:
        """The innermost frame of tubemask or of this test that led to the sync (not `record`, not `warnings`)."""
        frames = [f for f in stack[:-1] if Path(f.filename).name != "warnings.py"]
        ours = [f for f in frames if "tubemask" in Path(f.filename).parts or f.filename == __file__] or frames
        return f"{Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}: {ours[-1].line}"

    assert any(any(f.name == "_sync_here" for f in s) for s in stacks), "the sync recording saw nothing"
    unexpected = [where(s) for s in stacks if not any(f.name == "_sync_here" for f in s)]
    assert not unexpected, f"device syncs in a training step: {unexpected}"


def _fsdp2_worker(rank: int, port: int, out: str) -> None:
    """One process of a one-GPU NCCL group: the same three bf16 training steps of a tiny model, plain and sharded with
    FSDP2 (float32 gathers, then bf16 gathers), the optimizer built after wrapping as `prepare_model` does."""
    import os

    import torch.distributed as dist

    from tubemask.train.distributed import DistributedContext, wrap_fsdp2
    from tubemask.train.optim import build_adamw

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", device_id=device)  # as setup_distributed does under torchrun on GPUs
    try:
        ctx = DistributedContext(rank=0, local_rank=0, world_size=1, device=device)
        g = torch.Generator().manual_seed(0)
        video = torch.randn(2, 3, 8, 32, 32, generator=g).cuda()
        masker = tubemask.TubeMasker(mask_ratio=0.75)
        grid = (4, 4, 4)
        masks = [masker(2, grid, generator=torch.Generator().manual_seed(s)).cuda() for s in range(3)]

        def losses(param_dtype: torch.dtype | None, shard: bool) -> list[float]:
            torch.manual_seed(0)
            model = tubemask.videomae_pretrain("tiny", patch_size=8).to(device).train()
            if shard:
                wrap_fsdp2(model, ctx, param_dtype=param_dtype)
            opt = build_adamw(model, lr=1e-3, weight_decay=0.05)  # fused on CUDA, over DTensor shards when sharded
            seen = []
            for mask in masks:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(video, mask, num_masked=masker.num_masked(grid)).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                seen.append(loss.item())
            dtypes = {str(p.dtype) for p in model.parameters()}
            assert dtypes == {"torch.float32"}, dtypes  # the sharded parameters and the optimizer stay float32
            return seen

        results = {"plain": losses(None, False), "fsdp": losses(None, True), "fsdp_bf16": losses(torch.bfloat16, True)}
        torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_fsdp2_over_nccl_on_one_gpu_trains_like_the_plain_model(tmp_path) -> None:
    """FSDP2 on CUDA with an NCCL process group bound to its GPU (`device_id`), fused AdamW built after wrapping over
    the DTensor shards, and the bf16 gather policy the recipes pass: three steps give the plain model's losses (float32
    gathers: the same arithmetic; bf16 gathers: within bf16 rounding). One GPU, so one rank: what this checks is the
    CUDA/NCCL path of the pieces, not the sharding arithmetic across ranks (the gloo tests do that)."""
    import torch.multiprocessing as mp
    from recipe_helpers import free_port

    out = tmp_path / "losses.pt"
    mp.spawn(_fsdp2_worker, args=(free_port(), str(out)), nprocs=1, join=True)
    results = torch.load(out, weights_only=True)
    plain = torch.tensor(results["plain"])
    torch.testing.assert_close(torch.tensor(results["fsdp"]), plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.tensor(results["fsdp_bf16"]), plain, rtol=3e-2, atol=3e-2)


def test_post_videomae_maskers_on_a_cuda_clip_agree_with_the_cpu() -> None:
    """Motion-aware selection (both splits, pixel energy) and motion-guided masking (block matching, bilinear warps)
    of a CUDA clip: masks on the device, the fixed count per row, and the CPU's mask for the same draws (one CPU
    generator for both) but for float near-ties in the energies or warped maps."""
    from tubemask.motion_aware import MotionAwareMasker
    from tubemask.motion_guided import MotionGuidedMasker

    video = torch.randn(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    grid = (4, 4, 4)
    maskers = [
        MotionAwareMasker(0.9, query_ratio=0.3),
        MotionAwareMasker(0.9, query_ratio=0.2, visible="random"),
        MotionGuidedMasker(0.75),
    ]
    for masker in maskers:
        cpu = masker(4, grid, generator=torch.Generator().manual_seed(1), video=video)
        gpu = masker(4, grid, generator=torch.Generator().manual_seed(1), device="cuda", video=video.cuda())
        assert gpu.device.type == "cuda" and gpu.sum(dim=1).tolist() == [masker.num_masked(grid)] * 4, masker
        assert (gpu.cpu() == cpu).float().mean().item() >= 0.97, masker


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_motion_aware_pretraining_step_on_cuda_ranked_by_the_models_own_embedding(dtype: torch.dtype) -> None:
    """EVEREST's ranking by the model's own cube embedding (`embed=model.tokenizer`) on the device, then a dual-masked
    step under autocast: the decoder reconstructs the queried cubes only, float32 targets, finite gradients."""
    from tubemask.motion_aware import MotionAwareMasker

    torch.manual_seed(0)
    model = tubemask.videomae_pretrain("tiny", patch_size=8).cuda()
    video = torch.randn(2, 3, 8, 32, 32, device="cuda")
    grid = model.grid(video.shape)
    masker = MotionAwareMasker(0.9, query_ratio=0.3, embed=model.tokenizer)
    gen = torch.Generator(device="cuda").manual_seed(0)
    mask, decoder_mask = masker.decoder_mask(2, grid, generator=gen, device="cuda", video=video)
    assert (
        mask.is_cuda and decoder_mask.is_cuda and (~decoder_mask).sum(dim=1).tolist() == [masker.num_queried(grid)] * 2
    )
    with torch.autocast("cuda", dtype=dtype):
        out = model(video, mask, decoder_mask=decoder_mask, num_queried=masker.num_queried(grid))
    assert out.pred.shape[1] == masker.num_queried(grid) and out.target.dtype == torch.float32
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_hog_and_teacher_targets_on_cuda_match_the_cpu() -> None:
    """MaskFeat's HOG target (float32 on both) and MVD's teacher target (its last block before the final norm) on the
    device: the CPU's values; the teacher under bf16 autocast still returns float32, within bf16 rounding."""
    from tubemask.hog import HOGTarget
    from tubemask.teacher import TeacherTarget

    torch.manual_seed(0)
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[0, 5, 17, 40], [3, 8, 21, 63]])
    geometry = {"tubelet_size": 2, "patch_size": 8, "mean": None, "std": None}
    hog = HOGTarget()
    torch.testing.assert_close(hog(video.cuda(), ids.cuda(), **geometry).cpu(), hog(video, ids, **geometry))
    teacher = tubemask.videomae_pretrain("tiny", patch_size=8)
    cpu = TeacherTarget(teacher)(video, ids, **geometry)
    target = TeacherTarget(teacher.cuda())
    torch.testing.assert_close(target(video.cuda(), ids.cuda(), **geometry).cpu(), cpu, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = target(video.cuda(), ids.cuda(), **geometry)
    assert low.dtype == torch.float32
    assert ((low.cpu() - cpu).norm() / cpu.norm()).item() < 3e-2


def test_fine_tuning_over_the_most_moving_cubes_on_cuda_matches_the_cpu() -> None:
    """EVEREST's fine-tuning (`selector=MotionAwareMasker(0.4)`): each forward ranks a CUDA clip's cubes on the device
    and the classifier gives the CPU's logits."""
    from tubemask.motion_aware import MotionAwareMasker

    torch.manual_seed(0)
    model = tubemask.videomae_classifier(
        "tiny", num_classes=5, patch_size=8, drop_path_rate=0.0, head_dropout=0.0, selector=MotionAwareMasker(0.4)
    ).eval()
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(video)
        gpu = model.cuda()(video.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
