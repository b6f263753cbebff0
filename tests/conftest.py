"""Hypothesis profiles of the suite.

`scripts/test.sh` (the project's gate: CI and the README's test command) runs `pytest --hypothesis-profile=ci`:
derandomized, so every run of the gate tries the same examples for the same test code and a red or green result
reproduces on any machine; no example database (a fresh clone has none); a failure prints the blob that replays it
(`@reproduce_failure`). Plain `pytest` keeps hypothesis's `default` profile, fresh examples on every run, which is
where exploring belongs. Registered here rather than relying on hypothesis's built-in `ci` profile (the same
settings), which older releases allowed by `pyproject.toml` lack. Per-test `max_examples` stay in the test modules.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
