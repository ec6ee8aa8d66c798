"""One server is down while the other two keep talking; when it is back it catches up.

alice (A), bob (B) and carol (C) share a room. Server C stops. alice and bob
send messages in turns, so each message of one server follows one of the
other. C starts again with the same database: its senders and theirs retry,
and carol ends up with every message, once each, in the order the others see,
with nothing lost. Then carol talks again and both others see it.
"""

from __future__ import annotations

from harness.client import MatrixClient, wait_until
from harness.lattice import LatticeServer, wait_for_servers_to_agree

MESSAGES_WHILE_DOWN = 12


def _bodies(client: MatrixClient, room_id: str) -> list[str]:
    return [e["content"]["body"] for e in client.messages(room_id, limit=200) if e["type"] == "m.room.message"]


def test_stopped_server_catches_up_in_order(servers: list[LatticeServer]) -> None:
    server_a, server_b, server_c = servers
    alice = server_a.register("alice")
    bob = server_b.register("bob")
    carol = server_c.register("carol")
    room_id = alice.create_room(preset="private_chat", invite=[bob.user_id, carol.user_id])
    for invitee in (bob, carol):
        invitee.wait_for_invite(room_id)
        invitee.join(room_id, via=[server_a.server_name])
    wait_for_servers_to_agree(
        [alice, bob, carol], room_id, lambda c, r: c.joined_members(r).keys(), "three joined members everywhere"
    )
    alice.send_text(room_id, "before the outage")
    carol.wait_for_text(room_id, "before the outage")

    server_c.stop()

    sent = []
    for index in range(MESSAGES_WHILE_DOWN):
        sender, reader = (alice, bob) if index % 2 == 0 else (bob, alice)
        body = f"while C is down #{index}"
        sender.send_text(room_id, body)
        # Each message is seen across before the next, so the room's history is one line.
        reader.wait_for_text(room_id, body)
        sent.append(body)

    expected = ["before the outage", *sent]
    assert _bodies(alice, room_id) == expected
    assert _bodies(bob, room_id) == expected

    server_c.start()
    wait_until(lambda: _bodies(carol, room_id) == expected, "carol's history holds every message in order", 60)
    # A client that starts now gets the same order from /sync.
    timeline = [
        e["content"]["body"]
        for e in carol.initial_sync()["rooms"]["join"][room_id]["timeline"]["events"]
        if e["type"] == "m.room.message"
    ]
    assert timeline and timeline == expected[-len(timeline):]

    carol.send_text(room_id, "I am back")
    alice.wait_for_text(room_id, "I am back")
    bob.wait_for_text(room_id, "I am back")
    final = [*expected, "I am back"]
    assert wait_for_servers_to_agree([alice, bob, carol], room_id, _bodies, "the same history on all three") == final
