#!/usr/bin/env bash
# Download, on this machine, the pure-Python wheels that the GPU machine lacks (Python 3.12, torch 2.11, no beartype,
# tyro or pytest promised there) into the git-ignored .whl/ of the checkout. Carry .whl/ to the GPU machine with the
# checkout; scripts/gpu_check.sh (and scripts/compat-check.sh) install them there through scripts/carried-wheels.sh.
#
#   bash scripts/fetch-gpu-wheels.sh [DEST]      # DEST defaults to <repo>/.whl
#
# What travels and why (versions pinned from constraints.txt, the stack tested here):
#   beartype                                   tubemask.shapes imports it (runtime shape checks)
#   tyro, docstring_parser, typeguard,         the recipes' command lines (tyro 1.0 needs exactly these three;
#   typing_extensions                          typing_extensions is there with torch, carried for tyro's >= 4.13)
#   pytest, pluggy, iniconfig, Pygments        the CUDA tests, in case the machine has no pytest (it is not promised)
# Everything else the check needs (numpy, einops, jaxtyping and wadler_lindig, transformers and its typer/rich, timm,
# hypothesis, packaging) is on that machine. The download refuses to leave more than 64 MiB (the carry limit).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/.whl}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
limit_bytes=$((64 * 1024 * 1024))
packages=(beartype tyro docstring_parser typeguard typing_extensions pytest pluggy iniconfig Pygments)

# The pin of a package in constraints.txt (names compared as pip does: case and -_. folded), or nothing.
pin() {
    local want line name
    want="$(echo "$1" | tr 'A-Z_.' 'a-z--')"
    while IFS= read -r line; do
        case "$line" in '#'* | '') continue ;; esac
        name="$(echo "${line%%==*}" | tr 'A-Z_.' 'a-z--')"
        if [ "$name" = "$want" ] && [ "$line" != "${line%%==*}" ]; then
            echo "${line#*==}"
            return
        fi
    done <"$root/constraints.txt"
}

specs=()
for package in "${packages[@]}"; do
    version="$(pin "$package")"
    specs+=("$package${version:+==$version}")
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "[fetch-gpu-wheels] downloading for CPython 3.12 manylinux x86_64: ${specs[*]}"
"$py" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --no-deps -d "$tmp" "${specs[@]}" 2>&1 |
    grep -v "is ignored: it is neither a file nor a directory" || true

shopt -s nullglob
got=("$tmp"/*.whl)
if [ "${#got[@]}" -ne "${#packages[@]}" ]; then
    echo "[fetch-gpu-wheels] expected ${#packages[@]} wheels, got ${#got[@]}: ${got[*]##*/}" >&2
    exit 1
fi
for wheel in "${got[@]}"; do
    case "$wheel" in
        *-none-any.whl) ;;
        *) echo "[fetch-gpu-wheels] ${wheel##*/} is not a pure-Python wheel; it may not install on the GPU machine" >&2 ;;
    esac
done
total=$(cat "${got[@]}" | wc -c)
if [ "$total" -gt "$limit_bytes" ]; then
    echo "[fetch-gpu-wheels] the wheels take $total bytes, over the 64 MiB that travels with the checkout;" \
        "nothing was written to $dest" >&2
    exit 1
fi
mkdir -p "$dest"
rm -f "$dest"/*.whl # stale pins would install beside the new ones
mv "${got[@]}" "$dest"/
for wheel in "$dest"/*.whl; do
    printf '  %8d  %s\n' "$(wc -c <"$wheel")" "${wheel##*/}"
done
mib="$(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }')"
echo "[fetch-gpu-wheels] ${#got[@]} wheels, $total bytes ($mib MiB; limit 64 MiB) in $dest"
echo "[fetch-gpu-wheels] carry .whl/ with the checkout to the GPU machine, then run there: bash scripts/gpu_check.sh OUTDIR"
