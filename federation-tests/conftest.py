"""Fixtures of the federation scenarios: a test CA and three Lattice servers on loopback.

Each test gets fresh servers with empty SQLite databases on 127.0.0.2,
127.0.0.3 and 127.0.0.4, so tests cannot see each other's users or rooms.
The logs of every server of a failed test are attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ca import TestCA
from harness.lattice import LatticeServer, lattice_binary

SERVER_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lattice_policy(**settings): start every Lattice server of the test with these [policy] "
        'settings in place of name = "open", e.g. lattice_policy(name="professional")',
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the logs of the test's servers to the report of a failed test."""
    report = yield
    if report.when == "call" and report.failed:
        for server in getattr(item, "lattice_servers", []):
            report.sections.append((f"log of {server.server_name}", server.log_tail()))
    return report


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "ca")


@pytest.fixture
def servers(request: pytest.FixtureRequest, tmp_path: Path, ca: TestCA) -> Iterator[list[LatticeServer]]:
    """Start three Lattice servers that trust the test CA, and yield them in the order of SERVER_IPS."""
    marker = request.node.get_closest_marker("lattice_policy")
    policy = dict(marker.kwargs) if marker is not None else None
    binary = lattice_binary()
    started: list[LatticeServer] = []
    request.node.lattice_servers = started
    try:
        for ip in SERVER_IPS:
            server = LatticeServer(ip, tmp_path / ip, ca, binary=binary, policy=policy)
            started.append(server)
            server.start()
        yield started
    finally:
        for server in started:
            server.close()
