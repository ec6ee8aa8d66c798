"""A connection request across servers: a 1:1 direct room from alice on one server to bob on another.

Both servers run the `professional` policy, so the `is_direct` invite of a
fresh room is a connection request, and bob's join accepts it. After that the
two talk both ways, and each sees the other's typing, read receipts and new
display name.
"""

from __future__ import annotations

import pytest

from harness.client import MatrixClient, ephemeral_events
from harness.lattice import LatticeServer

pytestmark = pytest.mark.lattice_policy(name="professional")

CONNECTIONS = "/_matrix/client/unstable/dev.lattice.connections"


def _typing_users(room_id: str):
    """Return a sync_until finder for the user ids of the room's latest `m.typing` event."""

    def find(response):
        for event in ephemeral_events(response, room_id):
            if event["type"] == "m.typing":
                return event["content"]["user_ids"]
        return None

    return find


def _typing_users_without(room_id: str, user_id: str):
    """Return a sync_until finder for the room's typing user ids once they no longer hold user_id."""
    latest = _typing_users(room_id)

    def find(response):
        users = latest(response)
        if users is None or user_id in users:
            return None
        return users

    return find


def _open_request(servers: list[LatticeServer]) -> tuple[MatrixClient, MatrixClient, str]:
    alice = servers[0].register("alice", displayname="Alice")
    bob = servers[1].register("bob", displayname="Bob")
    room_id = alice.create_direct_room(bob.user_id)

    invite_state = bob.wait_for_invite(room_id)
    invite = next(event for event in invite_state if event["type"] == "m.room.member" and event["state_key"] == bob.user_id)
    assert invite["sender"] == alice.user_id
    assert invite["content"]["membership"] == "invite"
    assert invite["content"].get("is_direct") is True
    return alice, bob, room_id


def test_bob_accepts_and_they_talk_both_ways(servers: list[LatticeServer]) -> None:
    alice, bob, room_id = _open_request(servers)

    # Until bob accepts, it is a pending request on both sides.
    assert [(r["user_id"], r["room_id"]) for r in alice.call("GET", CONNECTIONS + "/requests")["outgoing"]] == [
        (bob.user_id, room_id)
    ]
    assert [(r["user_id"], r["room_id"]) for r in bob.call("GET", CONNECTIONS + "/requests")["incoming"]] == [
        (alice.user_id, room_id)
    ]

    bob.join(room_id, via=[servers[0].server_name])
    alice.wait_for_event(
        room_id,
        lambda e: e["type"] == "m.room.member" and e["state_key"] == bob.user_id and e["content"]["membership"] == "join",
        "bob's join",
    )
    assert alice.joined_members(room_id).keys() == {alice.user_id, bob.user_id}
    assert bob.joined_members(room_id).keys() == {alice.user_id, bob.user_id}

    alice.send_text(room_id, "Hello Bob, thanks for connecting")
    seen = bob.wait_for_text(room_id, "Hello Bob, thanks for connecting")
    assert seen["sender"] == alice.user_id

    bob.send_text(room_id, "Hi Alice, glad to")
    seen = alice.wait_for_text(room_id, "Hi Alice, glad to")
    assert seen["sender"] == bob.user_id

    # Both servers hold the same conversation, in the same order.
    bodies = [e["content"]["body"] for e in alice.messages(room_id) if e["type"] == "m.room.message"]
    assert bodies == ["Hello Bob, thanks for connecting", "Hi Alice, glad to"]
    assert [e["content"]["body"] for e in bob.messages(room_id) if e["type"] == "m.room.message"] == bodies

    # The connection is listed on both sides.
    for me, other in ((alice, bob), (bob, alice)):
        connections = me.call("GET", CONNECTIONS + "/connections")["connections"]
        assert [(entry["user_id"], entry["room_id"]) for entry in connections] == [(other.user_id, room_id)]


def test_typing_and_read_receipts_cross_servers(servers: list[LatticeServer]) -> None:
    alice, bob, room_id = _open_request(servers)
    bob.join(room_id, via=[servers[0].server_name])
    alice.wait_for_membership(room_id, bob.user_id, "join")

    alice.typing(room_id, True)
    typing = bob.sync_until(_typing_users(room_id), "alice typing")
    assert typing == [alice.user_id]

    alice.typing(room_id, False)
    # A sync can repeat the earlier typing state before the stop arrives, so
    # the wait ends at the first state without alice.
    typing = bob.sync_until(_typing_users_without(room_id, alice.user_id), "alice no longer typing")
    assert typing == []

    event_id = alice.send_text(room_id, "Did you read this?")
    bob.wait_for_text(room_id, "Did you read this?")
    bob.read_receipt(room_id, event_id)

    def bob_read(response):
        for event in ephemeral_events(response, room_id):
            if event["type"] == "m.receipt":
                readers = event["content"].get(event_id, {}).get("m.read", {})
                if bob.user_id in readers:
                    return readers[bob.user_id]
        return None

    receipt = alice.sync_until(bob_read, "bob's read receipt")
    assert isinstance(receipt["ts"], int) and receipt["ts"] > 0


def test_display_name_change_crosses_servers(servers: list[LatticeServer]) -> None:
    alice, bob, room_id = _open_request(servers)
    bob.join(room_id, via=[servers[0].server_name])
    alice.wait_for_membership(room_id, bob.user_id, "join")

    bob.set_displayname("Robert")
    change = alice.wait_for_event(
        room_id,
        lambda e: e["type"] == "m.room.member"
        and e["state_key"] == bob.user_id
        and e["content"].get("displayname") == "Robert",
        "bob's new display name",
    )
    assert change["content"]["membership"] == "join"
    assert alice.joined_members(room_id)[bob.user_id]["display_name"] == "Robert"
    assert alice.get_state(room_id, "m.room.member", bob.user_id)["displayname"] == "Robert"
    assert alice.profile(bob.user_id)["displayname"] == "Robert"
