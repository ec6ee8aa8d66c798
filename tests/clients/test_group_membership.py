"""Scenario: a room of four where one member leaves and one is kicked with a reason."""

from nio import RoomKickResponse, RoomLeaveResponse, RoomMemberEvent

from matrix_helpers import create_shared_room, expect, joined_member_ids, joined_timeline, sync_until

KICK_REASON = "Posting off-topic links"


def membership_change(events, user_id: str, membership: str):
    """Return the member event that set user_id to membership, or None."""
    for event in events:
        if isinstance(event, RoomMemberEvent) and event.state_key == user_id and event.membership == membership:
            return event
    return None


async def test_group_leave_and_kick(register_user):
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

    # Dave's sync moves the room to rooms.leave, with the kick event and its reason.
    def dave_left_room(response):
        left = response.rooms.leave.get(room_id)
        if left is None:
            return None
        return membership_change(left.timeline.events, dave.user_id, "leave")

    kick_seen_by_dave = await sync_until(dave, dave_left_room, f"{room_id} under rooms.leave")
    assert kick_seen_by_dave.sender == alice.user_id
    assert kick_seen_by_dave.content.get("reason") == KICK_REASON

    # Carol's sync moves the room to rooms.leave with her own leave event.
    def carol_left_room(response):
        left = response.rooms.leave.get(room_id)
        if left is None:
            return None
        return membership_change(left.timeline.events, carol.user_id, "leave")

    leave_seen_by_carol = await sync_until(carol, carol_left_room, f"{room_id} under rooms.leave")
    assert leave_seen_by_carol.sender == carol.user_id
