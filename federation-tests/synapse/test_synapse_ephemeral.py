"""Typing notices, read receipts and presence cross between Synapse and Lattice.

Both users share a room that lives on Lattice. Each side's notice must reach
the other user's `/sync`. Typing starts only after both servers show the
join, because Synapse drops typing notices for a join still in progress.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import MatrixClient, ephemeral_events, wait_until
from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import wait_for_join


def shared_room(lattice: LatticeServer, synapse: Synapse) -> tuple[MatrixClient, MatrixClient, str]:
    alice = lattice.register("alice", displayname="Alice")
    sam = synapse.register("sam", displayname="Sam")
    room_id = alice.create_room(preset="public_chat", name="Standup")
    sam.join(room_id, via=[lattice.server_name])
    wait_for_join(alice, room_id, sam.user_id)
    wait_for_join(sam, room_id, sam.user_id)
    return alice, sam, room_id


def typing_users(client: MatrixClient, room_id: str) -> Any:
    def find(response: dict[str, Any]) -> list[str] | None:
        for event in ephemeral_events(response, room_id):
            if event["type"] == "m.typing":
                return event["content"]["user_ids"]
        return None

    return find


def wait_for_typing(client: MatrixClient, room_id: str, expected: list[str]) -> None:
    find = typing_users(client, room_id)
    client.sync_until(lambda response: find(response) == expected or None, f"typing users {expected}", 30)


def wait_for_receipt(client: MatrixClient, room_id: str, event_id: str, reader: str) -> dict[str, Any]:
    def find(response: dict[str, Any]) -> dict[str, Any] | None:
        for event in ephemeral_events(response, room_id):
            if event["type"] == "m.receipt":
                receipt = event["content"].get(event_id, {}).get("m.read", {}).get(reader)
                if receipt is not None:
                    return receipt
        return None

    return client.sync_until(find, f"the read receipt of {reader} on {event_id}", 30)


def test_typing_both_ways(lattice: LatticeServer, synapse: Synapse) -> None:
    alice, sam, room_id = shared_room(lattice, synapse)
    alice.sync()
    sam.sync()

    alice.typing(room_id, True)
    wait_for_typing(sam, room_id, [alice.user_id])
    alice.typing(room_id, False)
    wait_for_typing(sam, room_id, [])

    sam.typing(room_id, True)
    wait_for_typing(alice, room_id, [sam.user_id])
    sam.typing(room_id, False)
    wait_for_typing(alice, room_id, [])


def test_read_receipts_both_ways(lattice: LatticeServer, synapse: Synapse) -> None:
    alice, sam, room_id = shared_room(lattice, synapse)

    from_alice = alice.send_text(room_id, "minutes are in the doc")
    sam.wait_for_text(room_id, "minutes are in the doc")
    sam.read_receipt(room_id, from_alice)
    receipt = wait_for_receipt(alice, room_id, from_alice, sam.user_id)
    assert isinstance(receipt["ts"], int)

    from_sam = sam.send_text(room_id, "thanks, reading now")
    alice.wait_for_text(room_id, "thanks, reading now")
    alice.read_receipt(room_id, from_sam)
    receipt = wait_for_receipt(sam, room_id, from_sam, alice.user_id)
    assert isinstance(receipt["ts"], int)


def set_presence(client: MatrixClient, presence: str, status_msg: str) -> None:
    path = f"/_matrix/client/v3/presence/{quote(client.user_id, safe='')}/status"
    client.call("PUT", path, {"presence": presence, "status_msg": status_msg})


def presence_of(reader: MatrixClient, user_id: str) -> dict[str, Any]:
    return reader.call("GET", f"/_matrix/client/v3/presence/{quote(user_id, safe='')}/status")


def wait_for_presence_in_sync(reader: MatrixClient, user_id: str, status_msg: str) -> dict[str, Any]:
    def find(response: dict[str, Any]) -> dict[str, Any] | None:
        for event in response.get("presence", {}).get("events", []):
            if event["sender"] == user_id and event["content"].get("status_msg") == status_msg:
                return event["content"]
        return None

    return reader.sync_until(find, f"the presence of {user_id} with status {status_msg!r}", 30)


def test_presence_both_ways(lattice: LatticeServer, synapse: Synapse) -> None:
    alice, sam, room_id = shared_room(lattice, synapse)
    alice.sync()
    sam.sync()

    set_presence(sam, "online", "In a meeting")
    content = wait_for_presence_in_sync(alice, sam.user_id, "In a meeting")
    assert content["presence"] == "online"
    wait_until(
        lambda: presence_of(alice, sam.user_id).get("status_msg") == "In a meeting",
        "Lattice answers Sam's presence",
        30,
    )

    set_presence(alice, "unavailable", "Out for lunch")
    content = wait_for_presence_in_sync(sam, alice.user_id, "Out for lunch")
    assert content["presence"] == "unavailable"
    wait_until(
        lambda: presence_of(sam, alice.user_id).get("status_msg") == "Out for lunch",
        "Synapse answers Alice's presence",
        30,
    )
