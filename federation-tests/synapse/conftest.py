"""Fixtures of the Synapse scenarios: Lattice servers and one Synapse peer on loopback.

Synapse runs as `127.0.0.10` (federation on port 8448, the default port of a
server name without one) next to the Lattice servers of the root fixtures.
Its ports are fixed, so two runs of the suite at once on one machine need
different addresses: `FEDERATION_TESTS_SYNAPSE_IP` picks another one in
127.0.0.0/8.
Each test gets a fresh Synapse with an empty SQLite database. The warnings and
errors of Synapse's log are attached to the report of a failed test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.ca import TestCA
from harness.lattice import LatticeServer, lattice_binary
from harness.synapse import Synapse

SYNAPSE_IP = os.environ.get("FEDERATION_TESTS_SYNAPSE_IP", "127.0.0.10")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed:
        for server in getattr(item, "synapse_servers", []):
            report.sections.append((f"warnings of Synapse {server.server_name}", server.log_tail()))
    return report


@pytest.fixture
def start_synapse(request: pytest.FixtureRequest, tmp_path: Path, ca: TestCA) -> Iterator[Callable[..., Synapse]]:
    """A function that starts Synapse, federating with the given Lattice servers."""
    started: list[Synapse] = []
    request.node.synapse_servers = started

    def start(peers: list[LatticeServer]) -> Synapse:
        certificate = ca.issue(SYNAPSE_IP, tmp_path / "synapse-tls")
        server = Synapse(
            tmp_path / "synapse",
            SYNAPSE_IP,
            certificate.cert_path,
            certificate.key_path,
            ca.cert_path,
            [peer.server_name for peer in peers],
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def lattice(request: pytest.FixtureRequest, tmp_path: Path, ca: TestCA) -> Iterator[LatticeServer]:
    """One Lattice server on 127.0.0.2 (policy `open`, or the test's `lattice_policy` marker)."""
    marker = request.node.get_closest_marker("lattice_policy")
    policy = dict(marker.kwargs) if marker is not None else None
    server = LatticeServer("127.0.0.2", tmp_path / "127.0.0.2", ca, binary=lattice_binary(), policy=policy)
    request.node.lattice_servers = [server]
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def synapse(lattice: LatticeServer, start_synapse: Callable[..., Synapse]) -> Synapse:
    """Synapse on SYNAPSE_IP, federating with the `lattice` server."""
    return start_synapse([lattice])
