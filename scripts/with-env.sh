#!/usr/bin/env bash
# Make sure the project's environment exists, then run the given command inside it.
#
#   bash scripts/with-env.sh python recipes/pretrain_ucf101.py
#   bash scripts/with-env.sh bash scripts/test.sh
#
# Idempotent: installs FFmpeg (Debian package, needed by torchcodec) when missing, creates .venv with the tested
# stack from constraints.txt, and reinstalls only when pyproject.toml or constraints.txt changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${TUBEMASK_VENV:-$root/.venv}"
py="${PYTHON:-python3}"

if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
    echo "[with-env] installing FFmpeg shared libraries (apt: ffmpeg)" >&2
    sudo_cmd=""
    if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq ffmpeg >/dev/null
fi

stamp="$venv/.tubemask-env-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[with-env] preparing $venv (first run takes a few minutes)" >&2
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -c constraints.txt -e ".[dev,docs]"
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
exec "$@"
