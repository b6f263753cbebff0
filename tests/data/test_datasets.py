"""Datasets on the synthetic UCF101 and on a corpus of bad files: shapes, determinism, repeats, failures, workers."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from tubemask.data import (
    DecodeError,
    DecodeOptions,
    DenseSampler,
    EvalPipeline,
    FailureLog,
    FinetuneDataset,
    FinetunePipeline,
    MultiViewDataset,
    PretrainDataset,
    PretrainPipeline,
    SegmentSampler,
    VideoReader,
    VideoRecord,
    collate_repeated,
    read_ucf101,
)
from tubemask.data.loading import RecordClips

SAMPLER = DenseSampler(clip_len=8, stride=2)


@pytest.fixture(scope="module")
def train_records(synthetic_root):
    return read_ucf101(synthetic_root, split=1, train=True)


def test_pretrain_clip_shape_and_normalization(train_records):
    ds = PretrainDataset(train_records, pipeline=PretrainPipeline(input_size=32), sampler=SAMPLER)
    clip = ds[0]
    assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
    assert float(clip.min()) > -2.2 and float(clip.max()) < 2.7


def test_deterministic_per_seed_epoch_index(train_records):
    def make(seed):
        return PretrainDataset(train_records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER, seed=seed)

    a, b = make(0), make(0)
    assert torch.equal(a[3], b[3])
    a.set_epoch(1)
    assert not torch.equal(a[3], b[3])
    b.set_epoch(1)
    assert torch.equal(a[3], b[3])  # a resumed run at epoch 1 sees the same clip
    assert not torch.equal(make(1)[3], make(0)[3])


def test_keys_carry_their_epoch(train_records):
    from tubemask.data.loading import split_key

    ds = PretrainDataset(train_records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER, seed=2)
    plain = PretrainDataset(train_records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER, seed=2)
    plain.set_epoch(3)
    assert torch.equal(ds[(3, 5)], plain[5])  # the key's epoch wins over the dataset's (still 0)
    assert torch.equal(ds[5], ds[(0, 5)])
    labelled = FinetuneDataset(train_records, pipeline=FinetunePipeline(input_size=24, erase_p=0.0), sampler=SAMPLER)
    labelled.set_epoch(3)
    clip, label = labelled[5]
    labelled.set_epoch(0)
    keyed, keyed_label = labelled[(3, 5)]
    assert torch.equal(clip, keyed) and label == keyed_label
    assert split_key(torch.tensor(4), 1) == (1, 4) and split_key((2, 7), 1) == (2, 7)
    for bad in (True, (1, 2, 3), ("a", 1), 2.0):
        with pytest.raises(TypeError, match="expected an int index or an"):
            split_key(bad, 0)


def test_persistent_workers_with_epoch_keys_give_each_epochs_clips(train_records):
    """Workers that live across epochs keep their dataset copy's epoch; keys with the epoch keep the clips exact."""
    from tubemask.train.sampler import resumable_loader

    def dataset():
        return PretrainDataset(train_records[:8], pipeline=PretrainPipeline(input_size=16), sampler=SAMPLER, seed=4)

    keyed, loader = resumable_loader(dataset(), batch_size=4, seed=1, workers=2)
    assert keyed.with_epoch and loader.persistent_workers
    reference = dataset()
    for epoch in range(3):
        keyed.set_epoch(epoch)
        got = torch.cat(list(loader))
        reference.set_epoch(epoch)
        order = [i for _, i in keyed]
        assert [e for e, _ in keyed] == [epoch] * 8
        assert torch.equal(got, torch.stack([reference[i] for i in order])), epoch


def test_repeated_sampling_decodes_once_and_augments_independently(train_records, monkeypatch):
    import tubemask.data.loading as loading

    opened = []
    original = loading.VideoReader
    monkeypatch.setattr(loading, "VideoReader", lambda *a, **k: opened.append(a[0]) or original(*a, **k))
    ds = FinetuneDataset(
        train_records, pipeline=FinetunePipeline(input_size=24, erase_p=0.0), sampler=SAMPLER, repeats=4
    )
    clips, labels = ds[1]
    assert len(opened) == 1
    assert clips.shape == (4, 3, 8, 24, 24) and labels.tolist() == [train_records[1].label] * 4
    assert not torch.equal(clips[0], clips[1])
    batch = collate_repeated([ds[0], ds[1]])
    assert batch[0].shape == (8, 3, 8, 24, 24) and batch[1].shape == (8,)
    assert collate_repeated([torch.zeros(2, 3, 4, 5, 5)] * 3).shape == (6, 3, 4, 5, 5)


def test_multiview_views_labels_and_index(synthetic_root):
    records = read_ucf101(synthetic_root, split=1, train=False)
    ds = MultiViewDataset(records, pipeline=EvalPipeline(crop_size=24), sampler=SAMPLER, num_clips=2)
    views, label, index = ds[2]
    assert views.shape == (6, 3, 8, 24, 24) and label == records[2].label and index == 2
    tsn = MultiViewDataset(records, pipeline=EvalPipeline(crop_size=24, num_crops=1), sampler=SegmentSampler(4))
    assert tsn[0][0].shape == (5, 3, 4, 24, 24)


def test_finetune_needs_labels(videos):
    with pytest.raises(ValueError, match="no label"):
        FinetuneDataset([VideoRecord(videos["avi"])], pipeline=FinetunePipeline())


@pytest.fixture(scope="module")
def mixed_records(bad_files, videos, train_records):
    """Good synthetic videos interleaved with every kind of bad file, plus a real clip and a too-short one."""
    good = train_records[:6] + [VideoRecord(videos["carphone"], 0), VideoRecord(videos["short"], 1)]
    bad = [VideoRecord(path, 2) for path in bad_files.values()]
    return [r for pair in zip(good, bad, strict=False) for r in pair] + good[len(bad) :]


def test_full_pass_over_bad_files_substitutes_counts_and_logs(mixed_records, bad_files, caplog):
    pipeline = FinetunePipeline(input_size=24, randaugment=None, erase_p=0.0)
    ds = FinetuneDataset(mixed_records, pipeline=pipeline, sampler=SAMPLER)
    with caplog.at_level(logging.WARNING, logger="tubemask.data"):
        first = [ds[i] for i in range(len(ds))]
    assert all(clip.shape == (3, 8, 24, 24) for clip, _ in first)
    unopenable = {str(p) for k, p in bad_files.items() if k != "truncated_avi"}
    assert unopenable <= set(ds.failures.counts)
    logged = "\n".join(caplog.messages)
    for path in unopenable:
        assert path in logged and path in ds.summary()
    assert "short video" in logged  # used, but not silently
    truncated = str(bad_files["truncated_avi"])  # cut to 70% of its bytes: used, and named as truncated
    header, decodable = ds.failures.truncated[truncated]
    assert header == 40 and decodable < 39 and f"{truncated}: truncated: header says 40 frames" in ds.summary()
    # Substitution is deterministic: a second pass gives the same samples.
    again = FinetuneDataset(mixed_records, pipeline=pipeline, sampler=SAMPLER)
    for (clip_a, label_a), (clip_b, label_b) in zip(first, (again[i] for i in range(len(again))), strict=True):
        assert label_a == label_b and torch.equal(clip_a, clip_b)


def test_strict_mode_raises(mixed_records):
    ds = PretrainDataset(mixed_records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER, strict=True)
    with pytest.raises(DecodeError):
        for i in range(len(ds)):
            ds[i]


def test_all_bad_raises_with_summary(bad_files):
    records = [VideoRecord(bad_files["zero"]), VideoRecord(bad_files["missing"])]
    ds = PretrainDataset(records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER)
    with pytest.raises(RuntimeError, match="in a row failed"):
        ds[0]


def test_give_up_error_names_the_last_file_that_failed(bad_files, train_records):
    # one bad file among good ones and no substitute allowed: the error must name the bad file, not the good one
    # drawn to replace it (which was never tried)
    records = [VideoRecord(bad_files["zero"])] + list(train_records)
    loader = RecordClips(records, sampler=SAMPLER, max_substitutions=0)
    with pytest.raises(RuntimeError, match=r"1 videos in a row failed .*\(last: \S*zero\.mp4\)"):
        loader.load(0)


def test_dataloader_with_workers_over_bad_files(mixed_records, capfd, tmp_path):
    ds = PretrainDataset(mixed_records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER, repeats=2)
    ds.set_epoch(3)
    ds.failures.journal = str(tmp_path / "bad_videos.rank0.jsonl")
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_repeated)
    handler = logging.StreamHandler(sys.stderr)  # as a recipe's logging.basicConfig would install; workers inherit it
    logging.getLogger("tubemask.data").addHandler(handler)
    try:
        batches = list(loader)
    finally:
        logging.getLogger("tubemask.data").removeHandler(handler)
    assert sum(b.shape[0] for b in batches) == 2 * len(ds)
    assert all(b.shape[1:] == (3, 8, 24, 24) for b in batches)
    # Same data as a single-process pass of the same epoch.
    assert torch.equal(batches[0][:2], ds[0])
    err = capfd.readouterr().err
    assert "bad video" in err and "zero.mp4" in err  # worker processes log each bad file
    # ... and journal it: the run's summary holds what a single-process pass of the same epoch counts
    gathered = FailureLog.read_run(tmp_path)
    single = PretrainDataset(mixed_records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER, repeats=2)
    single.set_epoch(3)
    for i in range(len(single)):
        single[i]
    assert gathered.counts == single.failures.counts and gathered.reasons == single.failures.reasons
    assert gathered.short == single.failures.short and gathered.counts
    assert ds.failures.total == 0  # the main process met none itself: only the journal knows


RECORD_FAILURES = """
import sys
from tubemask.data.failures import FailureLog
journal, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = FailureLog(journal=journal)
for i in range(n):
    log.record(f"/videos/w{worker}/{i % 7}.mp4", f"reason {worker}")
log.record_short(f"/videos/w{worker}/short.mp4", 3, 16)
"""


@pytest.mark.slow  # three interpreters import torch at once: about 10 s on two cores
def test_failure_journal_gathers_concurrent_processes_and_skips_torn_lines(tmp_path, caplog):
    journal = str(FailureLog.journal_file(tmp_path, rank=1))
    assert journal.endswith("bad_videos.rank1.jsonl")
    writers = [  # separate interpreters appending at the same time, as DataLoader workers and ranks do
        subprocess.Popen([sys.executable, "-c", RECORD_FAILURES, journal, str(w), "300"], stderr=subprocess.DEVNULL)
        for w in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    with open(journal, "a") as f:
        f.write('{"event": "failed", "path": "/videos/torn')  # a process killed mid-line
    with caplog.at_level(logging.WARNING, logger="tubemask.data"):
        log = FailureLog.read_run(tmp_path)
    assert "not a failure event" in caplog.text
    assert log.total == 900 and len(log.counts) == 21 and len(log.short) == 3
    assert log.counts["/videos/w2/0.mp4"] == 43 and log.reasons["/videos/w2/0.mp4"] == "reason 2"
    assert "900 failed loads of 21 videos; 3 videos shorter than a clip" in log.summary()
    FailureLog.remove_run_journals(tmp_path)
    assert FailureLog.read_run(tmp_path).total == 0 and not list(tmp_path.iterdir())


def test_an_unwritable_failure_journal_warns_and_keeps_counting(tmp_path, caplog):
    log = FailureLog(journal=str(tmp_path / "no such directory" / "journal.jsonl"))
    with caplog.at_level(logging.WARNING, logger="tubemask.data"):
        log.record("/videos/a.mp4", "broken")
    assert log.counts["/videos/a.mp4"] == 1 and "cannot append to the failure journal" in caplog.text


@pytest.mark.parametrize("kind", ["avi", "mp4"])
@pytest.mark.parametrize("seek_mode", ["exact", "approximate"])
def test_a_truncated_video_is_used_and_named_once(truncated_videos, kind, seek_mode, caplog):
    path = str(truncated_videos[kind])  # cut to a third of its bytes: the header says 75 frames, about 25 decode
    records = [VideoRecord(path, 0)] * 3 + [VideoRecord(truncated_videos["whole_avi"], 1)]
    pipeline = FinetunePipeline(input_size=24, randaugment=None, erase_p=0.0)
    ds = FinetuneDataset(records, pipeline=pipeline, sampler=SAMPLER, decode=DecodeOptions(seek_mode=seek_mode))
    with caplog.at_level(logging.WARNING, logger="tubemask.data"):
        for epoch in range(2):
            ds.set_epoch(epoch)
            labels = [ds[i][1] for i in range(len(ds))]
            assert labels == [0, 0, 0, 1]  # what decodes is used: no substitute
    header, decodable = ds.failures.truncated[path]
    assert header == 75 and 10 <= decodable <= 30
    if kind == "avi":  # every packet left decodes: the count is the packet scan's
        assert decodable == VideoReader(path).num_frames
    # counted as a bad video (the recipes report len(counts)), once per file, but not as a failed load
    assert ds.failures.counts == {path: 1} and ds.failures.total == 0
    assert ds.failures.reasons[path] == f"header says 75 frames, {decodable} decode"
    named = [m for m in caplog.messages if "truncated video" in m]
    assert len(named) == 1 and named[0].startswith(f"tubemask.data: truncated video {path}: header says 75 frames, ")
    summary = ds.summary().splitlines()
    assert summary[0] == (
        f"0 failed loads of 0 videos; {len(ds.failures.short)} videos shorter than a clip; "
        "1 truncated (header states more frames than decode)"
    )
    assert f"  {path}: truncated: header says 75 frames, {decodable} decode" in summary


def test_a_truncated_video_met_in_a_worker_is_named_in_the_run_report(truncated_videos, tmp_path):
    path = str(truncated_videos["avi"])
    records = [VideoRecord(path)] * 4 + [VideoRecord(truncated_videos["whole_avi"])]
    ds = PretrainDataset(records, pipeline=PretrainPipeline(input_size=24), sampler=SAMPLER)
    ds.failures.journal = str(FailureLog.journal_file(tmp_path, rank=0))
    loader = DataLoader(ds, batch_size=2, num_workers=1)
    assert sum(batch.shape[0] for batch in loader) == len(ds)
    events = [json.loads(line) for line in Path(ds.failures.journal).read_text().splitlines()]
    truncations = [e for e in events if e["event"] == "truncated"]
    decodable = VideoReader(path).num_frames
    assert len(truncations) == 1  # four samples of the file, one event from the worker
    assert truncations[0]["path"] == path and truncations[0]["header_frames"] == 75
    assert truncations[0]["decodable_frames"] == decodable
    assert not ds.failures.truncated  # the main process met none itself: only the journal knows
    said: list[str] = []
    bad = FailureLog.report_run(tmp_path, said.append)
    assert bad.truncated == {path: (75, decodable)} and len(bad.counts) == 1 and bad.total == 0
    assert len(said) == 1 and f"  {path}: truncated: header says 75 frames, {decodable} decode" in said[0]


def test_failure_log_counts_a_truncated_video_once_beside_its_failures(caplog):
    log = FailureLog()
    with caplog.at_level(logging.WARNING, logger="tubemask.data"):
        log.record_truncated("/videos/a.avi", 75, 18)
        log.record_truncated("/videos/a.avi", 75, 17)  # another reader decoded one frame fewer: kept, not logged
    assert caplog.messages == [
        "tubemask.data: truncated video /videos/a.avi: header says 75 frames, 18 decode; using the frames that decode"
    ]
    assert log.truncated == {"/videos/a.avi": (75, 17)} and log.counts == {"/videos/a.avi": 1} and log.total == 0
    assert log.reasons == {"/videos/a.avi": "header says 75 frames, 17 decode"}
    log.record("/videos/a.avi", "keyframe outside the file", substitute=3)
    assert log.counts == {"/videos/a.avi": 2} and log.total == 1
    assert log.reasons["/videos/a.avi"] == "keyframe outside the file"  # the last failure's
    other = FailureLog()  # e.g. another worker's: the same file truncated there too, and one more
    other.record_truncated("/videos/a.avi", 75, 16)
    other.record_truncated("/videos/b.avi", 40, 9)
    log.merge(other)
    assert log.counts == {"/videos/a.avi": 2, "/videos/b.avi": 1} and log.total == 1
    assert log.truncated == {"/videos/a.avi": (75, 16), "/videos/b.avi": (40, 9)}
    assert log.reasons["/videos/a.avi"] == "keyframe outside the file"
    assert log.summary().splitlines() == [
        "1 failed loads of 1 videos; 0 videos shorter than a clip; 2 truncated (header states more frames than decode)",
        "  /videos/a.avi: 1x keyframe outside the file",
        "  /videos/a.avi: truncated: header says 75 frames, 16 decode",
        "  /videos/b.avi: truncated: header says 40 frames, 9 decode",
    ]


def test_uint8_pretraining_samples_match_float_after_normalize_batch(train_records):
    from tubemask.data import normalize_batch

    def make(normalize):
        pipe = PretrainPipeline(input_size=24, normalize=normalize)
        return PretrainDataset(train_records, pipeline=pipe, sampler=SAMPLER, repeats=2, seed=5)

    raw, ref = make(False), make(True)
    raw.set_epoch(2)
    ref.set_epoch(2)
    batch = collate_repeated([raw[0], raw[3]])
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 8, 24, 24)
    assert batch.permute(0, 2, 3, 4, 1).is_contiguous()  # channels-last memory, as decoded: no transposition
    assert torch.equal(batch, torch.cat([raw[0], raw[3]]))
    floats = normalize_batch(batch)
    assert floats.is_contiguous()
    assert torch.allclose(floats, collate_repeated([ref[0], ref[3]]), atol=1e-6)
    # Through DataLoader workers (shared-memory collate) the values are the same.
    loader = DataLoader(raw, batch_size=2, num_workers=1, collate_fn=collate_repeated)
    assert torch.equal(next(iter(loader)), collate_repeated([raw[0], raw[1]]))


def test_report_run_logs_bad_videos_and_stays_quiet_for_a_clean_run(tmp_path):
    said: list[str] = []
    assert FailureLog.report_run(tmp_path, said.append).total == 0 and said == []  # no journal: nothing to say
    FailureLog(journal=str(FailureLog.journal_file(tmp_path, rank=0))).record("/videos/a.mp4", "moov atom not found")
    FailureLog(journal=str(FailureLog.journal_file(tmp_path, rank=1))).record_short("/videos/b.mp4", 3, 16)
    bad = FailureLog.report_run(tmp_path, said.append)
    assert bad.counts == {"/videos/a.mp4": 1} and bad.short == {"/videos/b.mp4": 3}
    assert len(said) == 1 and said[0].startswith(f"bad videos of this run ({tmp_path}/bad_videos.rank*.jsonl):\n")
    assert "/videos/a.mp4: 1x moov atom not found" in said[0] and "/videos/b.mp4: short (3 frames)" in said[0]


def test_any_callable_pipeline_repeats_and_collates(train_records):
    """A user's pipeline needs only `pipeline(frames, generator=g)`: without a `repeat` method the datasets call it
    `r` times with the sample's generator and stack the clips; the collate gives the default collate's values."""
    calls = []

    def crop_pipeline(frames, *, generator=None):  # [t c h w] uint8 -> [c t 16 16] float, a random corner
        calls.append(1)
        top = int(torch.randint(0, frames.shape[-2] - 16, (), generator=generator))
        return frames[..., top : top + 16, :16].permute(1, 0, 2, 3).float()

    pretrain = PretrainDataset(train_records, pipeline=crop_pipeline, sampler=SAMPLER, repeats=3)
    clips = pretrain[4]
    assert clips.shape == (3, 3, 8, 16, 16) and len(calls) == 3
    frames, used, generator = pretrain.clips.load(4)  # the same sample again, its generator fresh
    expected = torch.stack([crop_pipeline(frames, generator=generator) for _ in range(3)])
    assert torch.equal(clips, expected) and not torch.equal(clips[0], clips[1])  # independent draws

    finetune = FinetuneDataset(train_records, pipeline=crop_pipeline, sampler=SAMPLER)  # repeats=1: (clip, label)
    items = [finetune[i] for i in (0, 5)]
    clips, labels = collate_repeated(items)
    assert clips.shape == (2, 3, 8, 16, 16) and torch.equal(clips, torch.stack([c for c, _ in items]))
    assert labels.tolist() == [label for _, label in items]
