"""Scenarios of the professional policy as an Element-like client drives it.

Each test starts its server with policy.name = "professional" and small limits
through the lattice_policy marker, so the limits are reached in a few requests.
"""

import pytest
from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    RoomCreateError,
    RoomCreateResponse,
    RoomInviteError,
    RoomPreset,
    RoomSendResponse,
)

from matrix_helpers import (
    accept_invite,
    describe_response,
    expect,
    joined_member_ids,
    raw_request,
    room_path,
    sync_until,
)

CONNECTIONS_PREFIX = "/_matrix/client/unstable/dev.lattice.connections"
NOTE = "Hello Bob, we met at the product review. Could we connect?"

# Small limits that the scenarios reach; the weekly request limit stays off.
PROFESSIONAL = {
    "name": "professional",
    "pending_message_limit": 1,
    "max_group_size": 3,
    "daily_message_limit": 0,
    "weekly_connection_request_limit": 0,
}


async def send_text(client: AsyncClient, room_id: str, body: str):
    return await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})


async def start_chat(requester: AsyncClient, invitee: AsyncClient) -> str:
    """Send a connection request the way Element's "Start chat" does, and return the room ID."""
    created = expect(
        await requester.room_create(
            is_direct=True,
            invite=[invitee.user_id],
            preset=RoomPreset.trusted_private_chat,
        ),
        RoomCreateResponse,
    )
    return created.room_id


async def connect(requester: AsyncClient, invitee: AsyncClient) -> str:
    """Send a connection request, let the invitee accept it from their sync, and return the room ID."""
    room_id = await start_chat(requester, invitee)
    await accept_invite(invitee, room_id)
    return room_id


@pytest.mark.lattice_policy(**PROFESSIONAL)
async def test_start_chat_is_connection_request(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")

    room_id = await start_chat(alice, bob)

    # The first message carries the note; the pending message limit of 1 stops the second.
    expect(await send_text(alice, room_id, NOTE), RoomSendResponse)
    status, body = await raw_request(
        alice,
        "PUT",
        room_path(room_id, "send", "m.room.message", "second-before-accept"),
        {"msgtype": "m.text", "body": "Are you there?"},
    )
    assert status == 403, f"second message before the accept: {status} {body}"
    assert body["errcode"] == "M_FORBIDDEN", body
    assert "not accepted your connection request" in body["error"], body

    # Bob sees the direct invite in his sync and the request on the namespaced endpoint.
    invite = await sync_until(bob, lambda response: response.rooms.invite.get(room_id), f"the invite to {room_id}")
    bob_invites = [
        event
        for event in invite.invite_state
        if isinstance(event, InviteMemberEvent) and event.state_key == bob.user_id
    ]
    assert len(bob_invites) == 1, f"invite_state: {invite.invite_state!r}"
    assert bob_invites[0].content.get("is_direct") is True
    status, requests = await raw_request(bob, "GET", f"{CONNECTIONS_PREFIX}/requests")
    assert status == 200, requests
    assert [request["room_id"] for request in requests["incoming"]] == [room_id], requests
    assert requests["incoming"][0]["user_id"] == alice.user_id

    # Accepting is joining; after it both can write freely. Bob's sync already
    # delivered the invite, so he joins without waiting for it again.
    joined = expect(await bob.join(room_id), JoinResponse)
    assert joined.room_id == room_id
    assert await joined_member_ids(alice, room_id) == {alice.user_id, bob.user_id}
    expect(await send_text(alice, room_id, "Thanks for accepting."), RoomSendResponse)
    expect(await send_text(bob, room_id, "Glad to connect."), RoomSendResponse)

    status, connections = await raw_request(alice, "GET", f"{CONNECTIONS_PREFIX}/connections")
    assert status == 200, connections
    assert [entry["user_id"] for entry in connections["connections"]] == [bob.user_id], connections


@pytest.mark.lattice_policy(**PROFESSIONAL)
async def test_group_of_connections_and_limits(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    carol = await register_user("carol")
    dave = await register_user("dave")
    erin = await register_user("erin")

    bob_room = await connect(alice, bob)
    await connect(carol, alice)
    await connect(alice, dave)

    # A group of alice and two connections fills max_group_size = 3.
    created = expect(
        await alice.room_create(
            name="Hiring panel",
            invite=[bob.user_id, carol.user_id],
            preset=RoomPreset.private_chat,
        ),
        RoomCreateResponse,
    )
    group_id = created.room_id
    await accept_invite(bob, group_id)
    await accept_invite(carol, group_id)
    assert await joined_member_ids(alice, group_id) == {alice.user_id, bob.user_id, carol.user_id}

    # Erin is not a connection of alice, so alice cannot invite her anywhere.
    rejected = await alice.room_invite(bob_room, erin.user_id)
    assert isinstance(rejected, RoomInviteError), describe_response(rejected)
    assert rejected.status_code == "M_FORBIDDEN", describe_response(rejected)
    assert "not one of your connections" in rejected.message, describe_response(rejected)

    # Dave is a connection, but a fourth person would pass the group cap.
    over_cap = await alice.room_invite(group_id, dave.user_id)
    assert isinstance(over_cap, RoomInviteError), describe_response(over_cap)
    assert over_cap.status_code == "M_FORBIDDEN", describe_response(over_cap)
    assert "at most 3 people" in over_cap.message, describe_response(over_cap)

    # createRoom with too many invitees is rejected before any room exists.
    rooms_before = set((await alice.joined_rooms()).rooms)
    too_big = await alice.room_create(invite=[bob.user_id, carol.user_id, dave.user_id], preset=RoomPreset.private_chat)
    assert isinstance(too_big, RoomCreateError), describe_response(too_big)
    assert too_big.status_code == "M_FORBIDDEN", describe_response(too_big)
    assert set((await alice.joined_rooms()).rooms) == rooms_before


@pytest.mark.lattice_policy(**{**PROFESSIONAL, "daily_message_limit": 3})
async def test_daily_message_limit(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")

    room_id = await start_chat(alice, bob)
    expect(await send_text(alice, room_id, NOTE), RoomSendResponse)
    await accept_invite(bob, room_id)

    # The note was message 1 of 3 today.
    expect(await send_text(alice, room_id, "Message two"), RoomSendResponse)
    expect(await send_text(alice, room_id, "Message three"), RoomSendResponse)

    status, body = await raw_request(
        alice,
        "PUT",
        room_path(room_id, "send", "m.room.message", "over-the-daily-limit"),
        {"msgtype": "m.text", "body": "Message four"},
    )
    assert status == 403, f"fourth message of the day: {status} {body}"
    assert body["errcode"] == "DEV.LATTICE.LIMIT_EXCEEDED", body
    assert body["limit"] == 3, body
    assert 0 < body["retry_after_ms"] <= 24 * 60 * 60 * 1000, body

    # nio reports the same rejection as an error with the namespaced errcode.
    rejected = await send_text(alice, room_id, "Message five")
    assert not isinstance(rejected, RoomSendResponse), describe_response(rejected)
    assert rejected.status_code == "DEV.LATTICE.LIMIT_EXCEEDED", describe_response(rejected)

    # The limit is per sender: bob still has his three messages.
    expect(await send_text(bob, room_id, "Bob's first message"), RoomSendResponse)
