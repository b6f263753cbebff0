#!/usr/bin/env bash
# Checks that need a CUDA GPU, sized to finish in under 9 minutes on one GPU (each step has its own timeout):
#   1. the CUDA tests (pytest -m cuda), 2. benchmarks/gpu.py --quick (bf16 ViT-B step, MFU, compile, loader rows),
#   3. benchmarks/memory.py --device cuda --quick (ViT-B step peak memory vs HF, needs transformers), in fp32 and in
#      bf16 autocast (the recipes' default on CUDA).
# The GPU machine may lack torchcodec/FFmpeg: decoding tests then skip and the loader part of the benchmark says so.
# Usage: bash scripts/gpu_check.sh [OUTPUT_DIR]   (figures are also written to OUTPUT_DIR/gpu_check.log)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-${OUT:-outputs/gpu_check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    2>&1 | tee "$out/gpu_check.log"
rc=0
echo "== pytest -m cuda" | tee -a "$out/gpu_check.log"
timeout 150 python -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee -a "$out/gpu_check.log" || rc=1
echo "== benchmarks/gpu.py --quick" | tee -a "$out/gpu_check.log"
timeout 200 python benchmarks/gpu.py --quick 2>&1 | tee -a "$out/gpu_check.log" || rc=1
echo "== benchmarks/memory.py --device cuda --quick" | tee -a "$out/gpu_check.log"
timeout 120 python benchmarks/memory.py --device cuda --quick 2>&1 | tee -a "$out/gpu_check.log" || rc=1
echo "== benchmarks/memory.py --device cuda --quick --precision bf16" | tee -a "$out/gpu_check.log"
timeout 90 python benchmarks/memory.py --device cuda --quick --precision bf16 2>&1 | tee -a "$out/gpu_check.log" || rc=1
exit $rc
