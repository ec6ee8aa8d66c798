"""Group rooms shared by Synapse and Lattice users, created on either side.

Every member must read the same timeline and the same member list,
whichever server created the room and whichever server each member is on.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.client import MatrixClient
from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import bodies, wait_for_join


def talk_in_turn(members: list[MatrixClient], room_id: str) -> list[str]:
    """Each member sends one message after reading the previous one; returns the bodies in order."""
    sent = []
    for index, member in enumerate(members):
        body = f"message {index} from {member.user_id}"
        member.send_text(room_id, body)
        sent.append(body)
        for reader in members:
            if reader is not member:
                reader.wait_for_text(room_id, body, timeout_s=30)
    return sent


def assert_same_view(members: list[MatrixClient], room_id: str, name: str, sent: list[str]) -> None:
    expected_members = {member.user_id for member in members}
    for member in members:
        assert set(member.joined_members(room_id)) == expected_members, member.user_id
        assert member.get_state(room_id, "m.room.name")["name"] == name, member.user_id
        assert bodies(member, room_id) == sent, member.user_id


def test_lattice_group_with_synapse_members(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    bob = lattice.register("bob")
    sam = synapse.register("sam")
    sue = synapse.register("sue")
    room_id = alice.create_room(preset="public_chat", name="Project Atlas")

    bob.join(room_id)
    sam.join(room_id, via=[lattice.server_name])
    sue.join(room_id, via=[lattice.server_name])
    members = [alice, bob, sam, sue]
    for member in members:
        for joined in members:
            wait_for_join(member, room_id, joined.user_id)

    sent = talk_in_turn(members, room_id)
    assert_same_view(members, room_id, "Project Atlas", sent)


def test_synapse_group_with_lattice_members(lattice: LatticeServer, synapse: Synapse) -> None:
    sam = synapse.register("sam")
    sue = synapse.register("sue")
    alice = lattice.register("alice")
    bob = lattice.register("bob")
    room_id = sam.create_room(preset="public_chat", name="Project Borealis")

    sue.join(room_id)
    alice.join(room_id, via=[synapse.server_name])
    bob.join(room_id, via=[synapse.server_name])
    members = [sam, sue, alice, bob]
    for member in members:
        for joined in members:
            wait_for_join(member, room_id, joined.user_id)

    sent = talk_in_turn(members, room_id)
    assert_same_view(members, room_id, "Project Borealis", sent)


def test_group_across_synapse_and_two_lattice_servers(
    servers: list[LatticeServer], start_synapse: Callable[..., Synapse]
) -> None:
    first, second = servers[0], servers[1]
    synapse = start_synapse([first, second])
    alice = first.register("alice")
    bob = second.register("bob")
    sam = synapse.register("sam")
    room_id = alice.create_room(preset="public_chat", name="Project Cirrus")

    sam.join(room_id, via=[first.server_name])
    bob.join(room_id, via=[first.server_name, synapse.server_name])
    members = [alice, bob, sam]
    for member in members:
        for joined in members:
            wait_for_join(member, room_id, joined.user_id)

    sent = talk_in_turn(members, room_id)
    assert_same_view(members, room_id, "Project Cirrus", sent)
