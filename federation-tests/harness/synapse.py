"""Start, register users on and stop a Synapse homeserver as a federation peer.

Synapse (PyPI `matrix-synapse`) runs as a child process from the suite's
virtualenv. It listens on one loopback address only: plain HTTP for the
Client-Server API on port 8008 and HTTPS for federation on port 8448, with a
certificate from the test CA. Its server name is that IP address, so no DNS
and no well-known lookup is involved.

Synapse blocks federation to private and loopback addresses by default, so
the generated configuration lists every reserved range in
`ip_range_blacklist` except 127.0.0.0/8, and `federation_domain_whitelist`
limits it to the servers of the test. `trusted_key_servers` is empty, so it
fetches every server's keys from that server and never contacts a notary.
"""

from __future__ import annotations

import base64
import secrets
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from .client import MatrixClient, MatrixError

CLIENT_PORT = 8008
PASSWORD = "correct horse battery staple"
FEDERATION_PORT = 8448

# The reserved ranges Synapse blocks by default, less 127.0.0.0/8 and ::1:
# the test servers all listen on loopback.
BLOCKED_RANGES = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]

# Rate limits far above what a test sends, so no test sees 429.
UNLIMITED = {"per_second": 10000, "burst_count": 10000}
SECRET_KEYS = ["registration_shared_secret", "macaroon_secret_key", "form_secret"]

RATE_LIMIT_KEYS = [
    "rc_message",
    "rc_registration",
    "rc_joins_per_room",
    "rc_invites",
    "rc_3pid_validation",
    "rc_admin_redaction",
    "rc_presence",
    "rc_room_creation",
    "rc_media_create",
    "rc_delayed_event_mgmt",
    "rc_reports",
]


class Synapse:
    """One Synapse process with its configuration and data under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        address: str,
        certificate: Path,
        private_key: Path,
        ca_file: Path | None,
        peers: list[str],
    ):
        """Prepare a server named `address` (an IP literal on loopback).

        `certificate` and `private_key` are PEM files for the federation
        listener. `ca_file` is the CA that signs the peers' certificates;
        without it, outbound federation does not verify certificates.
        `peers` are the server names this server may federate with.
        """
        self.workdir = Path(workdir).resolve()
        self.address = address
        self.server_name = address
        self.certificate = Path(certificate).resolve()
        self.private_key = Path(private_key).resolve()
        self.ca_file = Path(ca_file).resolve() if ca_file else None
        self.peers = list(peers)
        self.process: subprocess.Popen | None = None
        self.clients: list[MatrixClient] = []
        self.client_url = f"http://{address}:{CLIENT_PORT}"
        self.federation_url = f"https://{address}:{FEDERATION_PORT}"
        self.log_file = self.workdir / "homeserver.log"
        self.config_file = self.workdir / "homeserver.yaml"
        self.secrets = {key: secrets.token_hex(16) for key in SECRET_KEYS}
        self._write_config()

    def set_peers(self, peers: list[str]) -> None:
        """Change the servers this one may federate with; applies from the next start."""
        self.peers = list(peers)
        self._write_config()

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        signing_key = self.workdir / "signing.key"
        if not signing_key.exists():
            # Synapse's key file format: algorithm, key version, unpadded base64 seed.
            seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            signing_key.write_text(f"ed25519 a_{secrets.token_hex(2)} {seed}\n")
        log_config = self.workdir / "log.yaml"
        log_config.write_text(yaml.safe_dump(self._log_config()))
        config = {
            "server_name": self.server_name,
            "pid_file": str(self.workdir / "homeserver.pid"),
            "public_baseurl": self.client_url + "/",
            "listeners": [
                {
                    "port": CLIENT_PORT,
                    "bind_addresses": [self.address],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client", "media"], "compress": False}],
                },
                {
                    "port": FEDERATION_PORT,
                    "bind_addresses": [self.address],
                    "type": "http",
                    "tls": True,
                    "resources": [{"names": ["federation", "keys", "media"], "compress": False}],
                },
            ],
            "tls_certificate_path": str(self.certificate),
            "tls_private_key_path": str(self.private_key),
            "federation_verify_certificates": self.ca_file is not None,
            "database": {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(self.workdir / "media"),
            "signing_key_path": str(signing_key),
            "report_stats": False,
            "enable_metrics": False,
            "url_preview_enabled": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "ip_range_blacklist": BLOCKED_RANGES,
            "federation_domain_whitelist": sorted(set(self.peers + [self.server_name])),
            "enable_registration": True,
            "enable_registration_without_verification": True,
            **self.secrets,
            # Build every /sync response afresh, because a cached response can hide an
            # event for two minutes.
            "caches": {"sync_response_cache_duration": 0},
            "presence": {"enabled": True},
            "allow_public_rooms_over_federation": True,
            "allow_public_rooms_without_auth": True,
            "room_list_publication_rules": [{"action": "allow"}],
            "max_upload_size": "50M",
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
            # Retry a destination that was down after at most a few seconds, so
            # a restarted peer gets its backlog within the test's wait.
            "federation": {
                "destination_min_retry_interval": 500,
                "destination_retry_multiplier": 2,
                "destination_max_retry_interval": 4000,
            },
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 10000,
                "sleep_delay": 0,
                "reject_limit": 10000,
                "concurrent": 100,
            },
        }
        for key in RATE_LIMIT_KEYS:
            config[key] = UNLIMITED
        if self.ca_file is not None:
            config["federation_custom_ca_list"] = [str(self.ca_file)]
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def _log_config(self) -> dict:
        return {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(request)s %(message)s"}},
            "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(self.log_file),
                    "formatter": "plain",
                    "filters": ["context"],
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }

    def start(self, timeout: float = 120.0) -> None:
        """Start the process and wait until both listeners respond.

        The first start creates the database, which takes Synapse a few seconds.
        """
        assert self.process is None, "Synapse is already running"
        stdout = open(self.workdir / "stdout.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_file)],
            cwd=self.workdir,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
        stdout.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"Synapse exited with {code} during start-up; see {self.workdir}/stdout.log")
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Synapse did not respond within {timeout} s; see {self.log_file}")
            time.sleep(0.25)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _answers(self) -> bool:
        verify = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else False
        try:
            client = httpx.get(f"{self.client_url}/_matrix/client/versions", timeout=2, trust_env=False)
            keys = httpx.get(
                f"{self.federation_url}/_matrix/key/v2/server", timeout=2, verify=verify, trust_env=False
            )
        except httpx.HTTPError:
            return False
        return client.status_code == 200 and keys.status_code == 200

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the process by its PID: SIGTERM, then SIGKILL after `timeout`."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def register(self, localpart: str, displayname: str | None = None) -> MatrixClient:
        """Register `localpart` through the open `/register` and return a client logged in as them."""
        body = {
            "username": localpart,
            "password": PASSWORD,
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": f"{localpart} laptop",
        }
        response = httpx.post(f"{self.client_url}/_matrix/client/v3/register", json=body, trust_env=False, timeout=30)
        if response.status_code != 200:
            raise MatrixError(response)
        data = response.json()
        client = MatrixClient(self.client_url, data["user_id"], data["access_token"], data["device_id"])
        self.clients.append(client)
        if displayname is not None:
            client.set_displayname(displayname)
        return client

    def log_tail(self, lines: int = 200) -> str:
        """Return the last warnings and errors of Synapse's log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        notable = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]
        return "\n".join(notable[-lines:])

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.stop()
