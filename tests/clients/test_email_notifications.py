"""Scenario: email addresses and notification emails, against a real SMTP server.

An aiosmtpd server on loopback receives every email that lattice sends. The
tests verify an address through the link in its verification email, add it
with /account/3pid/add and set up an email pusher. Then they check which
notification emails arrive: one after the configured delay, none when the
message was read in time, at most one per conversation and period. The
emails must have sanitized HTML and a working unsubscribe link. They talk HTTP directly because matrix-nio
has no 3PID or pusher API.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import PASSWORD

# Sent straight to the server, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

NOTIFICATION_DELAY_S = 2
EMAIL_SETTINGS = {
    "notification_delay_secs": NOTIFICATION_DELAY_S,
    "notification_period_secs": 60,
    "from": "Lattice <noreply@localhost>",
}


@dataclass
class Mailbox:
    """The emails an SMTP server received, parsed."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 OK"

    def received(self, subject_part: str = "") -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if subject_part in str(m["Subject"])]

    def wait_for(self, subject_part: str, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.received(subject_part)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        pytest.fail(f"expected {count} email(s) with {subject_part!r} in the subject, got {len(self.received(subject_part))}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server():
    mailbox = Mailbox(port=_free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """Send one request and return the status and the decoded JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def fetch_page(url: str, form: dict[str, str] | None = None) -> tuple[int, str]:
    data = None if form is None else urllib.parse.urlencode(form).encode()
    try:
        with _OPENER.open(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@dataclass
class User:
    base: str
    user_id: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, response = call(self.base, method, path, body, self.token)
        assert status == 200, f"{method} {path}: {status} {response}"
        return response


def register(base: str, localpart: str, display_name: str) -> User:
    status, body = call(
        base,
        "POST",
        "/_matrix/client/v3/register",
        {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
    )
    assert status == 200, body
    user = User(base, body["user_id"], body["access_token"])
    user.call("PUT", f"/_matrix/client/v3/profile/{urllib.parse.quote(user.user_id)}/displayname", {"displayname": display_name})
    return user


def part(message: EmailMessage, subtype: str) -> str:
    found = message.get_body(preferencelist=(subtype,))
    assert found is not None, f"no text/{subtype} part in {message['Subject']!r}"
    return found.get_content()


def link_in(text: str, path: str) -> str:
    match = re.search(r"http://127\.0\.0\.1:\d+" + re.escape(path) + r"\?\S+", text)
    assert match, f"no {path} link in:\n{text}"
    return match.group(0)


def add_email(user: User, mailbox: Mailbox, address: str) -> None:
    """Verify `address` through the emailed link and add it to the account."""
    secret = "secret-" + address.replace("@", ".")
    sid = user.call(
        "POST",
        "/_matrix/client/v3/account/3pid/email/requestToken",
        {"client_secret": secret, "email": address, "send_attempt": 1},
    )["sid"]
    verification = mailbox.wait_for("Confirm your email address")[-1]
    assert verification["To"] == address
    status, page = fetch_page(link_in(part(verification, "plain"), "/_lattice/email/validate"))
    assert status == 200, page
    assert "confirmed" in page

    # /account/3pid/add requires the password first.
    status, challenge = call(user.base, "POST", "/_matrix/client/v3/account/3pid/add", {"client_secret": secret, "sid": sid}, user.token)
    assert status == 401, challenge
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": PASSWORD,
        "session": challenge["session"],
    }
    user.call("POST", "/_matrix/client/v3/account/3pid/add", {"client_secret": secret, "sid": sid, "auth": auth})


def set_email_pusher(user: User, address: str) -> None:
    user.call(
        "POST",
        "/_matrix/client/v3/pushers/set",
        {
            "kind": "email",
            "app_id": "m.email",
            "pushkey": address,
            "app_display_name": "Email",
            "device_display_name": address,
            "lang": "en",
            "data": {},
        },
    )


def shared_room(alice: User, bob: User, name: str) -> str:
    room_id = alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "name": name})["room_id"]
    bob.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", {})
    return room_id


def send(user: User, room_id: str, content: dict[str, Any]) -> str:
    txn = f"t{time.monotonic_ns()}"
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{txn}"
    return user.call("PUT", path, content)["event_id"]


@pytest.mark.lattice_email(**EMAIL_SETTINGS)
def test_verification_email_adds_address(homeserver: str, smtp_server: Mailbox) -> None:
    bob = register(homeserver, "bob", "Bob")
    add_email(bob, smtp_server, "bob@example.org")

    listed = bob.call("GET", "/_matrix/client/v3/account/3pid")["threepids"]
    assert [(t["medium"], t["address"]) for t in listed] == [("email", "bob@example.org")]
    assert listed[0]["validated_at"] > 0

    # Another account cannot take the same address.
    carol = register(homeserver, "carol", "Carol")
    status, body = call(
        homeserver,
        "POST",
        "/_matrix/client/v3/account/3pid/email/requestToken",
        {"client_secret": "other", "email": "bob@example.org", "send_attempt": 1},
        carol.token,
    )
    assert (status, body["errcode"]) == (400, "M_THREEPID_IN_USE")

    bob.call("POST", "/_matrix/client/v3/account/3pid/delete", {"medium": "email", "address": "bob@example.org"})
    assert bob.call("GET", "/_matrix/client/v3/account/3pid")["threepids"] == []


@pytest.mark.lattice_email(**EMAIL_SETTINGS)
def test_notification_email_after_delay(homeserver: str, smtp_server: Mailbox) -> None:
    alice = register(homeserver, "alice", "Alice")
    bob = register(homeserver, "bob", "Bob")
    add_email(bob, smtp_server, "bob@example.org")
    set_email_pusher(bob, "bob@example.org")
    room_id = shared_room(alice, bob, "Project Kestrel")

    sent_at = time.monotonic()
    send(alice, room_id, {"msgtype": "m.text", "body": "Are we on for Thursday?"})
    notification = smtp_server.wait_for("New message", timeout=NOTIFICATION_DELAY_S + 8)[0]
    assert time.monotonic() - sent_at >= NOTIFICATION_DELAY_S - 0.5, "the email waited for the delay"

    assert notification["To"] == "bob@example.org"
    assert "Alice" in str(notification["Subject"])
    assert "Project Kestrel" in str(notification["Subject"])
    text = part(notification, "plain")
    assert "Alice wrote:" in text
    assert "Are we on for Thursday?" in text
    html = part(notification, "html")
    assert "Are we on for Thursday?" in html
    assert "<b>Alice</b>" in html

    # The unsubscribe link works without logging in and removes the email pusher.
    unsubscribe = link_in(text, "/_lattice/email/unsubscribe")
    assert notification["List-Unsubscribe"] == f"<{unsubscribe}>"
    status, page = fetch_page(unsubscribe)
    assert status == 200, page
    assert "<form" in page, "the link opens a confirmation page first"
    assert bob.call("GET", "/_matrix/client/v3/pushers")["pushers"] != []
    token = urllib.parse.parse_qs(urllib.parse.urlparse(unsubscribe).query)["token"][0]
    status, page = fetch_page(unsubscribe.split("?")[0], {"token": token})
    assert status == 200, page
    assert "Unsubscribed" in page, page
    assert bob.call("GET", "/_matrix/client/v3/pushers")["pushers"] == []


@pytest.mark.lattice_email(**EMAIL_SETTINGS)
def test_no_email_when_read_in_time(homeserver: str, smtp_server: Mailbox) -> None:
    alice = register(homeserver, "alice", "Alice")
    bob = register(homeserver, "bob", "Bob")
    add_email(bob, smtp_server, "bob@example.org")
    set_email_pusher(bob, "bob@example.org")
    room_id = shared_room(alice, bob, "Read quickly")

    event_id = send(alice, room_id, {"msgtype": "m.text", "body": "quick question"})
    bob.call("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/receipt/m.read/{urllib.parse.quote(event_id)}", {})
    time.sleep(NOTIFICATION_DELAY_S + 3)
    assert smtp_server.received("New message") == []


@pytest.mark.lattice_email(**EMAIL_SETTINGS)
def test_one_email_per_conversation_per_period(homeserver: str, smtp_server: Mailbox) -> None:
    alice = register(homeserver, "alice", "Alice")
    bob = register(homeserver, "bob", "Bob")
    add_email(bob, smtp_server, "bob@example.org")
    set_email_pusher(bob, "bob@example.org")
    first_room = shared_room(alice, bob, "First room")
    second_room = shared_room(alice, bob, "Second room")

    send(alice, first_room, {"msgtype": "m.text", "body": "one"})
    send(alice, first_room, {"msgtype": "m.text", "body": "two"})
    send(alice, second_room, {"msgtype": "m.text", "body": "elsewhere"})
    smtp_server.wait_for("New message", count=2, timeout=NOTIFICATION_DELAY_S + 8)
    send(alice, first_room, {"msgtype": "m.text", "body": "three"})
    time.sleep(NOTIFICATION_DELAY_S + 3)

    subjects = sorted(str(m["Subject"]) for m in smtp_server.received("New message"))
    assert subjects == [
        "[Lattice] New message from Alice in First room",
        "[Lattice] New message from Alice in Second room",
    ]


@pytest.mark.lattice_email(**EMAIL_SETTINGS)
def test_notification_html_is_sanitized(homeserver: str, smtp_server: Mailbox) -> None:
    alice = register(homeserver, "alice", "Alice")
    bob = register(homeserver, "bob", "Bob")
    add_email(bob, smtp_server, "bob@example.org")
    set_email_pusher(bob, "bob@example.org")
    room_id = shared_room(alice, bob, "Rich text")

    formatted = (
        '<b>bold</b> <script>alert("x")</script><img src="https://images.example.net/track.png">'
        '<a href="javascript:alert(1)">bad link</a> <a href="https://example.org/ok">good link</a>'
    )
    send(alice, room_id, {"msgtype": "m.text", "body": "bold bad link good link", "format": "org.matrix.custom.html", "formatted_body": formatted})
    html = part(smtp_server.wait_for("New message", timeout=NOTIFICATION_DELAY_S + 8)[0], "html")

    assert "<b>bold</b>" in html
    assert "<script" not in html
    assert "alert" not in html
    assert "<img" not in html
    assert "images.example.net" not in html
    assert "javascript:" not in html
    assert 'href="https://example.org/ok"' in html
