"""Scenario: alice opens a direct chat with bob, bob sees the invite and joins."""

from nio import InviteMemberEvent, JoinResponse, RoomCreateResponse, RoomMemberEvent, RoomPreset

from matrix_helpers import (
    expect,
    joined_member_ids,
    joined_timeline,
    raw_request,
    room_path,
    sync_until,
)

INVITE_REASON = "Can we talk about the Q3 hiring plan?"


async def test_direct_chat_invite_and_join(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")

    created = expect(
        await alice.room_create(is_direct=True, invite=[bob.user_id], preset=RoomPreset.trusted_private_chat),
        RoomCreateResponse,
    )
    room_id = created.room_id
    assert room_id.startswith("!")

    # Bob's sync lists the room under rooms.invite, with his own invite member event in the stripped state.
    invite = await sync_until(
        bob,
        lambda response: response.rooms.invite.get(room_id),
        f"the invite to {room_id}",
    )
    bob_invites = [
        event
        for event in invite.invite_state
        if isinstance(event, InviteMemberEvent) and event.state_key == bob.user_id
    ]
    assert len(bob_invites) == 1, f"invite_state: {invite.invite_state!r}"
    assert bob_invites[0].membership == "invite"
    assert bob_invites[0].sender == alice.user_id
    assert bob_invites[0].content.get("is_direct") is True

    joined = expect(await bob.join(room_id), JoinResponse)
    assert joined.room_id == room_id

    # Alice's sync shows bob's join in the room timeline.
    bob_join = await sync_until(
        alice,
        lambda response: next(
            (
                event
                for event in joined_timeline(response, room_id)
                if isinstance(event, RoomMemberEvent)
                and event.state_key == bob.user_id
                and event.membership == "join"
            ),
            None,
        ),
        f"bob's join in {room_id}",
    )
    assert bob_join.sender == bob.user_id

    # Bob's own sync now lists the room as joined.
    await sync_until(
        bob,
        lambda response: True if room_id in response.rooms.join else None,
        f"{room_id} under rooms.join",
    )

    both = {alice.user_id, bob.user_id}
    assert await joined_member_ids(alice, room_id) == both
    assert await joined_member_ids(bob, room_id) == both

    # The room lists that nio builds from sync show the same two joined members and nobody invited.
    for client in (alice, bob):
        room = client.rooms[room_id]
        assert set(room.users) == both
        assert room.invited_users == {}


async def test_invite_reason_shown_to_invitee(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")

    created = expect(
        await alice.room_create(is_direct=True, preset=RoomPreset.trusted_private_chat),
        RoomCreateResponse,
    )
    room_id = created.room_id

    # nio's room_invite() has no reason parameter, so the invite is sent as raw JSON.
    status, body = await raw_request(
        alice,
        "POST",
        room_path(room_id, "invite"),
        {"user_id": bob.user_id, "reason": INVITE_REASON},
    )
    assert status == 200, f"POST {room_path(room_id, 'invite')} returned {status}: {body}"

    invite = await sync_until(
        bob,
        lambda response: response.rooms.invite.get(room_id),
        f"the invite to {room_id}",
    )
    bob_invites = [
        event
        for event in invite.invite_state
        if isinstance(event, InviteMemberEvent) and event.state_key == bob.user_id
    ]
    assert len(bob_invites) == 1, f"invite_state: {invite.invite_state!r}"
    assert bob_invites[0].sender == alice.user_id
    assert bob_invites[0].membership == "invite"
    assert bob_invites[0].content.get("reason") == INVITE_REASON
