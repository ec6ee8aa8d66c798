"""Two servers change the room's state at the same time; all three end with the same state.

A fork is made deterministic by keeping the two writers apart: server B is
stopped while alice (A) changes the room, then A is stopped while bob (B)
changes it from the state his server has, and then both run again. Server C sees
both branches as they happen. The spec's state resolution (room version 12)
then has to give every server the same answer, which each user reads from
`/state`, `/members` and `/sync`.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.client import MatrixClient
from harness.lattice import LatticeServer, wait_for_servers_to_agree


def _power_levels(client: MatrixClient, room_id: str) -> dict[str, Any]:
    return client.get_state(room_id, "m.room.power_levels")


def _room_with_bob_as_admin(servers: list[LatticeServer]) -> tuple[MatrixClient, MatrixClient, MatrixClient, str]:
    alice = servers[0].register("alice")
    bob = servers[1].register("bob")
    carol = servers[2].register("carol")
    room_id = alice.create_room(
        preset="private_chat",
        invite=[bob.user_id, carol.user_id],
        power_level_content_override={"users": {bob.user_id: 100}},
    )
    for invitee in (bob, carol):
        invitee.wait_for_invite(room_id)
        invitee.join(room_id, via=[servers[0].server_name])
    wait_for_servers_to_agree(
        [alice, bob, carol], room_id, lambda c, r: c.joined_members(r).keys(), "three joined members everywhere"
    )
    return alice, bob, carol, room_id


def _fork(servers: list[LatticeServer], on_a, on_b) -> None:
    """Run on_a() while B is down, then on_b() while A is down, then start both."""
    server_a, server_b, _ = servers
    server_b.stop()
    on_a()
    server_a.stop()
    server_b.start()
    on_b()
    server_a.start()


def test_concurrent_power_level_changes_converge(servers: list[LatticeServer]) -> None:
    alice, bob, carol, room_id = _room_with_bob_as_admin(servers)
    before = _power_levels(alice, room_id)
    assert before["users"].get(bob.user_id) == 100

    from_alice = {**before, "users": {**before["users"], carol.user_id: 50}}
    from_bob = {**before, "users": {**before["users"], carol.user_id: 10}, "state_default": 90}
    _fork(
        servers,
        lambda: alice.put_state(room_id, "m.room.power_levels", from_alice),
        lambda: bob.put_state(room_id, "m.room.power_levels", from_bob),
    )

    clients = [alice, bob, carol]
    resolved = wait_for_servers_to_agree(clients, room_id, _power_levels, "the same power levels on all three", 60)
    assert resolved in (from_alice, from_bob), resolved

    # The room goes on from the resolved state: a message from carol reaches both others.
    carol.send_text(room_id, "after the merge")
    for reader in clients[:2]:
        reader.wait_for_text(room_id, "after the merge")


# NOTE: the mark is not strict because the test fails only in some runs (2 of 7 here).
@pytest.mark.xfail(
    reason="a server that joined through another one stores the send_join state but not its auth chain, "
    "so the joining users' invites are missing when state resolution checks their joins, and it drops them",
    strict=False,
)
def test_ban_against_concurrent_demotion_converges(servers: list[LatticeServer]) -> None:
    alice, bob, carol, room_id = _room_with_bob_as_admin(servers)
    before = _power_levels(alice, room_id)
    demoted = {**before, "users": {user: level for user, level in before["users"].items() if user != bob.user_id}}

    _fork(
        servers,
        lambda: alice.put_state(room_id, "m.room.power_levels", demoted),
        lambda: bob.ban(room_id, carol.user_id, reason="concurrent ban"),
    )

    clients = [alice, bob, carol]

    def view(client: MatrixClient, room: str) -> tuple[Any, ...]:
        return (_power_levels(client, room), client.members(room))

    power_levels, members = wait_for_servers_to_agree(clients, room_id, view, "the same state on all three", 60)
    # State resolution v2 orders the creator's change before bob's ban (the
    # creator's power is higher), so the ban is checked against the state in
    # which bob is no longer an admin, and fails: carol stays in the room.
    assert power_levels == demoted
    assert members == {alice.user_id: "join", bob.user_id: "join", carol.user_id: "join"}

    clients[2].send_text(room_id, "still here")
    for reader in clients[:2]:
        reader.wait_for_text(room_id, "still here")
