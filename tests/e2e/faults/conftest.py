"""Fault-injection suite: prints its table at the end of the run."""

from __future__ import annotations

import pytest

from harness import ROWS, Cluster, table


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        terminalreporter.write_sep("=", "fault injection: lost and duplicated must be 0")
        terminalreporter.write_line(table())


@pytest.fixture
def cluster(tmp_path, orthanc):
    made = []

    def make(**overrides) -> Cluster:
        c = Cluster.create(tmp_path, orthanc, **overrides)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
