"""Scenario: a mautrix-python application service bridges a remote chat into a
room with a matrix-nio user, and relays that user's reply back.

The application service is a real mautrix AppService. It receives the server's
transactions and ping on a loopback port, registers a ghost user in its
namespace, and acts as that ghost through identity assertion.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import Event, EventType
from nio import ProfileGetDisplayNameResponse, RoomMessageText, RoomSendResponse

from conftest import SERVER_NAME, AppServiceRegistration
from matrix_helpers import accept_invite, expect, joined_timeline, raw_request, sync_until

REPLY_TIMEOUT_S = 15.0


def make_appservice(homeserver: str, registration: AppServiceRegistration, state_path: Path) -> AppService:
    return AppService(
        server=homeserver,
        domain=SERVER_NAME,
        as_token=registration.as_token,
        hs_token=registration.hs_token,
        bot_localpart=registration.sender_localpart,
        id=registration.id,
        log="bridge",
        state_store=FileASStateStore(path=str(state_path), binary=False),
        ephemeral_events=True,
    )


@pytest.mark.lattice_appservice
async def test_bridge_relays_messages_both_ways(homeserver, appservice_registration, register_user, tmp_path):
    registration: AppServiceRegistration = appservice_registration
    bob = await register_user("bob")
    from_matrix: asyncio.Queue[Event] = asyncio.Queue()

    appservice = make_appservice(homeserver, registration, tmp_path / "bridge-state.json")

    async def relay_to_remote(event: Event) -> None:
        if event.type == EventType.ROOM_MESSAGE and event.sender == bob.user_id:
            await from_matrix.put(event)

    appservice.matrix_event_handler(relay_to_remote)
    await appservice.start(host="127.0.0.1", port=registration.port)
    try:
        # The bridge checks that the server reaches it.
        duration_ms = await appservice.ping_self("scenario-ping")
        assert duration_ms >= 0

        # A remote user appears as a ghost in the bridge's namespace.
        ghost_id = f"@{registration.user_prefix}alice:{SERVER_NAME}"
        ghost = appservice.intent.user(ghost_id)
        await ghost.ensure_registered()
        await ghost.set_displayname("Alice (remote)")
        room_id = await ghost.create_room(name="Bridged chat", invitees=[bob.user_id])
        await accept_invite(bob, room_id)

        # A remote message is bridged into the room and reaches bob.
        event_id = await ghost.send_text(room_id, "Hello from the remote network")
        bridged: RoomMessageText = await sync_until(
            bob,
            lambda response: next(
                (e for e in joined_timeline(response, room_id) if getattr(e, "event_id", None) == event_id),
                None,
            ),
            "the bridged message",
        )
        assert isinstance(bridged, RoomMessageText)
        assert bridged.sender == ghost_id
        assert bridged.body == "Hello from the remote network"

        # bob's reply reaches the bridge in a transaction.
        sent = expect(
            await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "Hi Alice, got it"}),
            RoomSendResponse,
        )
        reply = await asyncio.wait_for(from_matrix.get(), timeout=REPLY_TIMEOUT_S)
        assert reply.event_id == sent.event_id
        assert reply.room_id == room_id
        assert reply.sender == bob.user_id
        assert reply.content.body == "Hi Alice, got it"

        # Other users see the ghost's profile, and cannot take its namespace.
        profile = expect(await bob.get_displayname(ghost_id), ProfileGetDisplayNameResponse)
        assert profile.displayname == "Alice (remote)"
        status, body = await raw_request(
            bob,
            "GET",
            "/_matrix/client/v3/register/available",
            query={"username": f"{registration.user_prefix}mallory"},
        )
        assert status == 400
        assert body["errcode"] == "M_EXCLUSIVE"
    finally:
        await appservice.stop()
