#!/usr/bin/env bash
# The project's full check: lint, docs build, then every test (slow ones included).
# Run it through scripts/with-env.sh so that the environment exists: bash scripts/with-env.sh bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== ruff"
ruff check tubemask tests recipes benchmarks scripts docs/*.py
ruff format --check tubemask tests recipes benchmarks scripts docs/*.py
echo "== mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest"
# hypothesis's derandomized `ci` profile (tests/conftest.py): the same examples on every run of this gate;
# HYPOTHESIS_PROFILE=default bash scripts/test.sh draws fresh ones, as plain `pytest` does.
python -m pytest --hypothesis-profile="${HYPOTHESIS_PROFILE:-ci}" "$@"
