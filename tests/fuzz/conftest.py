"""Hypothesis profiles for the fuzz suite, chosen by ``CTI_FUZZ_PROFILE``:

- ``fast`` (default, inside ``make test``): a few examples per property, derandomized so
  a CI run is reproducible, a few seconds in all;
- ``fuzz`` (``make fuzz``): >= 10,000 cases in all, random, examples that failed before
  replayed first (the local ``.hypothesis`` database).

No deadline in either: an example's duration never decides a test (busy machines). The
session ends with ``fuzz: N cases, M violations`` (``make fuzz`` reports that line).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.strategies import CASES

PROFILE = os.environ.get("CTI_FUZZ_PROFILE", "fast")
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "fast",
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile("fuzz", max_examples=2500, deadline=None, suppress_health_check=_SLOW_OK)
settings.load_profile(PROFILE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    # Only the fuzz properties' failures: in `make test` another module's failure is no
    # fuzz violation (it is reported by pytest as itself).
    failed = sum(
        1
        for report in terminalreporter.stats.get("failed", [])
        if getattr(report, "nodeid", "").startswith("tests/fuzz/")
    )
    terminalreporter.write_line(
        f"fuzz ({PROFILE} profile): {sum(CASES.values())} cases "
        f"({', '.join(f'{n} {c}' for n, c in sorted(CASES.items()))}), {failed} violations"
    )
