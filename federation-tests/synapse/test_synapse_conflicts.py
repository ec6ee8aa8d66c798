"""Conflicting state changes made on both servers while they were cut off.

Synapse is restarted with a federation allow list that leaves Lattice out,
so neither server receives the other's events. Both admins then rename the
room and change its topic. Once Synapse federates with Lattice again, both
servers must settle on the same state, as state resolution of the two forks
decides it, and show the same timeline tail.
"""

from __future__ import annotations

from harness.client import MatrixClient, wait_until
from harness.lattice import LatticeServer, wait_for_servers_to_agree
from harness.synapse import Synapse
from synapse_steps import bodies, wait_for_join


def room_state_view(client: MatrixClient, room_id: str) -> tuple:
    power = client.get_state(room_id, "m.room.power_levels")
    return (
        client.get_state(room_id, "m.room.name")["name"],
        client.get_state(room_id, "m.room.topic")["topic"],
        tuple(sorted(power.get("users", {}).items())),
        tuple(sorted(client.joined_members(room_id))),
    )


def test_forked_room_converges(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    room_id = alice.create_room(preset="public_chat", name="Before", topic="Before")
    sam.join(room_id, via=[lattice.server_name])
    wait_for_join(alice, room_id, sam.user_id)
    power = alice.get_state(room_id, "m.room.power_levels")
    power["users"][sam.user_id] = 100
    alice.put_state(room_id, "m.room.power_levels", power)
    wait_until(
        lambda: sam.get_state(room_id, "m.room.power_levels")["users"].get(sam.user_id) == 100,
        "Sam is an admin on Synapse",
        30,
    )

    # Cut the servers off from each other and change the same state on both.
    synapse.stop()
    synapse.set_peers([])
    synapse.start()
    alice.put_state(room_id, "m.room.name", {"name": "Named on Lattice"})
    alice.put_state(room_id, "m.room.topic", {"topic": "Topic from Lattice"})
    sam.put_state(room_id, "m.room.name", {"name": "Named on Synapse"})
    sam.put_state(room_id, "m.room.topic", {"topic": "Topic from Synapse"})

    # Reconnect. Lattice's sender retries its events; Sam's next message
    # points at both forks and carries Synapse's side to Lattice.
    synapse.stop()
    synapse.set_peers([lattice.server_name])
    synapse.start()
    sam.wait_for_event(
        room_id,
        lambda event: event.get("type") == "m.room.topic" and event["content"].get("topic") == "Topic from Lattice",
        "Alice's topic change",
        timeout_s=60,
    )
    sam.send_text(room_id, "back online")
    alice.wait_for_text(room_id, "back online", timeout_s=60)

    agreed = wait_for_servers_to_agree([alice, sam], room_id, room_state_view, "both servers agree on the state")
    name, topic, _, members = agreed
    assert name in ("Named on Lattice", "Named on Synapse")
    assert topic in ("Topic from Lattice", "Topic from Synapse")
    assert members == tuple(sorted([alice.user_id, sam.user_id]))
    assert bodies(alice, room_id)[-1] == "back online"
    assert bodies(sam, room_id)[-1] == "back online"
