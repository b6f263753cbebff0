"""Scoring the person boxes of an AVA test set with an action detector, batched within videos and split over ranks.

The result is what [frame_average_precision][tubemask.eval.ava.frame_average_precision] and
[evaluate_official][tubemask.eval.ava_protocol.evaluate_official] read: per keyframe, the normalised person boxes and
a score per action, `sigmoid(logit) x` the box's detection score.
[evaluate_detector][tubemask.eval.ava_scoring.evaluate_detector] does both steps.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from tubemask.data.ava import FrameKey
from tubemask.data.ava_dataset import AVADataset, collate_ava
from tubemask.eval.ava_files import GroundTruthBox
from tubemask.eval.ava_protocol import AVATestResult, evaluate_official
from tubemask.train.even_calls import pad_calls

__all__ = ["video_batches", "score_person_boxes", "evaluate_detector"]


def video_batches(dataset: AVADataset, indices: range, batch_size: int) -> list[list[int]]:
    """Runs of at most `batch_size` consecutive keyframes of one video (test clips keep each video's aspect ratio,
    so only clips of one video share a size)."""
    batches: list[list[int]] = []
    for i in indices:
        same_video = batches and dataset.frames[batches[-1][-1]].video_id == dataset.frames[i].video_id
        if same_video and len(batches[-1]) < batch_size:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def score_person_boxes(
    model: torch.nn.Module,
    dataset: AVADataset,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    rank: int = 0,
    world_size: int = 1,
    calls: Callable[[int], int | None] = lambda batches: None,
    show: bool = False,
) -> dict[FrameKey, tuple[Tensor, Tensor]]:
    """Score every person box of every keyframe of `dataset`: sigmoid of each action's logit x the box's detection
    score.

    Rank r scores the r-th of `world_size` contiguous shares of the keyframes, batched within one video; the result
    (normalised boxes `[r, 4]`, scores `[r, classes]` per frame key) is gathered on every rank.

    Args:
        model: maps `(clips, rois)` to logits `[r, classes]`; put in eval mode for the pass.
        dataset: the test keyframes with their person boxes.
        batch_size: keyframes per forward call at most.
        workers: DataLoader worker processes.
        device: where the model is.
        autocast: the forward's precision context.
        rank: this process's rank.
        world_size: number of processes.
        calls: maps this rank's batch count to the number of forward calls to make (None: one per batch); under
            FSDP2 the busiest rank's count, since a sharded forward is a collective (e.g. `Run.eval_calls`).
        show: a progress bar.
    """
    was_training = model.training
    model.eval()
    share = range(rank * len(dataset) // world_size, (rank + 1) * len(dataset) // world_size)
    batches = video_batches(dataset, share, max(1, batch_size))
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_ava,
        generator=torch.Generator(),  # a loader without one draws its worker seed from the global RNG
    )
    found: dict[FrameKey, tuple[Tensor, Tensor]] = {}
    bar = tqdm(loader, desc="detect", disable=not show, leave=False)
    for host, padding in pad_calls(bar, calls(len(batches)) or len(batches)):
        batch = host.to(device)
        with autocast():
            logits = model(batch.clips, batch.rois)
        if padding:
            continue
        scores = (torch.sigmoid(logits.float()) * batch.scores[:, None]).cpu()
        owner = host.rois[:, 0].long()  # the loader's CPU copy: no device round trip per keyframe
        for i, key in enumerate(host.keys):
            found[key] = (host.norm_boxes[owner == i], scores[owner == i])
    model.train(was_training)
    if world_size > 1:
        parts: list = [None] * world_size
        torch.distributed.all_gather_object(parts, found)
        found = {key: value for part in parts for key, value in part.items()}
    return found


def evaluate_detector(
    model: torch.nn.Module,
    dataset: AVADataset,
    ground_truth: Mapping[FrameKey, Sequence[GroundTruthBox]],
    *,
    class_ids: Sequence[int],
    excluded: Collection[FrameKey] = (),
    **scoring,
) -> AVATestResult:
    """Score every person box of `dataset` ([score_person_boxes][tubemask.eval.ava_scoring.score_person_boxes],
    which takes `scoring`: batch size, workers, device, ranks ...) and evaluate the scores as the official code does
    ([evaluate_official][tubemask.eval.ava_protocol.evaluate_official]), on every rank."""
    found = score_person_boxes(model, dataset, **scoring)
    return evaluate_official(found, ground_truth, class_ids=class_ids, excluded=excluded)
