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

# Two commands started at once (scripts/studies.sh's two workers) would both install: one at a time, the second then
# finds everything in place.
mkdir -p "$venv"
if command -v flock >/dev/null; then
    exec 9>"$venv/.tubemask-env.lock"
    flock 9
fi

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
    # The tested stack (torch 2.14.1 is a CUDA build, with its nvidia-* and triton wheels) fills about 6.3 GiB; refuse
    # early with the figures rather than let pip die half way with "No space left on device".
    need_kib=$((7 * 1024 * 1024))
    if [ -z "${TUBEMASK_SKIP_DISK_CHECK:-}" ] && [ ! -x "$venv/bin/python" ]; then
        free_kib="$(df -Pk "$(dirname "$venv")" | awk 'NR == 2 {print $4}')"
        if [ -n "$free_kib" ] && [ "$free_kib" -lt "$need_kib" ]; then
            echo "[with-env] not enough disk for $venv: $((free_kib / 1024)) MiB free on $(dirname "$venv")," \
                "the environment needs about 7168 MiB (torch's CUDA wheels). Free space there, point TUBEMASK_VENV" \
                "at a larger disk, or set TUBEMASK_SKIP_DISK_CHECK=1 to try anyway." >&2
            exit 1
        fi
    fi
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q --no-cache-dir -c constraints.txt -e ".[dev,docs]"
    echo "$want" > "$stamp"
fi
exec 9>&-  # release the lock (a no-op without flock)
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
exec "$@"
