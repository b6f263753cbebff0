"""The parts of the benchmark scripts that run without a GPU, run as a user runs them (they print figures, not pass or
fail on speed: these tests check that the scripts work and that their arithmetic holds)."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tubemask.data.randaugment import RANDAUGMENT_OPS

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_gpu_benchmark_loader_rows_size_the_dataloader_for_a_given_step_rate() -> None:
    pytest.importorskip("torchcodec")
    out = run_script("gpu.py", "--loader-only", "--quick", "--gpu-clips-per-s", "100")
    found = re.findall(r"^\s+(pretrain|finetune) per CPU worker .*repeats (\d):\s+([\d.]+)$", out, re.M)
    rates = {(path, int(r)): float(v) for path, r, v in found}
    assert set(rates) == {("pretrain", 1), ("pretrain", 4), ("finetune", 2)}, out
    assert all(v > 0 for v in rates.values()), out
    line = re.search(r"feed the given step \(100\.0 clips/s\): (.*)$", out, re.M)
    assert line is not None, out
    counts = {(path, int(r)): int(n) for n, path, r in re.findall(r"(\d+) \((\w+), repeats (\d)\)", line[1])}
    assert set(counts) == set(rates), out
    for row, count in counts.items():  # the rates are printed to 0.1: allow their rounding
        assert math.ceil(100 / (rates[row] + 0.05)) <= count <= math.ceil(100 / (rates[row] - 0.05)), out
    ratio = float(re.search(r"^ratio repeats4/repeats1 per worker: ([\d.]+)$", out, re.M)[1])
    assert ratio == pytest.approx(rates[("pretrain", 4)] / rates[("pretrain", 1)], rel=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without a GPU")
def test_gpu_benchmark_without_a_gpu_says_what_runs_instead() -> None:
    out = run_script("gpu.py", "--quick")
    assert "no CUDA device" in out and "--loader-only" in out


@pytest.mark.slow
def test_gpu_benchmark_step_code_runs_on_the_cpu() -> None:
    """The GPU step measurement, run on the CPU with the tiny model: catches a broken script before a GPU session."""
    out = run_script(
        "gpu.py", "--device", "cpu", "--model", "tiny", "--quick", "--start-batch", "1", "--max-batch", "2",
        "--steps", "1", "--no-compile",
    )  # fmt: skip
    assert "batch 1: fits" in out and "batch 2: fits" in out, out
    eager = re.search(r"^\s+eager\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%$", out, re.M)
    assert eager is not None and float(eager[1]) > 0, out
    assert float(eager[2]) == pytest.approx(2 / float(eager[1]), rel=0.01, abs=0.06), out  # batch / s per step
    # MFU against the spec peak (989 TFLOP/s) and against the bf16 matmul measured in the run
    assert float(eager[4]) == pytest.approx(100 * float(eager[3]) / 989, rel=0.05, abs=0.06), out
    peak = re.search(r"^\s+bf16 matmul 512\^3 in this run \(CPU\): best ([\d.]+) GFLOP/s$", out, re.M)
    assert peak is not None and float(peak[1]) > 0, out
    assert float(eager[5]) > 0, out  # the tiny model's TFLOP/s print as 0.0: only the sign is checkable here
    assert re.search(r"^ratio mfu: \d+\.\d\d$", out, re.M) and re.search(r"^ratio mfu_matmul: \d+\.\d\d$", out, re.M)


@pytest.mark.slow
def test_randaugment_benchmark_times_every_op_on_identical_output() -> None:
    out = run_script("randaugment.py", "--quick")  # the script asserts both op tables give the same clips
    timed = re.findall(r"^\s+(\w+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)x$", out, re.M)
    assert [name for name, _ in timed] == list(RANDAUGMENT_OPS), out
    assert re.search(r"^ratio randaugment tubemask/torchvision: \d+\.\d\d$", out, re.M), out


def test_cpu_matmul_peak_stays_on_the_cpu_and_the_cuda_one_needs_cuda() -> None:
    """The CPU peak helper times with the host clock and never synchronises a device: it must not run on CUDA, even
    when torch's default device says otherwise. The CUDA yardstick (CUDA events) refuses a non-CUDA device."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import common
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    with torch.device("meta"):  # a default device that is not the CPU
        assert common.matmul_peak_gflops(64, repeats=1) > 0
    with pytest.raises(RuntimeError, match="CUDA"):
        common.cuda_matmul_peak_tflops(64, device="cpu")


def test_memory_benchmark_prints_a_failed_workers_output() -> None:
    """A worker that dies (here: an unknown model preset) is reported with the end of its stderr and a clear
    message, not a bare CalledProcessError that hides why."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--quick", "--model", "no-such-preset"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "memory.py: the hf worker failed (exit 1)" in done.stdout, done.stdout + done.stderr
    assert "Traceback" in done.stdout and "no-such-preset" in done.stdout, done.stdout
    assert "CalledProcessError" not in done.stdout + done.stderr


def test_motion_aware_step_benchmark_quick() -> None:
    """The smoke run prints both rows and the two ratios; the FLOPs ratio is the analytic one (tiny, 64 cubes)."""
    out = run_script("motion_aware_step.py", "--quick", "--threads", "1")
    assert "  tube " in out and "  motion-aware " in out, out
    flops = float(re.search(r"^ratio flops tube/motion-aware: ([\d.]+)$", out, re.M)[1])
    assert flops > 1.5, out
    assert re.search(r"^ratio step_time tube/motion-aware: [\d.]+$", out, re.M), out
    out = run_script("motion_aware_step.py", "--quick", "--threads", "1", "--query-ratio", "0.2", "--visible", "random")
    assert "(random split) decoding 12;" in out, out


def test_motion_aware_finetune_benchmark_quick() -> None:
    """The smoke run prints both rows and the three ratios; the FLOPs ratio is the analytic one (tiny, 39 of 64 cubes)."""
    out = run_script("motion_aware_finetune.py", "--quick", "--threads", "1")
    assert "  every cube " in out and "  motion-aware " in out, out
    flops = float(re.search(r"^ratio flops every-cube/motion-aware: ([\d.]+)$", out, re.M)[1])
    assert 1.5 < flops < 1.8, out
    for figure in ("train_step", "inference"):
        assert re.search(rf"^ratio {figure} every-cube/motion-aware: [\d.]+$", out, re.M), out


def test_study_flops_gives_the_registered_step_counts() -> None:
    """The compute-matched runs of scripts/studies.sh (steps 6 and 7) take their step counts from this count."""
    out = run_script("study_flops.py")
    assert re.search(r"tube 0\.75, pixels \(frozen\)\s+16\s+48\s+44\.6\s+133\.7\s+2000$", out, re.M), out
    assert re.search(r"motion-aware 0\.9, query 0\.3\s+7\s+19\s+18\.3\s+54\.9\s+822$", out, re.M), out
    assert re.search(r"teacher features \(\+ its pretraining\)\s+16\s+48\s+43\.0\s+244\.3\s+5655$", out, re.M), out
    assert "motion-aware steps at the compute of 2000 tube steps: 4869" in out, out


def test_study_leakage_prints_each_mask() -> None:
    out = run_script("study_leakage.py", "--clips", "16")
    assert re.search(r"^16 clips, grid \(4, 4, 4\): content moves [\d.]+ cells per time slot", out, re.M), out
    for mask in ("tube", "random", "frame", "motion-guided"):
        assert re.search(rf"^  {mask}\s+[\d.]+%\s+[\d.]+$", out, re.M), out
    assert re.search(
        r"^  motion-aware 0\.9, random split, 20% decoded \(step 9\): [\d.]+% of the encoder's", out, re.M
    ), out
