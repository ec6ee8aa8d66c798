"""A user who joins a room with long history reads all of it by paginating back.

The joining server has none of the history, so its `/messages` has to
backfill the older events from the resident server over federation.
"""

from __future__ import annotations

from urllib.parse import quote

from harness.client import MatrixClient
from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import wait_for_join

HISTORY = 200
PAGE = 30


def write_history(author: MatrixClient, room_id: str) -> list[str]:
    sent = [f"history {index:03d}" for index in range(HISTORY)]
    for body in sent:
        author.send_text(room_id, body)
    return sent


def paginate_back(reader: MatrixClient, room_id: str) -> list[dict]:
    """Every event from the end of the room back to its creation, oldest first, PAGE at a time."""
    events: list[dict] = []
    params = {"dir": "b", "limit": PAGE}
    for _ in range(100):
        page = reader.call("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages", params=params)
        events.extend(page["chunk"])
        if "end" not in page or not page["chunk"]:
            break
        params["from"] = page["end"]
    return list(reversed(events))


def history_bodies(events: list[dict]) -> list[str]:
    return [
        event["content"]["body"]
        for event in events
        if event["type"] == "m.room.message" and event["content"].get("body", "").startswith("history ")
    ]


def read_all_history(reader: MatrixClient, room_id: str, sent: list[str]) -> None:
    events = paginate_back(reader, room_id)
    assert history_bodies(events) == sent
    assert events[0]["type"] == "m.room.create", "pagination reaches the start of the room"


def test_synapse_user_reads_lattice_history(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    room_id = alice.create_room(preset="public_chat", name="Archive")
    sent = write_history(alice, room_id)

    sam.join(room_id, via=[lattice.server_name])
    wait_for_join(alice, room_id, sam.user_id)
    read_all_history(sam, room_id, sent)


def test_lattice_user_reads_synapse_history(lattice: LatticeServer, synapse: Synapse) -> None:
    sam = synapse.register("sam")
    alice = lattice.register("alice")
    room_id = sam.create_room(preset="public_chat", name="Archive")
    sent = write_history(sam, room_id)

    alice.join(room_id, via=[synapse.server_name])
    wait_for_join(sam, room_id, alice.user_id)
    read_all_history(alice, room_id, sent)
