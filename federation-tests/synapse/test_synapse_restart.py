"""A server that was down gets everything it missed once it is back.

While one server is stopped, a user of the other keeps writing. After the
restart, the sending server's retries must deliver every message, in order,
without anyone sending anything new.
"""

from __future__ import annotations

import time

from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import bodies, wait_for_join

# Synapse wakes destinations that it failed to reach once a minute.
SYNAPSE_RETRY_WAIT_S = 90


def test_lattice_delivers_after_synapse_restart(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    room_id = alice.create_room(preset="public_chat", name="Outage")
    sam.join(room_id, via=[lattice.server_name])
    wait_for_join(alice, room_id, sam.user_id)
    alice.send_text(room_id, "before the outage")
    sam.wait_for_text(room_id, "before the outage")

    synapse.stop()
    missed = [f"during the outage {index}" for index in range(5)]
    for body in missed:
        alice.send_text(room_id, body)
    # Long enough for Lattice's sender to fail and back off at least once.
    time.sleep(3)
    synapse.start()

    sam.wait_for_text(room_id, missed[-1], timeout_s=60)
    assert bodies(sam, room_id) == ["before the outage", *missed]


def test_synapse_delivers_after_lattice_restart(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    room_id = alice.create_room(preset="public_chat", name="Outage")
    sam.join(room_id, via=[lattice.server_name])
    wait_for_join(alice, room_id, sam.user_id)
    sam.send_text(room_id, "before the outage")
    alice.wait_for_text(room_id, "before the outage")

    lattice.stop()
    missed = [f"during the outage {index}" for index in range(5)]
    for body in missed:
        sam.send_text(room_id, body)
    time.sleep(3)
    lattice.start()

    alice.wait_for_text(room_id, missed[-1], timeout_s=SYNAPSE_RETRY_WAIT_S)
    assert bodies(alice, room_id) == ["before the outage", *missed]
