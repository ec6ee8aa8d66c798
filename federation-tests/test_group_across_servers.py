"""A group room with one member on each of the three servers, then a leave and a kick.

alice (server A) creates a private group and invites bob (B) and carol (C).
Everyone sees everyone's messages, and all three servers list the same
members. carol leaves, then alice kicks bob; each change reaches every server
that was in the room, and the people who left keep the history up to their
leave and see nothing after it.
"""

from __future__ import annotations

from harness.client import MatrixClient
from harness.lattice import LatticeServer, wait_for_servers_to_agree


def _members(client: MatrixClient, room_id: str) -> dict[str, str]:
    return client.members(room_id)


def _group(servers: list[LatticeServer]) -> tuple[MatrixClient, MatrixClient, MatrixClient, str]:
    alice = servers[0].register("alice", displayname="Alice")
    bob = servers[1].register("bob", displayname="Bob")
    carol = servers[2].register("carol", displayname="Carol")
    room_id = alice.create_room(preset="private_chat", name="Project Lattice", invite=[bob.user_id, carol.user_id])

    for invitee in (bob, carol):
        invite_state = invitee.wait_for_invite(room_id)
        names = [e["content"]["name"] for e in invite_state if e["type"] == "m.room.name"]
        assert names == ["Project Lattice"]
        invitee.join(room_id, via=[servers[0].server_name])

    everyone = {alice.user_id: "join", bob.user_id: "join", carol.user_id: "join"}
    assert wait_for_servers_to_agree([alice, bob, carol], room_id, _members, "all three see three joined members") == everyone
    return alice, bob, carol, room_id


def test_everyone_sees_everyone(servers: list[LatticeServer]) -> None:
    alice, bob, carol, room_id = _group(servers)

    for sender in (alice, bob, carol):
        sender.send_text(room_id, f"hello from {sender.user_id}")
    for reader in (alice, bob, carol):
        for sender in (alice, bob, carol):
            reader.wait_for_text(room_id, f"hello from {sender.user_id}")

    for reader in (alice, bob, carol):
        assert reader.get_state(room_id, "m.room.name")["name"] == "Project Lattice"
        joined = reader.joined_members(room_id)
        assert {user: entry["display_name"] for user, entry in joined.items()} == {
            alice.user_id: "Alice",
            bob.user_id: "Bob",
            carol.user_id: "Carol",
        }


def test_leave_and_kick_reach_every_server(servers: list[LatticeServer]) -> None:
    alice, bob, carol, room_id = _group(servers)

    carol.send_text(room_id, "I have to go, bye")
    carol.leave(room_id)
    for reader in (alice, bob):
        leave = reader.wait_for_event(
            room_id,
            lambda e: e["type"] == "m.room.member" and e["state_key"] == carol.user_id and e["content"]["membership"] == "leave",
            "carol's leave",
        )
        assert leave["sender"] == carol.user_id

    alice.kick(room_id, bob.user_id, reason="Project finished")
    kick = bob.wait_for_event(
        room_id,
        lambda e: e["type"] == "m.room.member" and e["state_key"] == bob.user_id and e["content"]["membership"] == "leave",
        "bob's own kick",
    )
    assert kick["sender"] == alice.user_id
    assert kick["content"].get("reason") == "Project finished"
    # bob's /sync now lists the room under "leave".
    assert room_id not in bob.sync().get("rooms", {}).get("join", {})

    expected = {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "leave"}
    assert wait_for_servers_to_agree([alice], room_id, _members, "alice's member list") == expected
    assert alice.joined_members(room_id).keys() == {alice.user_id}

    # Messages after the kick reach neither bob nor carol; they keep what came before.
    alice.send_text(room_id, "Only me now")
    alice.wait_for_text(room_id, "Only me now")
    for gone in (bob, carol):
        bodies = [e["content"].get("body") for e in gone.messages(room_id) if e["type"] == "m.room.message"]
        assert "I have to go, bye" in bodies
        assert "Only me now" not in bodies
