"""The fault suite's fixtures and its table at the end of the session."""

from __future__ import annotations

import pytest

from tests.faults.harness import table

RESULTS: list = []  # (case, result) of every fault case run in this session


@pytest.fixture(scope="session")
def fault_shared() -> dict:
    return {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if RESULTS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(table(RESULTS))
