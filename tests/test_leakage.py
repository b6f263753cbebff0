"""tubemask.eval.leakage: the copy-along-the-motion baseline leaks through tube masks of moving content and not
through motion-guided masks (MGMAE's premise), and copies exactly when it can."""

import torch
from test_masking import gen
from test_motion_guided import translating_clip

from tubemask.eval.leakage import copy_along_motion
from tubemask.masking import TubeMasker
from tubemask.motion_guided import ConstantFlow, MotionGuidedMasker


def test_motion_guided_masks_leak_less_than_tube_masks():
    video = translating_clip(batch=8, seed=3)
    grid = (4, 8, 8)
    flow = ConstantFlow(dx=1.0)(video, grid)
    tube = TubeMasker(0.75)(8, grid, generator=gen(0))
    guided = MotionGuidedMasker(0.75, flow=ConstantFlow(dx=1.0))(8, grid, generator=gen(0), video=video)
    leak_tube = copy_along_motion(video, tube, flow, tubelet_size=2, patch_size=4)
    leak_guided = copy_along_motion(video, guided, flow, tubelet_size=2, patch_size=4)
    assert leak_guided["leaked"] < 0.05 < 0.15 < leak_tube["leaked"]
    assert leak_guided["mse"] > 1.2 * leak_tube["mse"]  # about 0.041 vs 0.032 here: a quarter of tube cubes copy


def test_a_copy_is_exact_when_the_content_only_moved():
    video = translating_clip(batch=1, seed=4)
    grid = (4, 8, 8)
    mask = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    mask[0, 2, 3, 4] = True  # one hidden cube; its content is visible one cell to the left in slot 1
    out = copy_along_motion(video, mask.view(1, -1), ConstantFlow(dx=1.0)(video, grid), tubelet_size=2, patch_size=4)
    assert out["leaked"] == 1.0 and out["mse"] < 1e-10
