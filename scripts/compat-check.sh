#!/usr/bin/env bash
# Run tests on the GPU machine's package set as it really is, on this CPU: Python 3.12, torch 2.11.0, torchvision
# 0.26.0, transformers 5.17.0, jaxtyping 0.3.11, einops, numpy, hypothesis, pytest, timm, tensorboard, matplotlib,
# tqdm, and NO beartype, tyro, torchcodec or FFmpeg. What the GPU machine lacks comes only from the carried wheels
# (.whl/, filled by scripts/fetch-gpu-wheels.sh), installed through scripts/carried-wheels.sh, the code path that
# scripts/gpu_check.sh uses there. Catches torch API differences, unguarded imports and a missing carried package
# before a GPU session spends its minutes on them.
#
#   bash scripts/compat-check.sh [pytest args]        # default: tests/test_cuda.py tests/test_benchmarks.py
#   WHEELS=none bash scripts/compat-check.sh          # without the carried wheels: must fail at `import tubemask`
#   PYTHON=python3.12 TORCH=2.11.0 TORCHVISION=0.26.0 TRANSFORMERS=5.17.0 bash scripts/compat-check.sh
#   Then, in the same stack:  PYTHON=/tmp/tubemask-compat-venv/bin/python bash scripts/gpu_check.sh /tmp/gpu-check
#   (gpu_check.sh installs the carried wheels itself).
#
# The venv goes to $COMPAT_VENV (default /tmp/tubemask-compat-venv; torch from PyPI is a CUDA build of several GB).
# The script refuses a venv in which beartype, tyro or torchcodec is importable without the carried wheels: the GPU
# machine has none of them, so such a venv would test a stack that does not exist. tubemask is put on PYTHONPATH, not
# installed, so the checkout stays untouched. Decoding tests skip (no torchcodec).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${COMPAT_VENV:-/tmp/tubemask-compat-venv}"
torch_version="${TORCH:-2.11.0}"
torchvision_version="${TORCHVISION:-0.26.0}"
transformers_version="${TRANSFORMERS:-5.17.0}"
jaxtyping_version="${JAXTYPING:-0.3.11}"
wheels="${WHEELS:-$root/.whl}"

py="${PYTHON:-}"
if [ -z "$py" ]; then # python3.12 on PATH, else a pyenv 3.12 (its shim answers only where 3.12 is selected)
    for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
        if "$candidate" -c "" >/dev/null 2>&1; then
            py="$candidate"
            break
        fi
    done
fi
if [ -z "$py" ]; then
    echo "[compat-check] no Python 3.12 found (tried python3.12 and ~/.pyenv/versions/3.12*); set PYTHON=" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
"$vpy" -m pip install -q --disable-pip-version-check "torch==$torch_version" "torchvision==$torchvision_version"
"$vpy" -m pip install -q --disable-pip-version-check "jaxtyping==$jaxtyping_version" \
    "transformers==$transformers_version" einops numpy hypothesis pytest timm tensorboard matplotlib tqdm

absent=()
for module in beartype tyro torchcodec; do
    if env -u PYTHONPATH "$vpy" -c "import $module" >/dev/null 2>&1; then
        absent+=("$module")
    fi
done
if [ "${#absent[@]}" -gt 0 ]; then
    echo "[compat-check] $venv has ${absent[*]} installed, which the GPU machine lacks: this venv does not emulate" \
        "it. Remove them ($vpy -m pip uninstall -y ${absent[*]}) or delete the venv, and run again." >&2
    exit 1
fi

# shellcheck source=scripts/carried-wheels.sh
source "$root/scripts/carried-wheels.sh"
unset PYTHONPATH
trap '[ -n "${CARRIED_SITE:-}" ] && rm -rf "$CARRIED_SITE"' EXIT
if [ "$wheels" = none ]; then
    echo "[compat-check] WHEELS=none: no carried wheels, as on the GPU machine when .whl/ is not carried"
else
    install_carried_wheels "$vpy" "$wheels"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
"$vpy" -c "
import sys, torch, torchvision, transformers, jaxtyping
print('[compat-check] python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__,
      'transformers', transformers.__version__, 'jaxtyping', jaxtyping.__version__)
"
check_tubemask_import "$vpy"
args=("$@")
if [ "${#args[@]}" -eq 0 ]; then
    args=(tests/test_cuda.py tests/test_benchmarks.py)
fi
set +e
"$vpy" -m pytest -q -p no:cacheprovider "${args[@]}"
