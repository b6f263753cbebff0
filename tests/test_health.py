"""tubemask.eval.health: the verdicts on logs made to order, the CLI's output and exit codes, and bad files."""

import json
import math
import subprocess
import sys

import pytest

from tubemask.eval.health import check_run, main, read_metrics


def run_log(steps=200, loss_end=0.5, floor=1.0, participation=(10.0, 8.0), probes=(0.3, 0.6), nan_at=None):
    records = []
    for k, (pr, pb) in enumerate(zip(participation, probes, strict=True)):
        records.append(
            {"step": k * steps // max(1, len(probes) - 1), "probe_per_time": pb, "clip_token_participation_ratio": pr}
        )
    for step in range(1, steps + 1):
        loss = 1.0 + (loss_end - 1.0) * step / steps
        if nan_at == step:
            loss = math.nan
        records.append({"step": step, "loss": loss * floor, "zero_floor": 2 * floor, "mean_floor": floor})
    return records


@pytest.mark.parametrize(
    ("kwargs", "verdict"),
    [
        ({}, "learning"),
        ({"loss_end": 0.99}, "on the floor"),
        ({"loss_end": 0.93}, "barely learning"),
        ({"participation": (10.0, 1.3)}, "collapsed"),
        ({"nan_at": 120}, "diverged"),
        ({"steps": 20}, "too early"),
    ],
)
def test_verdicts(kwargs, verdict):
    health = check_run(run_log(**kwargs))
    assert health.verdict == verdict, health
    assert health.reasons


def test_a_falling_probe_is_a_warning():
    health = check_run(run_log(probes=(0.6, 0.4)))
    assert health.verdict == "learning" and "fell from 0.600 to 0.400" in health.warnings[0]


def test_figures_are_the_last_tenth():
    health = check_run(run_log(steps=100, loss_end=0.5))
    assert health.figures["loss_over_floor"] == pytest.approx(sum(1 - 0.5 * s / 100 for s in range(91, 101)) / 10)


def test_cli_output_and_exit_codes(tmp_path, capsys):
    good, flat = tmp_path / "good", tmp_path / "flat.jsonl"
    good.mkdir()
    (good / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in run_log()))
    flat.write_text("\n".join(json.dumps(r) for r in run_log(loss_end=1.0)))
    assert main([str(good)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["verdict"] == "learning"
    assert main([str(flat)]) == 1
    assert main([str(tmp_path / "missing")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_metrics(bad)
    assert main([str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in run_log()))
    done = subprocess.run([sys.executable, "-m", "tubemask.eval.health", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "verdict: learning" in done.stdout
