"""Fixtures that run a Lattice server on loopback and connect matrix-nio clients to it.

Each test gets its own server process with a fresh data directory, so tests
cannot see each other's users or rooms. The server's stdout and stderr go to a log
file that is attached to the report of any test that fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from nio import AsyncClient, AsyncClientConfig, RegisterResponse

from matrix_helpers import expect

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "target" / "release" / "lattice"
SERVER_NAME = "localhost"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PASSWORD = "correct horse battery staple"

# Bounds every HTTP request that nio makes: one retry after a connection error
# or timeout, no retries after HTTP 429, and at most 30 s per request.
CLIENT_CONFIG = AsyncClientConfig(
    max_timeouts=1,
    max_limit_exceeded=0,
    request_timeout=30,
    store_sync_tokens=False,
    encryption_enabled=False,
)

# Sent straight to the server, never through a proxy from the environment.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Settings of the [policy] section when a test has no lattice_policy marker.
DEFAULT_POLICY: dict[str, str | int] = {"name": "open"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lattice_policy(**settings): start the test's server with these [policy] settings "
        'in place of name = "open", e.g. lattice_policy(name="professional", max_group_size=3)',
    )
    config.addinivalue_line(
        "markers",
        "lattice_appservice: register an application service (bridge) with the test's server; "
        "the appservice_registration fixture returns its port, tokens and namespaces",
    )


class AppServiceRegistration:
    """An application service registration that the server loads at start."""

    def __init__(self, data_dir: Path) -> None:
        self.id = "test-bridge"
        self.port = _free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.as_token = secrets.token_hex(16)
        self.hs_token = secrets.token_hex(16)
        self.sender_localpart = "_bridge_bot"
        self.user_prefix = "_bridge_"
        self.path = data_dir / "bridge-registration.yaml"
        self.path.write_text(
            f'id: "{self.id}"\n'
            f'url: "{self.url}"\n'
            f'as_token: "{self.as_token}"\n'
            f'hs_token: "{self.hs_token}"\n'
            f'sender_localpart: "{self.sender_localpart}"\n'
            "rate_limited: false\n"
            "receive_ephemeral: true\n"
            "namespaces:\n"
            "  users:\n"
            "    - exclusive: true\n"
            f'      regex: "@{self.user_prefix}.*:{SERVER_NAME}"\n'
            "  aliases: []\n"
            "  rooms: []\n"
        )


def _toml_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_config(
    data_dir: Path,
    port: int,
    policy: dict[str, str | int],
    appservice: AppServiceRegistration | None = None,
) -> Path:
    config_path = data_dir / "lattice.toml"
    policy_lines = "".join(f"{key} = {_toml_value(value)}\n" for key, value in policy.items())
    registrations = f"[{_toml_value(str(appservice.path))}]" if appservice is not None else "[]"
    config_path.write_text(
        f'server_name = "{SERVER_NAME}"\n'
        f'data_dir = "{data_dir}"\n'
        "\n"
        "[listen]\n"
        f'client = "127.0.0.1:{port}"\n'
        "\n"
        "[registration]\n"
        "enabled = true\n"
        "\n"
        "[policy]\n"
        f"{policy_lines}"
        "\n"
        "[rate_limits]\n"
        "enabled = false\n"
        "\n"
        "[appservice]\n"
        f"registrations = {registrations}\n"
    )
    return config_path


def _read_log(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no server log was written)"


def _wait_until_ready(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    """Poll GET /_matrix/client/versions until it returns 200, for at most READY_TIMEOUT_S."""
    url = f"{base_url}/_matrix/client/versions"
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = "no request sent"

    while time.monotonic() < deadline:
        exit_code = process.poll()
        if exit_code is not None:
            pytest.fail(
                f"lattice exited with code {exit_code} before {url} returned 200.\n"
                f"Server log:\n{_read_log(log_path)}"
            )

        try:
            with _DIRECT_OPENER.open(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last_error = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)

        time.sleep(0.1)

    pytest.fail(
        f"lattice did not answer {url} with 200 within {READY_TIMEOUT_S:.0f} s "
        f"(last error: {last_error}).\nServer log:\n{_read_log(log_path)}"
    )


def _stop(process: subprocess.Popen) -> None:
    """Send SIGTERM to the server by PID, then SIGKILL if it has not exited in time."""
    if process.poll() is not None:
        return

    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the server log to the report of a test that failed while its server ran."""
    report = yield
    log_path = getattr(item, "lattice_log_path", None)
    if log_path is not None and report.when == "call" and report.failed:
        report.sections.append(("lattice server log", _read_log(log_path)))
    return report


@pytest.fixture
def homeserver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Start lattice on a free loopback port and yield its base URL.

    The policy is `open` unless the test carries a lattice_policy marker, whose
    keyword arguments become the [policy] section.
    """
    binary = Path(os.environ.get("LATTICE_BIN", DEFAULT_BINARY))
    if not binary.is_file():
        pytest.fail(
            f"lattice binary not found at {binary}. "
            "Build it with `cargo build --release` in the repository root, "
            "or set LATTICE_BIN to its path."
        )

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = _free_loopback_port()
    marker = request.node.get_closest_marker("lattice_policy")
    policy = dict(marker.kwargs) if marker is not None else DEFAULT_POLICY
    appservice = None
    if request.node.get_closest_marker("lattice_appservice") is not None:
        appservice = AppServiceRegistration(data_dir)
        request.node.lattice_appservice = appservice
    config_path = _write_config(data_dir, port, policy, appservice)
    log_path = tmp_path / "lattice.log"
    base_url = f"http://127.0.0.1:{port}"

    # LATTICE_* variables set the same keys as the config file, so the child gets none of them.
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("LATTICE_")}
    # Plain text keeps the log readable in the test report.
    child_env["NO_COLOR"] = "1"

    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(binary), "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=tmp_path,
        )

    request.node.lattice_log_path = log_path
    try:
        _wait_until_ready(process, base_url, log_path)
        yield base_url
    finally:
        _stop(process)


@pytest.fixture
def appservice_registration(request: pytest.FixtureRequest, homeserver: str) -> AppServiceRegistration:
    """The application service registration of a test marked lattice_appservice."""
    registration = getattr(request.node, "lattice_appservice", None)
    if registration is None:
        pytest.fail("appservice_registration needs the lattice_appservice marker on the test")
    return registration


@pytest.fixture
async def new_client(homeserver: str) -> AsyncIterator[Callable[[str], AsyncClient]]:
    """Yield a factory of nio clients for the test's server, and close them all at the end."""
    clients: list[AsyncClient] = []

    def make(user: str = "") -> AsyncClient:
        client = AsyncClient(homeserver, user, config=CLIENT_CONFIG)
        clients.append(client)
        return client

    yield make

    for client in clients:
        await client.close()


@pytest.fixture
def register_user(new_client: Callable[[str], AsyncClient]) -> Callable[[str], Awaitable[AsyncClient]]:
    """Return a coroutine function that registers a local user and returns its logged-in client."""

    async def register(localpart: str) -> AsyncClient:
        client = new_client(localpart)
        response = expect(await client.register(localpart, PASSWORD, device_name=f"{localpart} phone"), RegisterResponse)
        assert response.user_id == f"@{localpart}:{SERVER_NAME}"
        assert client.access_token == response.access_token
        return client

    return register
