#!/usr/bin/env bash
# Run the test suite on another Python / torch stack than the pinned one, without torchcodec or FFmpeg: by default
# the GPU machine's (Python 3.12, torch 2.11.0, torchvision 0.26.0, jaxtyping 0.3.11), on the CPU. Catches torch API
# differences and unguarded torchcodec imports before a GPU session spends its minutes on them.
#
#   bash scripts/compat-check.sh                       # the defaults below
#   PYTHON=python3.12 TORCH=2.11.0 TORCHVISION=0.26.0 bash scripts/compat-check.sh [pytest args]
#
# The venv goes to $COMPAT_VENV (default /tmp/tubemask-compat-venv; torch from PyPI is a CUDA build of several GB).
# tubemask is put on PYTHONPATH, not installed, so the checkout stays untouched. Decoding tests skip (no torchcodec).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3.12}"
venv="${COMPAT_VENV:-/tmp/tubemask-compat-venv}"
torch_version="${TORCH:-2.11.0}"
torchvision_version="${TORCHVISION:-0.26.0}"
jaxtyping_version="${JAXTYPING:-0.3.11}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q "torch==$torch_version" "torchvision==$torchvision_version"
"$venv/bin/python" -m pip install -q "jaxtyping==$jaxtyping_version" einops beartype numpy hypothesis pytest \
    transformers timm scikit-video tqdm tyro matplotlib
if "$venv/bin/python" -c "import torchcodec" 2>/dev/null; then
    echo "[compat-check] $venv has torchcodec; this check is meant for a stack without it" >&2
fi
"$venv/bin/python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}"
