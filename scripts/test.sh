#!/usr/bin/env bash
# The project's full check: lint, docs build, then every test (slow ones included).
# Run it through scripts/with-env.sh so that the environment exists: bash scripts/with-env.sh bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "== ruff"
ruff check tubemask tests recipes benchmarks scripts
echo "== mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
echo "== pytest"
# Hypothesis's built-in `ci` profile (derandomize=True, no example database, print_blob=True): every run of this
# gate tries the same examples for the same test code, so a green or red result reproduces on any machine and a
# failure prints the blob that replays it. Plain `pytest` keeps the `default` profile (fresh examples each run), where
# exploring belongs. HYPOTHESIS_PROFILE=default bash scripts/test.sh explores here too.
python -m pytest --hypothesis-profile="${HYPOTHESIS_PROFILE:-ci}" "$@"
