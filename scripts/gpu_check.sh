#!/usr/bin/env bash
# The checks that need a CUDA GPU, most valuable figures first, each step under its own timeout (9 min 10 s in all;
# about 4 min 30 s seen on an H200):
#   setup      install the carried wheels of .whl/ (scripts/carried-wheels.sh; 20 s), version line (30 s),
#              `import tubemask` (30 s; stops here, naming the missing module, when it fails), nvidia-smi line (10 s)
#   tests      (70 s) the CUDA tests: tests/test_cuda.py (autocast steps, SDPA kernels, sync-free normalise/loss/step,
#              the post-VideoMAE maskers, targets and fine-tuning selection on the device) and every masker's
#              conformance test on CUDA (tests/test_masking.py, test_motion_aware.py, test_motion_guided.py, -m cuda)
#   benchmark  (140 s) benchmarks/gpu.py --quick: bf16 ViT-B pretraining step, eager row (20 timed steps, printed before
#              torch.compile starts), HF transformers' eager step as the peer, then compiled; MFU against the spec
#              peak and a bf16 matmul timed in this run
#   memory_bf16, memory_fp32, memory_ckpt   (90 s, 80 s, 80 s) benchmarks/memory.py --device cuda --quick: ViT-B step
#              peak memory vs HF in bf16, fp32, and bf16 with gradient checkpointing on both sides
# Without CUDA every step says so and the script still runs to its end (a dry run of the script itself).
# A summary block (pass/fail and figures per step) is printed last and rewritten to OUTDIR/summary.txt after every
# step, so a run cut off by a timeout still returns what it measured; the full log is OUTDIR/gpu_check.log, one log
# per step beside it. The GPU machine has `python3` but no beartype or tyro: fetch their wheels first on a machine
# with PyPI (`bash scripts/fetch-gpu-wheels.sh`) and carry .whl/ with the checkout.
#
# Usage: bash scripts/gpu_check.sh [OUTDIR]     (OUTDIR: default $OUT when set, else outputs/gpu_check)
#        PYTHON=/path/to/python bash scripts/gpu_check.sh OUTDIR    (default python3)
#        WHEELS=DIR (default .whl) or WHEELS=none (no carried wheels)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-$root/outputs/gpu_check}}"
mkdir -p "$out" && out="$(cd "$out" && pwd)" || exit 1
cd "$root"
py="${PYTHON:-python3}"
log="$out/gpu_check.log"
summary="$out/summary.txt"
: >"$log"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
started=$(date +%s)
# shellcheck source=scripts/carried-wheels.sh
source "$root/scripts/carried-wheels.sh"

steps=(setup tests benchmark memory_bf16 memory_fp32 memory_ckpt)
declare -A status figures
status[setup]="not run"

write_summary() {
    {
        echo "== gpu_check summary: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(($(date +%s) - started)) s, python $py, log $log"
        local step passed=0 skipped=0 other=0
        for step in "${steps[@]}"; do
            printf '%-12s %s\n' "$step" "${status[$step]:-not run}"
            if [ -n "${figures[$step]:-}" ]; then
                printf '%s\n' "${figures[$step]}" | sed 's/^/    /'
            fi
            case "${status[$step]:-not run}" in PASS*) passed=$((passed + 1)) ;; SKIP*) skipped=$((skipped + 1)) ;;
                *) other=$((other + 1)) ;; esac
        done
        echo "steps: $passed passed, $skipped skipped (no CUDA), $other failed, timed out or not run"
    } >"$summary.tmp" && mv "$summary.tmp" "$summary"
}

finish() {
    write_summary
    [ -n "${CARRIED_SITE:-}" ] && rm -rf "$CARRIED_SITE"
    echo
    cat "$summary"
    exit "$1"
}
trap 'status[$current]="${status[$current]} - cut off by a signal"; finish 130' INT TERM

# run_step STEP SECONDS PATTERN COMMAND...: run COMMAND under `timeout`, its output into the log and OUTDIR/STEP.log;
# the lines matching the extended regex PATTERN become the step's figures in the summary.
run_step() {
    local step="$1" limit="$2" pattern="$3"
    shift 3
    current="$step"
    local step_log="$out/$step.log" t0 rc
    : >"$step_log"
    echo "== $step (timeout ${limit} s): $*" | tee -a "$log"
    status[$step]="running (timeout ${limit} s; if this stays, the run was cut off here)"
    write_summary
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log" "$step_log"
    rc=${PIPESTATUS[0]}
    local took=$(($(date +%s) - t0))
    figures[$step]="$(grep -E "$pattern" "$step_log" | head -n 20)"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status[$step]="TIMEOUT after ${limit} s (figures printed before it are kept below)"
    elif [ "$rc" -ne 0 ]; then
        status[$step]="FAIL (exit $rc, ${took} s): see $step_log"
        figures[$step]="$(printf '%s\n%s' "${figures[$step]}" "$(tail -n 5 "$step_log")")"
    elif grep -qE "no CUDA device|needs a CUDA GPU" "$step_log"; then
        status[$step]="SKIP: no CUDA device (${took} s)"
    else
        status[$step]="PASS (${took} s)"
    fi
    write_summary
}

# setup: carried wheels, version line, import tubemask (stops at once when it fails), nvidia-smi line
current=setup
status[setup]="running"
write_summary
setup_log="$out/setup.log"
: >"$setup_log"
wheels="${WHEELS:-$root/.whl}" # WHEELS=none: use the machine's packages only
setup() {
    if [ "$wheels" != none ]; then install_carried_wheels "$py" "$wheels" || return 1; fi
    timeout -k 5 30 "$py" -c "
import sys, torch
cuda = torch.cuda.is_available()
device = torch.cuda.get_device_name(0) if cuda else 'none (torch.cuda.is_available() is False)'
print(f'python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, device: {device}')
" || return 1
    CARRIED_IMPORT_TIMEOUT=30 check_tubemask_import "$py" && echo "import tubemask: ok"
}
setup >"$setup_log" 2>&1 # in this shell, not a subshell: install_carried_wheels exports PYTHONPATH for the steps
setup_rc=$?
tee -a "$log" <"$setup_log"
figures[setup]="$(grep -E '^python |import tubemask|carried-wheels\] [0-9]+ wheels|no wheels' "$setup_log")"
if [ "$setup_rc" -ne 0 ]; then
    status[setup]="FAIL: nothing else was run (the lines below; $setup_log)"
    figures[setup]="$(tail -n 8 "$setup_log")"
    finish 1
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    smi="$(timeout -k 2 10 nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm \
        --format=csv,noheader 2>&1 | head -n 4)" || smi="nvidia-smi failed or timed out: $smi"
else
    smi="no nvidia-smi on PATH"
fi
echo "nvidia-smi: $smi" | tee -a "$log"
figures[setup]="$(printf '%s\nnvidia-smi: %s' "${figures[setup]}" "$smi")"
status[setup]="PASS ($(($(date +%s) - started)) s)"
write_summary

run_step tests 70 '^(=+ )?[0-9]+ (passed|failed|skipped|error)|^(FAILED|ERROR) ' \
    "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_masking.py tests/test_motion_aware.py \
    tests/test_motion_guided.py
run_step benchmark 140 '^ViT-|^  (mode|eager|compiled|hf eager|tubemask eager) |matmul|^ratio |torch.compile|out of memory|does not fit|no CUDA' \
    "$py" benchmarks/gpu.py --quick
memory_figures='^torch .*train step|^  (side|hf|tubemask) |tubemask/hf|worker failed|no CUDA'
run_step memory_bf16 90 "$memory_figures" "$py" benchmarks/memory.py --device cuda --quick --precision bf16
run_step memory_fp32 80 "$memory_figures" "$py" benchmarks/memory.py --device cuda --quick --precision fp32
run_step memory_ckpt 80 "$memory_figures" \
    "$py" benchmarks/memory.py --device cuda --quick --precision bf16 --grad-checkpointing

current=setup
failed=0
for step in "${steps[@]}"; do
    case "${status[$step]}" in PASS* | SKIP*) ;; *) failed=1 ;; esac
done
finish "$failed"
