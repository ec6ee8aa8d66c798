"""A homeserver played by the test itself, to send federation input that Lattice must reject.

It listens on its own loopback address over TLS (a certificate from the test
CA), publishes a signing key at `/_matrix/key/v2/server`, accepts the
transactions that Lattice servers send it, and responds to every other request
with 404 `M_UNRECOGNIZED`. Outbound, it signs its requests with `X-Matrix` and
sends PDUs that it builds with `harness.pdu`, correct or broken on purpose.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import canonicaljson
import httpx
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from .ca import TestCA
from .lattice import free_port

KEY_VALIDITY_MS = 24 * 60 * 60 * 1000


class ScriptedServer:
    """A federation peer named `<ip>:<port>` whose every outbound byte the test decides."""

    def __init__(self, ip: str, ca: TestCA) -> None:
        self.ip = ip
        self.port = free_port(ip)
        self.server_name = f"{ip}:{self.port}"
        self.key = generate_signing_key("scripted")
        self.key_id = f"ed25519:{self.key.version}"
        self.ca = ca
        self.received_pdus: list[dict[str, Any]] = []
        certificate = ca.issue(ip)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate.cert_path, certificate.key_path)
        self._httpd = ThreadingHTTPServer((ip, self.port), self._handler_class())
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"scripted {self.server_name}", daemon=True)
        self.http = httpx.Client(verify=ca.ssl_context(), timeout=30, trust_env=False)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.http.close()
        self._httpd.shutdown()
        self._httpd.server_close()

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    # -- inbound ----------------------------------------------------------------

    def key_document(self) -> dict[str, Any]:
        document = {
            "server_name": self.server_name,
            "verify_keys": {self.key_id: {"key": encode_verify_key_base64(get_verify_key(self.key))}},
            "old_verify_keys": {},
            "valid_until_ts": int(time.time() * 1000) + KEY_VALIDITY_MS,
        }
        return sign_json(document, self.server_name, self.key)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/_matrix/key/v2/server":
                    self._reply(200, server.key_document())
                elif self.path == "/_matrix/federation/v1/version":
                    self._reply(200, {"server": {"name": "federation-tests scripted server", "version": "1"}})
                else:
                    self._reply(404, {"errcode": "M_UNRECOGNIZED", "error": "not served by the scripted server"})

            def do_PUT(self) -> None:  # noqa: N802
                body = self._body()
                if self.path.startswith("/_matrix/federation/v1/send/"):
                    server.received_pdus.extend(body.get("pdus", []))
                    self._reply(200, {"pdus": {}})
                else:
                    self._reply(404, {"errcode": "M_UNRECOGNIZED", "error": "not served by the scripted server"})

            def do_POST(self) -> None:  # noqa: N802
                self._body()
                self._reply(404, {"errcode": "M_UNRECOGNIZED", "error": "not served by the scripted server"})

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler

    # -- outbound ---------------------------------------------------------------

    def request(self, method: str, destination: str, path: str, body: Any = None) -> httpx.Response:
        """Send a request signed with `X-Matrix` to `https://<destination><path>`."""
        to_sign: dict[str, Any] = {
            "method": method,
            "uri": path,
            "origin": self.server_name,
            "destination": destination,
        }
        if body is not None:
            to_sign["content"] = body
        signature = sign_json(to_sign, self.server_name, self.key)["signatures"][self.server_name][self.key_id]
        authorization = (
            f'X-Matrix origin="{self.server_name}",destination="{destination}",'
            f'key="{self.key_id}",sig="{signature}"'
        )
        content = canonicaljson.encode_canonical_json(body) if body is not None else None
        headers = {"Authorization": authorization}
        if content is not None:
            headers["Content-Type"] = "application/json"
        return self.http.request(method, f"https://{destination}{path}", content=content, headers=headers)

    def call(self, method: str, destination: str, path: str, body: Any = None) -> Any:
        response = self.request(method, destination, path, body)
        assert response.status_code == 200, f"{method} {path} -> HTTP {response.status_code}: {response.text[:1000]}"
        return response.json()

    def make_join(self, destination: str, room_id: str, user_id: str) -> dict[str, Any]:
        path = f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(user_id, safe='')}?ver=12"
        return self.call("GET", destination, path)

    def send_join(self, destination: str, room_id: str, event_id: str, pdu: dict[str, Any]) -> dict[str, Any]:
        path = f"/_matrix/federation/v2/send_join/{quote(room_id, safe='')}/{quote(event_id, safe='')}"
        return self.call("PUT", destination, path, pdu)

    def send_transaction(self, destination: str, pdus: list[dict[str, Any]]) -> dict[str, Any]:
        """PUT one transaction with these PDUs and return the `pdus` results of the response."""
        body = {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000), "pdus": pdus, "edus": []}
        return self.call("PUT", destination, f"/_matrix/federation/v1/send/{uuid.uuid4().hex}", body)["pdus"]
