"""Helpers shared by the matrix-nio scenarios: response checks, bounded sync loops, room setup."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from nio import (
    AsyncClient,
    ErrorResponse,
    JoinedMembersResponse,
    JoinResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomPreset,
    SyncResponse,
)

ResponseT = TypeVar("ResponseT")
FoundT = TypeVar("FoundT")

SYNC_DEADLINE_S = 15.0
SYNC_POLL_MS = 1000
MAX_SYNC_REQUESTS = 100


def describe_response(response: Any) -> str:
    """Format a nio response with its HTTP request and raw body, for assertion messages."""
    lines = [repr(response)]
    transport = getattr(response, "transport_response", None)
    if transport is not None:
        lines.append(f"request: {transport.method} {transport.url}")
        lines.append(f"HTTP status: {transport.status}")
        # aiohttp keeps the body it already read in _body, so it can be shown after release.
        body = getattr(transport, "_body", None)
        if body is not None:
            lines.append(f"response body: {body[:2000].decode(errors='replace')}")
    return "\n".join(lines)


def expect(response: Any, expected_type: type[ResponseT]) -> ResponseT:
    """Return the response if it has the expected type, or fail the test with its details."""
    assert isinstance(response, expected_type), (
        f"expected {expected_type.__name__}, got {type(response).__name__}\n{describe_response(response)}"
    )
    return response


def expect_error(response: Any, errcode: str) -> ErrorResponse:
    """Return the error response if it carries the Matrix errcode, or fail the test."""
    assert isinstance(response, ErrorResponse), (
        f"expected an error with errcode {errcode}, got {type(response).__name__}\n{describe_response(response)}"
    )
    assert response.status_code == errcode, f"expected errcode {errcode}\n{describe_response(response)}"
    return response


async def sync_until(
    client: AsyncClient,
    find: Callable[[SyncResponse], FoundT | None],
    description: str,
    sync_filter: dict[str, Any] | None = None,
) -> FoundT:
    """Sync the client until find() returns a value other than None, and return that value.

    Each request long-polls for at most SYNC_POLL_MS, and the loop stops after
    SYNC_DEADLINE_S or MAX_SYNC_REQUESTS requests, whichever comes first.
    """
    deadline = time.monotonic() + SYNC_DEADLINE_S
    requests = 0

    while time.monotonic() < deadline and requests < MAX_SYNC_REQUESTS:
        requests += 1
        response = expect(await client.sync(timeout=SYNC_POLL_MS, sync_filter=sync_filter), SyncResponse)
        found = find(response)
        if found is not None:
            return found
        # The pause bounds the request rate if the server returns at once instead of long-polling.
        await asyncio.sleep(0.05)

    raise AssertionError(
        f"{client.user_id} did not see {description} within {SYNC_DEADLINE_S:.0f} s ({requests} sync requests)"
    )


def joined_timeline(response: SyncResponse, room_id: str) -> list[Any]:
    """Return the timeline events of a joined room in one sync response."""
    room = response.rooms.join.get(room_id)
    return list(room.timeline.events) if room else []


def joined_ephemeral(response: SyncResponse, room_id: str) -> list[Any]:
    """Return the ephemeral events (typing, receipts) of a joined room in one sync response."""
    room = response.rooms.join.get(room_id)
    return list(room.ephemeral) if room else []


async def joined_member_ids(client: AsyncClient, room_id: str) -> set[str]:
    """Return the user IDs that GET /rooms/{roomId}/joined_members lists for the client."""
    response = expect(await client.joined_members(room_id), JoinedMembersResponse)
    return {member.user_id for member in response.members}


async def accept_invite(client: AsyncClient, room_id: str) -> None:
    """Wait until the client's sync shows the invite to room_id, then join the room."""
    await sync_until(
        client,
        lambda response: True if room_id in response.rooms.invite else None,
        f"an invite to {room_id}",
    )
    joined = expect(await client.join(room_id), JoinResponse)
    assert joined.room_id == room_id


async def create_shared_room(creator: AsyncClient, *members: AsyncClient, name: str | None = None) -> str:
    """Create a private room, invite the members, let each of them join, and return its room ID."""
    created = expect(
        await creator.room_create(name=name, preset=RoomPreset.private_chat),
        RoomCreateResponse,
    )
    room_id = created.room_id

    for member in members:
        expect(await creator.room_invite(room_id, member.user_id), RoomInviteResponse)
    for member in members:
        await accept_invite(member, room_id)

    expected_members = {creator.user_id, *(member.user_id for member in members)}
    assert await joined_member_ids(creator, room_id) == expected_members
    return room_id


async def raw_request(
    client: AsyncClient, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Send a Client-Server API request with the client's access token and return the status and JSON body.

    The scenarios use it where nio has no parameter for a spec field, such as an invite reason.
    """
    headers = {"Authorization": f"Bearer {client.access_token}"}
    url = f"{client.homeserver}{path}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(method, url, headers=headers, json=body, params=query) as response:
            text = await response.text()
            parsed = json.loads(text) if text else {}
            return response.status, parsed


def room_path(room_id: str, *parts: str) -> str:
    """Build /_matrix/client/v3/rooms/{roomId}/... with every path segment percent-encoded."""
    segments = [quote(room_id, safe="")] + [quote(part, safe="") for part in parts]
    return "/_matrix/client/v3/rooms/" + "/".join(segments)
