"""Federation input that breaks the rules never reaches users.

A scripted server on 127.0.0.5 (the test plays it: its own signing key, key
endpoint over TLS, hand-made PDUs) joins alice's public room on server A as
@mallory. It then sends transactions with one broken PDU each, followed by a
valid message. The Lattice server must reject each broken PDU as the
Server-Server API's "Checks performed on receipt of a PDU" require, while the
valid message that follows still arrives:

- a bad signature: rejected;
- a content hash that does not match: stored only in its redacted form, so
  the body never shows;
- a sender on another server than the one that signed it: rejected;
- an event that fails the authorization rules: rejected;
- an event that passes against the state before it but not against the
  current state: soft-failed, so not shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import generate_signing_key

from harness import pdu
from harness.ca import TestCA
from harness.client import MatrixClient
from harness.lattice import LatticeServer
from harness.scripted_server import ScriptedServer

SCRIPTED_IP = "127.0.0.5"


@pytest.fixture
def server_a(request: pytest.FixtureRequest, tmp_path: Path, ca: TestCA) -> Iterator[LatticeServer]:
    server = LatticeServer("127.0.0.2", tmp_path / "127.0.0.2", ca)
    request.node.lattice_servers = [server]
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def scripted(ca: TestCA) -> Iterator[ScriptedServer]:
    server = ScriptedServer(SCRIPTED_IP, ca)
    server.start()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Room:
    """Alice's room on server A, with the event ids that the scripted server builds on after mallory joined."""

    room_id: str
    alice: MatrixClient
    mallory: str
    power_levels_id: str
    mallory_join_id: str
    latest_id: str
    latest_depth: int


def _join_as_mallory(server_a: LatticeServer, scripted: ScriptedServer) -> Room:
    alice = server_a.register("alice")
    room_id = alice.create_room(preset="public_chat", name="Open room")
    mallory = scripted.user_id("mallory")

    template = scripted.make_join(server_a.server_name, room_id, mallory)
    assert template["room_version"] == "12"
    join = dict(template["event"])
    join["origin_server_ts"] = int(time.time() * 1000)
    join_id, join = pdu.finish(join, scripted.server_name, scripted.key)
    response = scripted.send_join(server_a.server_name, room_id, join_id, join)
    assert any(event["type"] == "m.room.create" for event in response["auth_chain"] + response["state"])

    seen = alice.wait_for_event(
        room_id,
        lambda e: e["type"] == "m.room.member" and e["state_key"] == mallory and e["content"]["membership"] == "join",
        "mallory's join",
    )
    # The harness computes event ids as Lattice does, or nothing below means anything.
    assert seen["event_id"] == join_id
    power_levels_id = next(e["event_id"] for e in alice.room_state(room_id) if e["type"] == "m.room.power_levels")
    return Room(room_id, alice, mallory, power_levels_id, join_id, join_id, join["depth"])


def _message(room: Room, scripted: ScriptedServer, body: str, **overrides: Any) -> dict[str, Any]:
    """An unsigned m.room.message from mallory after the latest event the scripted server sent."""
    event = {
        "type": "m.room.message",
        "room_id": room.room_id,
        "sender": room.mallory,
        "content": {"msgtype": "m.text", "body": body},
        "auth_events": [room.power_levels_id, room.mallory_join_id],
        "prev_events": [room.latest_id],
        "depth": room.latest_depth + 1,
        "origin_server_ts": int(time.time() * 1000),
    }
    event.update(overrides)
    return event


def _send_valid(room: Room, scripted: ScriptedServer, server: LatticeServer, body: str) -> str:
    """Send a correct message from mallory, check that alice receives it, and make it the latest event."""
    event_id, event = pdu.finish(_message(room, scripted, body), scripted.server_name, scripted.key)
    results = scripted.send_transaction(server.server_name, [event])
    assert results.get(event_id) == {}, results
    assert room.alice.wait_for_text(room.room_id, body)["event_id"] == event_id
    room.latest_id, room.latest_depth = event_id, event["depth"]
    return event_id


def _assert_never_shown(room: Room, event_id: str, body: str) -> None:
    """Neither /messages, /sync from the start, nor /event shows the body of the event."""
    alice = room.alice
    for event in alice.messages(room.room_id):
        assert event.get("content", {}).get("body") != body, event
    timeline = alice.initial_sync()["rooms"]["join"][room.room_id]["timeline"]["events"]
    for event in timeline:
        assert event.get("content", {}).get("body") != body, event
    response = alice.request("GET", f"/_matrix/client/v3/rooms/{room.room_id}/event/{event_id}")
    if response.status_code == 200:
        assert "body" not in response.json().get("content", {}), response.json()
    else:
        assert response.status_code == 404, response.text
        assert response.json()["errcode"] == "M_NOT_FOUND", response.text


def test_valid_events_from_the_scripted_server_arrive(server_a: LatticeServer, scripted: ScriptedServer) -> None:
    room = _join_as_mallory(server_a, scripted)
    _send_valid(room, scripted, server_a, "hello from the scripted server")
    assert room.alice.joined_members(room.room_id).keys() == {room.alice.user_id, room.mallory}


def test_bad_signature_is_rejected(server_a: LatticeServer, scripted: ScriptedServer) -> None:
    room = _join_as_mallory(server_a, scripted)
    body = "signed with a key the server does not publish"
    # Same key id, other key: the signature cannot verify against the published key.
    impostor_key = generate_signing_key(scripted.key.version)
    event_id, event = pdu.finish(_message(room, scripted, body), scripted.server_name, impostor_key)

    results = scripted.send_transaction(server_a.server_name, [event])
    assert "error" in results.get(event_id, {}), results

    _send_valid(room, scripted, server_a, "after the bad signature")
    _assert_never_shown(room, event_id, body)


def test_wrong_content_hash_is_stored_redacted(server_a: LatticeServer, scripted: ScriptedServer) -> None:
    room = _join_as_mallory(server_a, scripted)
    event = _message(room, scripted, "the body that was hashed")
    event_id, event = pdu.finish(event, scripted.server_name, scripted.key)
    # The signature covers the redacted event, which has no body, so it still
    # verifies; only the content hash shows that the body was changed.
    body = "a body changed after hashing"
    event["content"]["body"] = body
    assert pdu.event_id(event) == event_id

    scripted.send_transaction(server_a.server_name, [event])

    _send_valid(room, scripted, server_a, "after the wrong hash")
    _assert_never_shown(room, event_id, body)
    _assert_never_shown(room, event_id, "the body that was hashed")


def test_sender_of_another_server_is_rejected(server_a: LatticeServer, scripted: ScriptedServer) -> None:
    room = _join_as_mallory(server_a, scripted)
    # alice is a real user of server A; only A could sign an event she sends.
    body = "pretending to be alice"
    forged = _message(room, scripted, body, sender=room.alice.user_id)
    event_id, forged = pdu.finish(forged, scripted.server_name, scripted.key)

    results = scripted.send_transaction(server_a.server_name, [forged])
    assert "error" in results.get(event_id, {}), results

    _send_valid(room, scripted, server_a, "after the forged sender")
    _assert_never_shown(room, event_id, body)


def test_event_that_fails_authorization_is_rejected(server_a: LatticeServer, scripted: ScriptedServer) -> None:
    room = _join_as_mallory(server_a, scripted)
    before = room.alice.get_state(room.room_id, "m.room.power_levels")
    assert before.get("users", {}).get(room.mallory, before.get("users_default", 0)) == 0

    # mallory (power 0) makes himself an admin.
    takeover = {
        "type": "m.room.power_levels",
        "state_key": "",
        "room_id": room.room_id,
        "sender": room.mallory,
        "content": {**before, "users": {**before.get("users", {}), room.mallory: 100}},
        "auth_events": [room.power_levels_id, room.mallory_join_id],
        "prev_events": [room.latest_id],
        "depth": room.latest_depth + 1,
        "origin_server_ts": int(time.time() * 1000),
    }
    event_id, takeover = pdu.finish(takeover, scripted.server_name, scripted.key)
    results = scripted.send_transaction(server_a.server_name, [takeover])
    assert "error" in results.get(event_id, {}), results

    _send_valid(room, scripted, server_a, "after the takeover attempt")
    assert room.alice.get_state(room.room_id, "m.room.power_levels") == before
    response = room.alice.request("GET", f"/_matrix/client/v3/rooms/{room.room_id}/event/{event_id}")
    assert response.status_code == 404, response.text
    assert all(e["event_id"] != event_id for e in room.alice.messages(room.room_id))


def test_pre_ban_branch_is_soft_failed(server_a: LatticeServer, scripted: ScriptedServer) -> None:
    room = _join_as_mallory(server_a, scripted)
    _send_valid(room, scripted, server_a, "before the ban")
    room.alice.ban(room.room_id, room.mallory, reason="spam")

    # The message builds on mallory's last event, from before the ban: it
    # passes the checks against its auth events and against the state before
    # it, but fails against the room's current state.
    body = "sent from a branch that does not know about the ban"
    event_id, late = pdu.finish(_message(room, scripted, body), scripted.server_name, scripted.key)
    scripted.send_transaction(server_a.server_name, [late])

    # alice keeps talking; the soft-failed message stays invisible.
    room.alice.send_text(room.room_id, "after the ban")
    room.alice.wait_for_text(room.room_id, "after the ban")
    _assert_never_shown(room, event_id, body)
    assert room.alice.members(room.room_id)[room.mallory] == "ban"
