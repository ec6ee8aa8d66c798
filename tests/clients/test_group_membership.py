"""Scenario: a room of four where one member leaves and one is kicked with a reason."""

from dataclasses import dataclass

from nio import AsyncClient, RoomKickResponse, RoomLeaveResponse, RoomMemberEvent

from matrix_helpers import create_shared_room, expect, joined_member_ids, joined_timeline, sync_until

KICK_REASON = "Posting off-topic links"


@dataclass
class Group:
    room_id: str
    alice: AsyncClient
    bob: AsyncClient
    carol: AsyncClient
    dave: AsyncClient


def membership_change(events, user_id: str, membership: str):
    """Return the member event that set user_id to membership, or None."""
    for event in events:
        if isinstance(event, RoomMemberEvent) and event.state_key == user_id and event.membership == membership:
            return event
    return None


async def form_group_then_shrink(register_user) -> Group:
    """Form a room of four, then carol leaves and alice kicks dave with KICK_REASON."""
    alice = await register_user("alice")
    bob = await register_user("bob")
    carol = await register_user("carol")
    dave = await register_user("dave")
    everyone = (alice, bob, carol, dave)

    room_id = await create_shared_room(alice, bob, carol, dave, name="Project team")

    all_four = {client.user_id for client in everyone}
    for client in everyone:
        assert await joined_member_ids(client, room_id) == all_four

    # Every member syncs once, so the leave and the kick arrive in later syncs.
    for client in everyone:
        await sync_until(client, lambda response: True if room_id in response.rooms.join else None, f"{room_id} joined")

    expect(await carol.room_leave(room_id), RoomLeaveResponse)
    expect(await alice.room_kick(room_id, dave.user_id, reason=KICK_REASON), RoomKickResponse)

    return Group(room_id, alice, bob, carol, dave)


async def test_group_members_after_leave_and_kick(register_user):
    group = await form_group_then_shrink(register_user)
    room_id, alice, bob, carol, dave = group.room_id, group.alice, group.bob, group.carol, group.dave

    remaining = {alice.user_id, bob.user_id}
    assert await joined_member_ids(alice, room_id) == remaining
    assert await joined_member_ids(bob, room_id) == remaining

    # Bob's timeline shows carol leaving by herself and dave removed by alice with the reason.
    seen = []

    def both_changes(response):
        seen.extend(joined_timeline(response, room_id))
        carol_left = membership_change(seen, carol.user_id, "leave")
        dave_kicked = membership_change(seen, dave.user_id, "leave")
        return (carol_left, dave_kicked) if carol_left and dave_kicked else None

    carol_left, dave_kicked = await sync_until(bob, both_changes, "carol's leave and dave's kick")
    assert carol_left.sender == carol.user_id
    assert dave_kicked.sender == alice.user_id
    assert dave_kicked.content.get("reason") == KICK_REASON

    # The member lists that nio keeps from sync match the server's list.
    await sync_until(
        alice,
        lambda response: membership_change(joined_timeline(response, room_id), dave.user_id, "leave"),
        "dave's kick",
    )
    for client in (alice, bob):
        room = client.rooms[room_id]
        assert set(room.users) == remaining
        assert room.invited_users == {}


async def test_departed_members_see_room_left(register_user):
    group = await form_group_then_shrink(register_user)
    room_id, alice, carol, dave = group.room_id, group.alice, group.carol, group.dave

    def own_leave_in_left_room(user_id: str):
        """Build a sync check that returns user_id's leave event from the room's rooms.leave timeline."""

        def find(response):
            left = response.rooms.leave.get(room_id)
            if left is None:
                return None
            return membership_change(left.timeline.events, user_id, "leave")

        return find

    # Dave's sync moves the room to rooms.leave, and its timeline ends with the kick and its reason.
    kick_seen_by_dave = await sync_until(
        dave, own_leave_in_left_room(dave.user_id), f"his kick event in {room_id} under rooms.leave"
    )
    assert kick_seen_by_dave.sender == alice.user_id
    assert kick_seen_by_dave.content.get("reason") == KICK_REASON

    # Carol's sync moves the room to rooms.leave with her own leave event.
    leave_seen_by_carol = await sync_until(
        carol, own_leave_in_left_room(carol.user_id), f"her leave event in {room_id} under rooms.leave"
    )
    assert leave_seen_by_carol.sender == carol.user_id
