"""Rooms of versions 10, 11 and 12, created on either server, work across both.

Version 11 dropped `creator` from the create event. In version 12 the room
id is the create event's hash and the creators are privileged. Each version
is therefore checked end to end: join, state and talk.
"""

from __future__ import annotations

import pytest

from harness.client import MatrixClient
from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import bodies, wait_for_join

VERSIONS = ["10", "11", "12"]


def check_room(creator: MatrixClient, joiner: MatrixClient, via: str, version: str) -> None:
    room_id = creator.create_room(preset="public_chat", room_version=version, name=f"Version {version}")
    assert joiner.join(room_id, via=[via]) == room_id
    wait_for_join(creator, room_id, joiner.user_id)

    for reader in (creator, joiner):
        create = reader.get_state(room_id, "m.room.create")
        assert create["room_version"] == version, reader.user_id
        assert reader.get_state(room_id, "m.room.name")["name"] == f"Version {version}", reader.user_id

    creator.send_text(room_id, f"hello in v{version}")
    joiner.wait_for_text(room_id, f"hello in v{version}")
    joiner.send_text(room_id, f"reply in v{version}")
    creator.wait_for_text(room_id, f"reply in v{version}")
    for reader in (creator, joiner):
        assert bodies(reader, room_id) == [f"hello in v{version}", f"reply in v{version}"], reader.user_id


@pytest.mark.parametrize("version", VERSIONS)
def test_room_created_on_lattice(lattice: LatticeServer, synapse: Synapse, version: str) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    check_room(alice, sam, lattice.server_name, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_room_created_on_synapse(lattice: LatticeServer, synapse: Synapse, version: str) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    check_room(sam, alice, synapse.server_name, version)
