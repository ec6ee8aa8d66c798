"""Scenario: bob changes his display name and alice sees the new name in their room."""

from nio import (
    JoinedMembersResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    RoomMemberEvent,
)

from matrix_helpers import create_shared_room, expect, joined_timeline, sync_until

NEW_NAME = "Bob Builder (Ops)"


async def test_display_name_change_seen_in_room(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    # Alice catches up first, so the name change must arrive in a later sync.
    await sync_until(alice, lambda response: True if room_id in response.rooms.join else None, f"{room_id} joined")

    expect(await bob.set_displayname(NEW_NAME), ProfileSetDisplayNameResponse)

    # The server sends a new join member event carrying the new name into every room bob is in.
    def renamed(response):
        for event in joined_timeline(response, room_id):
            if (
                isinstance(event, RoomMemberEvent)
                and event.state_key == bob.user_id
                and event.content.get("displayname") == NEW_NAME
            ):
                return event
        return None

    member_event = await sync_until(alice, renamed, "bob's member event with his new display name")
    assert member_event.sender == bob.user_id
    assert member_event.membership == "join"
    assert member_event.prev_membership == "join"

    assert alice.rooms[room_id].user_name(bob.user_id) == NEW_NAME

    members = expect(await alice.joined_members(room_id), JoinedMembersResponse)
    names = {member.user_id: member.display_name for member in members.members}
    assert names[bob.user_id] == NEW_NAME

    profile = expect(await alice.get_displayname(bob.user_id), ProfileGetDisplayNameResponse)
    assert profile.displayname == NEW_NAME
