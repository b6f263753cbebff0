# Sourced (not run) by scripts/gpu_check.sh and scripts/compat-check.sh, so that the emulated GPU stack installs the
# carried wheels exactly as the GPU machine does. Defines two functions:
#
#   install_carried_wheels PYTHON [WHEEL_DIR]
#       When WHEEL_DIR (default: <repo>/.whl, filled by scripts/fetch-gpu-wheels.sh) holds wheels, installs them with
#       `PYTHON -m pip install --no-deps --no-index --target DIR` into a fresh temporary DIR (or, without pip, unpacks
#       them there: they are pure-Python wheels; 20 s timeout) and puts DIR first on PYTHONPATH. Sets CARRIED_SITE to DIR, or to ""
#       when there is nothing to install. Returns non-zero when the install fails.
#   check_tubemask_import PYTHON
#       `PYTHON -c "import tubemask"` (under a 60 s timeout); on failure prints which module is missing and what to do, returns non-zero.

_carried_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

install_carried_wheels() {
    local py="$1" dir="${2:-$_carried_root/.whl}" wheels=() wheel
    CARRIED_SITE=""
    for wheel in "$dir"/*.whl; do
        [ -e "$wheel" ] && wheels+=("$wheel")
    done
    if [ "${#wheels[@]}" -eq 0 ]; then
        echo "[carried-wheels] no wheels in $dir: using the packages of $py as they are"
        return 0
    fi
    CARRIED_SITE="$(mktemp -d "${TMPDIR:-/tmp}/tubemask-carried-site.XXXXXX")" || return 1
    if "$py" -m pip --version >/dev/null 2>&1; then
        timeout -k 5 "${CARRIED_INSTALL_TIMEOUT:-20}" "$py" -m pip install -q --disable-pip-version-check --no-deps --no-index --target "$CARRIED_SITE" \
            "${wheels[@]}" || {
            echo "[carried-wheels] pip could not install the wheels of $dir into $CARRIED_SITE" >&2
            return 1
        }
    else # no pip: a pure-Python wheel is a zip of the files an install puts in site-packages
        "$py" - "$CARRIED_SITE" "${wheels[@]}" <<'EOF' || return 1
import sys, zipfile
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(sys.argv[1])
EOF
    fi
    export PYTHONPATH="$CARRIED_SITE${PYTHONPATH:+:$PYTHONPATH}"
    local names=("${wheels[@]##*/}")
    echo "[carried-wheels] ${#wheels[@]} wheels from $dir installed into $CARRIED_SITE (first on PYTHONPATH):" \
        "${names[*]%%-py3-none-any.whl}"
}

check_tubemask_import() {
    local py="$1" error missing
    if error="$(timeout -k 5 "${CARRIED_IMPORT_TIMEOUT:-60}" "$py" -c "import tubemask" 2>&1)"; then
        return 0
    fi
    missing="$(printf '%s\n' "$error" | sed -n "s/.*No module named '\([^']*\)'.*/\1/p" | tail -n 1)"
    if [ -n "$missing" ]; then
        echo "[carried-wheels] import tubemask failed with $py: module '${missing%%.*}' is missing. Run" \
            "'bash scripts/fetch-gpu-wheels.sh' on a machine with PyPI (it fills .whl/; add the package there if it" \
            "is not listed) and carry .whl/ with the checkout." >&2
    else
        echo "[carried-wheels] import tubemask failed with $py:" >&2
    fi
    printf '%s\n' "$error" | tail -n 5 >&2
    return 1
}
