"""Connection requests between a Synapse user and a Lattice user, in both directions.

A connection request is a direct room (`is_direct: true`, preset
`trusted_private_chat`) with the other user as its only invitee. The Lattice
server runs the `professional` policy, so an accepted request makes the two
users connections there.
"""

from __future__ import annotations

import pytest

from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import converse, member_content, wait_for_join

CONNECTIONS = "/_matrix/client/unstable/dev.lattice.connections/connections"
REQUESTS = "/_matrix/client/unstable/dev.lattice.connections/requests"


@pytest.mark.lattice_policy(name="professional")
def test_synapse_user_requests_lattice_user(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice", displayname="Alice")
    sam = synapse.register("sam", displayname="Sam")

    room_id = sam.create_direct_room(alice.user_id)
    invite_state = alice.wait_for_invite(room_id, timeout_s=30)
    invite = member_content(invite_state, alice.user_id)
    assert invite["membership"] == "invite"
    assert invite["is_direct"] is True
    assert member_content(invite_state, sam.user_id)["membership"] == "join"

    assert alice.join(room_id, via=[synapse.server_name]) == room_id
    wait_for_join(sam, room_id, alice.user_id)
    assert set(alice.joined_members(room_id)) == {alice.user_id, sam.user_id}

    converse(sam, alice, room_id)


@pytest.mark.lattice_policy(name="professional")
def test_synapse_request_becomes_connection(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")

    room_id = sam.create_direct_room(alice.user_id)
    alice.wait_for_invite(room_id, timeout_s=30)
    requests = alice.call("GET", REQUESTS)
    assert [(r["user_id"], r["room_id"]) for r in requests["incoming"]] == [(sam.user_id, room_id)]

    alice.join(room_id, via=[synapse.server_name])
    wait_for_join(sam, room_id, alice.user_id)
    connections = alice.call("GET", CONNECTIONS)["connections"]
    assert [(c["user_id"], c["room_id"]) for c in connections] == [(sam.user_id, room_id)]


@pytest.mark.lattice_policy(name="professional")
def test_lattice_user_requests_synapse_user(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice", displayname="Alice")
    sam = synapse.register("sam", displayname="Sam")

    room_id = alice.create_direct_room(sam.user_id)
    invite_state = sam.wait_for_invite(room_id, timeout_s=30)
    invite = member_content(invite_state, sam.user_id)
    assert invite["membership"] == "invite"
    assert invite["is_direct"] is True

    assert sam.join(room_id, via=[lattice.server_name]) == room_id
    wait_for_join(alice, room_id, sam.user_id)
    assert set(sam.joined_members(room_id)) == {alice.user_id, sam.user_id}

    converse(alice, sam, room_id)
    connections = alice.call("GET", CONNECTIONS)["connections"]
    assert [(c["user_id"], c["room_id"]) for c in connections] == [(sam.user_id, room_id)]
