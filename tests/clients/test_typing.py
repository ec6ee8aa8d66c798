"""Scenario: bob sees alice start and stop typing in their shared room."""

from nio import RoomTypingResponse, TypingNoticeEvent

from matrix_helpers import create_shared_room, expect, joined_ephemeral, sync_until


def typing_users(room_id: str, expected: list[str]):
    """Build a sync check that returns the typing user list once it equals expected."""

    def find(response):
        for event in joined_ephemeral(response, room_id):
            if isinstance(event, TypingNoticeEvent) and event.users == expected:
                return event.users
        return None

    return find


async def test_typing_seen_by_other_member(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    # Bob catches up first, so the typing notice must arrive in a later sync.
    await sync_until(bob, lambda response: True if room_id in response.rooms.join else None, f"{room_id} joined")

    expect(await alice.room_typing(room_id, typing_state=True, timeout=30_000), RoomTypingResponse)
    users = await sync_until(bob, typing_users(room_id, [alice.user_id]), "alice typing")
    assert users == [alice.user_id]

    expect(await alice.room_typing(room_id, typing_state=False), RoomTypingResponse)
    users = await sync_until(bob, typing_users(room_id, []), "an m.typing event with no users after alice stopped")
    assert users == []


async def test_typing_expires_after_timeout(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)
    await sync_until(bob, lambda response: True if room_id in response.rooms.join else None, f"{room_id} joined")

    # Alice's client goes away without sending typing=false, so the server ends the notice after 1000 ms.
    expect(await alice.room_typing(room_id, typing_state=True, timeout=1_000), RoomTypingResponse)
    await sync_until(bob, typing_users(room_id, [alice.user_id]), "alice typing")

    users = await sync_until(bob, typing_users(room_id, []), "an m.typing event with no users after the timeout")
    assert users == []
