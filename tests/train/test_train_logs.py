import json
import math
import sys

import numpy as np
import pytest
import torch
from recipe_helpers import tensorboard_scalars

from tubemask.train.logs import (
    JsonlLogger,
    SmoothedValue,
    TensorBoardWriter,
    ThroughputMeter,
    plot_loss_curve,
    read_jsonl,
)


def test_jsonl_logger_writes_one_flushed_line_per_call(tmp_path) -> None:
    path = tmp_path / "run" / "log.jsonl"
    log = JsonlLogger(path)
    log.log(0, loss=torch.tensor(1.5), lr=np.float32(0.25), tag="warmup")
    # flushed: readable before close
    assert json.loads(path.read_text().splitlines()[0]) == {"step": 0, "loss": 1.5, "lr": 0.25, "tag": "warmup"}
    log.log(1, loss=float("nan"))
    log.close()
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [0, 1] and math.isnan(records[1]["loss"])
    with pytest.raises(ValueError, match="single-element"), JsonlLogger(path) as other:
        other.log(2, loss=torch.ones(2))


def test_resume_drops_records_after_the_resumed_step(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    with JsonlLogger(path) as log:
        for step in range(10):
            log.log(step, loss=10.0 - step)
    with open(path, "a") as f:
        f.write('{"step": 10, "lo')  # torn line from a crash
    with JsonlLogger(path, resume_step=6) as log:
        log.log(7, loss=0.5)
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert records[-1]["loss"] == 0.5


def test_truncate_after_on_an_open_logger_keeps_logging_to_the_same_file(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    with JsonlLogger(path) as log:
        for step in range(5):
            log.log(step, loss=float(step))
        assert log.truncate_after(2) == 2  # steps 3 and 4 dropped, atomically, while the logger is open
        log.log(3, loss=30.0)
    assert [(r["step"], r["loss"]) for r in read_jsonl(path)] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]


def test_appending_after_a_torn_line_keeps_the_next_record(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "lo')
    with JsonlLogger(path) as log:
        log.log(2, loss=2.0)
    assert [r["step"] for r in read_jsonl(path)] == [0, 2]


def test_plot_loss_curve_writes_png(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    with JsonlLogger(path) as log:
        for step in range(20):
            log.log(step, loss=1.0 / (step + 1))
        log.log(20, loss=float("inf"))
    png = plot_loss_curve(path, tmp_path / "plots" / "loss.png", log_y=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["loss.png"]
    with pytest.raises(ValueError, match="'acc'"):
        plot_loss_curve(path, tmp_path / "acc.png", key="acc")


def test_smoothed_value() -> None:
    meter = SmoothedValue(window=3)
    assert math.isnan(meter.avg)
    for value in (1.0, 2.0, 3.0, 10.0):
        meter.update(value)
    assert meter.value == 10.0
    assert meter.median == 3.0
    assert meter.avg == pytest.approx(5.0)
    assert meter.global_avg == pytest.approx(4.0)
    meter.update(torch.tensor(4.0), n=4)
    assert meter.count == 8 and meter.global_avg == pytest.approx(32.0 / 8)
    with pytest.raises(ValueError, match="window"):
        SmoothedValue(window=0)


def test_throughput_meter_with_a_fake_clock() -> None:
    now = [0.0]
    meter = ThroughputMeter(window=10, clock=lambda: now[0])
    assert math.isnan(meter.clips_per_s)
    for _ in range(4):
        now[0] += 0.25  # waiting for data
        meter.data_ready()
        now[0] += 0.75  # computing
        meter.step(8)
    assert meter.clips_per_s == pytest.approx(8.0)
    assert meter.data_wait_share == pytest.approx(0.25)
    meter.reset()
    assert math.isnan(meter.data_wait_share)


def test_tensorboard_writer_round_trip(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    writer = TensorBoardWriter(tmp_path / "tb")
    for step in range(3):
        writer.log(step, loss=torch.tensor(1.0 / (step + 1)), lr=np.float64(0.5 * step), clips=step)
    writer.close()
    scalars = tensorboard_scalars(tmp_path / "tb")
    assert sorted(scalars) == ["clips", "loss", "lr"]
    assert scalars["loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert scalars["lr"] == [(0, 0.0), (1, 0.5), (2, 1.0)] and scalars["clips"][-1] == (2, 2.0)


def test_tensorboard_writer_missing_package_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardWriter(tmp_path / "tb")
