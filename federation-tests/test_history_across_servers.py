"""A user who joins a room that lives on another Lattice server reads its whole history.

The joining server has none of the history before the join, so its
`/messages` backfills it from the room's server with `/backfill`.
"""

from __future__ import annotations

from urllib.parse import quote

from harness.client import MatrixClient
from harness.lattice import LatticeServer

HISTORY = 150
PAGE = 25


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


def test_history_across_lattice_servers(servers: list[LatticeServer]) -> None:
    home, other = servers[0], servers[1]
    alice = home.register("alice")
    bob = other.register("bob")
    room_id = alice.create_room(preset="public_chat", name="Archive")
    sent = [f"history {index:03d}" for index in range(HISTORY)]
    for body in sent:
        alice.send_text(room_id, body)

    bob.join(room_id, via=[home.server_name])
    events = paginate_back(bob, room_id)

    bodies = [event["content"]["body"] for event in events if event["type"] == "m.room.message"]
    assert bodies == sent
    assert events[0]["type"] == "m.room.create", "pagination reaches the start of the room"
    event_ids = [event["event_id"] for event in events]
    assert len(set(event_ids)) == len(event_ids), "no event comes twice"
    assert event_ids == [event["event_id"] for event in paginate_back(alice, room_id)], "both servers agree"
