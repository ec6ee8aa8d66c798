"""Start, stop and restart Lattice servers that federate with each other on loopback.

A `LatticeServer` owns a data directory (its SQLite database, signing key and
configuration) that survives `stop()`, so `start()` again is a restart of the
same homeserver. Its server name is `<ip>:<federation port>`, e.g.
`127.0.0.2:34127`: an IP literal with an explicit port, which other servers
reach with no DNS and no discovery, over TLS with a certificate for that IP
from the test CA. The plain-HTTP client listener uses another port on the
same address.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from .ca import TestCA
from .client import MatrixClient, MatrixError, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "target" / "release" / "lattice"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PASSWORD = "correct horse battery staple"


def lattice_binary() -> Path:
    """Return the path of the server binary: LATTICE_BIN, or target/release/lattice of this repository."""
    binary = Path(os.environ.get("LATTICE_BIN", DEFAULT_BINARY))
    if not binary.is_file():
        raise FileNotFoundError(
            f"lattice binary not found at {binary}; build it with `cargo build --release` "
            "or set LATTICE_BIN to its path"
        )
    return binary


def free_port(ip: str) -> int:
    """Find a TCP port that is free on `ip` now (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class LatticeServer:
    """One Lattice homeserver on its own loopback address.

    `policy` becomes the `[policy]` section (default: plain Matrix, `open`);
    `extra_config` maps dotted keys such as `"federation.sender_retry_max_ms"`
    to values and overrides the defaults below.
    """

    def __init__(
        self,
        ip: str,
        directory: Path,
        ca: TestCA,
        binary: Path | None = None,
        policy: dict[str, Any] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.ip = ip
        self.directory = directory
        self.data_dir = directory / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or lattice_binary()
        self.federation_port = free_port(ip)
        self.client_port = free_port(ip)
        self.server_name = f"{ip}:{self.federation_port}"
        self.client_url = f"http://{ip}:{self.client_port}"
        self.federation_url = f"https://{ip}:{self.federation_port}"
        self.ca = ca
        self.certificate = ca.issue(ip, directory / "tls")
        self.config_path = directory / "lattice.toml"
        self.log_path = directory / "lattice.log"
        self.policy = policy or {"name": "open"}
        self.extra_config = extra_config or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.clients: list[MatrixClient] = []
        self._write_config()

    def __repr__(self) -> str:
        return f"LatticeServer({self.server_name})"

    # -- configuration --------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "server_name": self.server_name,
            "data_dir": str(self.data_dir),
            "public_baseurl": self.client_url,
            "listen.client": f"{self.ip}:{self.client_port}",
            "listen.federation": f"{self.ip}:{self.federation_port}",
            "registration.enabled": True,
            "rate_limits.enabled": False,
            "federation.tls_certificate": str(self.certificate.cert_path),
            "federation.tls_private_key": str(self.certificate.key_path),
            "federation.tls_ca_file": str(self.ca.cert_path),
            "federation.request_timeout_secs": 10,
            # A stopped server must get its backlog soon after it is back.
            "federation.sender_retry_initial_ms": 500,
            "federation.sender_retry_max_ms": 2000,
        }
        settings.update({f"policy.{key}": value for key, value in self.policy.items()})
        settings.update(self.extra_config)
        return settings

    def _write_config(self) -> None:
        top: list[str] = []
        sections: dict[str, list[str]] = {}
        for key, value in self._settings().items():
            section, _, name = key.rpartition(".")
            line = f"{name} = {_toml(value)}"
            if section:
                sections.setdefault(section, []).append(line)
            else:
                top.append(line)
        text = "\n".join(top) + "\n"
        for section, lines in sections.items():
            text += f"\n[{section}]\n" + "\n".join(lines) + "\n"
        self.config_path.write_text(text)

    # -- process --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process and wait until both listeners respond."""
        assert not self.running, f"{self} is already running"
        # LATTICE_* variables set the same keys as the config file, so the child gets none of them.
        env = {key: value for key, value in os.environ.items() if not key.startswith("LATTICE_")}
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_LOG", "info,ruma_state_res=warn,lattice::federation=debug,lattice::api::federation=debug")
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(self.binary), "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.directory,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = "no request sent"
        checks = [
            (f"{self.client_url}/_matrix/client/versions", True),
            (f"{self.federation_url}/_matrix/federation/v1/version", self.ca.ssl_context()),
        ]
        for url, verify in checks:
            while True:
                assert self.process is not None
                code = self.process.poll()
                if code is not None:
                    raise RuntimeError(f"{self} exited with code {code} while starting:\n{self.log_tail()}")
                try:
                    response = httpx.get(url, timeout=2, verify=verify, trust_env=False)
                    if response.status_code == 200:
                        break
                    last_error = f"HTTP {response.status_code}"
                except httpx.HTTPError as error:
                    last_error = repr(error)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self}: {url} did not return 200 (last error: {last_error}):\n{self.log_tail()}")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL after STOP_TIMEOUT_S. The data directory stays."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, with no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.stop()

    def log_tail(self, lines: int = 200) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log written)"

    # -- users ----------------------------------------------------------------

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def register(self, localpart: str, displayname: str | None = None) -> MatrixClient:
        """Register a user with a password and return a client logged in as them."""
        body = {
            "username": localpart,
            "password": PASSWORD,
            "initial_device_display_name": f"{localpart} laptop",
            "auth": {"type": "m.login.dummy"},
        }
        response = httpx.post(f"{self.client_url}/_matrix/client/v3/register", json=body, trust_env=False, timeout=30)
        if response.status_code == 401:
            session = response.json().get("session")
            body["auth"] = {"type": "m.login.dummy", "session": session}
            response = httpx.post(
                f"{self.client_url}/_matrix/client/v3/register", json=body, trust_env=False, timeout=30
            )
        if response.status_code != 200:
            raise MatrixError(response)
        data = response.json()
        assert data["user_id"] == self.user_id(localpart), data
        client = MatrixClient(self.client_url, data["user_id"], data["access_token"], data["device_id"])
        self.clients.append(client)
        if displayname is not None:
            client.set_displayname(displayname)
        return client

    def login(self, localpart: str) -> MatrixClient:
        """Log in again as an existing user (a second device)."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD,
            "device_id": uuid.uuid4().hex[:10].upper(),
        }
        response = httpx.post(f"{self.client_url}/_matrix/client/v3/login", json=body, trust_env=False, timeout=30)
        if response.status_code != 200:
            raise MatrixError(response)
        data = response.json()
        client = MatrixClient(self.client_url, data["user_id"], data["access_token"], data["device_id"])
        self.clients.append(client)
        return client

    # -- federation views -----------------------------------------------------

    def key_document(self) -> dict[str, Any]:
        """This server's `/_matrix/key/v2/server`, fetched over TLS trusting the test CA."""
        response = httpx.get(
            f"{self.federation_url}/_matrix/key/v2/server",
            verify=self.ca.ssl_context(),
            trust_env=False,
            timeout=10,
        )
        response.raise_for_status()
        return response.json()


def wait_for_servers_to_agree(
    clients: Iterable[MatrixClient],
    room_id: str,
    view: Callable[[MatrixClient, str], Any],
    description: str,
    timeout_s: float = 30.0,
) -> Any:
    """Wait until view(client, room_id) returns the same value for every client, and return it."""
    clients = list(clients)
    last: list[Any] = []

    def agree() -> Any:
        last[:] = [view(client, room_id) for client in clients]
        return last[0] if all(value == last[0] for value in last) else None

    try:
        return wait_until(agree, description, timeout_s)
    except AssertionError as error:
        views = "\n".join(f"  {client.user_id}: {value}" for client, value in zip(clients, last))
        raise AssertionError(f"{error}; the last views were:\n{views}") from None
