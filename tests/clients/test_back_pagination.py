"""Scenario: a fresh client with a short sync timeline pages back through 60 messages."""

from nio import (
    LoginResponse,
    MessageDirection,
    RoomCreateEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from conftest import PASSWORD
from matrix_helpers import create_shared_room, expect

MESSAGE_COUNT = 60
SYNC_TIMELINE_LIMIT = 5
PAGE_SIZE = 10
# Enough pages for every event in the room at PAGE_SIZE, with room to spare.
MAX_PAGES = 30


async def test_back_pagination_to_room_start(register_user, new_client):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    bodies = [f"Message {number} of {MESSAGE_COUNT}" for number in range(1, MESSAGE_COUNT + 1)]
    for body in bodies:
        expect(await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}), RoomSendResponse)

    # Bob logs in on a new device that has never synced.
    fresh = new_client("bob")
    expect(await fresh.login(PASSWORD, device_name="bob tablet"), LoginResponse)
    sync = expect(
        await fresh.sync(timeout=0, sync_filter={"room": {"timeline": {"limit": SYNC_TIMELINE_LIMIT}}}),
        SyncResponse,
    )
    assert room_id in sync.rooms.join
    timeline = sync.rooms.join[room_id].timeline

    assert 0 < len(timeline.events) <= SYNC_TIMELINE_LIMIT
    assert timeline.limited is True
    assert timeline.prev_batch

    # Page backwards from prev_batch. Each chunk is newest first, and a response without "end" is the start of the room.
    older_events = []
    token = timeline.prev_batch
    reached_start = False
    for _ in range(MAX_PAGES):
        page = expect(
            await fresh.room_messages(room_id, start=token, direction=MessageDirection.back, limit=PAGE_SIZE),
            RoomMessagesResponse,
        )
        assert len(page.chunk) <= PAGE_SIZE
        older_events.extend(page.chunk)
        if page.end is None:
            reached_start = True
            break
        assert page.chunk, f"page from {token} is empty but still has end={page.end!r}"
        token = page.end

    assert reached_start, f"no response without 'end' after {MAX_PAGES} pages of {PAGE_SIZE}"
    assert isinstance(older_events[-1], RoomCreateEvent), f"oldest event is {older_events[-1]!r}"

    events_in_order = list(reversed(older_events)) + list(timeline.events)
    event_ids = [event.event_id for event in events_in_order]
    assert len(event_ids) == len(set(event_ids)), "an event was returned twice"

    seen_bodies = [
        event.body
        for event in events_in_order
        if isinstance(event, RoomMessageText) and event.sender == alice.user_id
    ]
    assert seen_bodies == bodies
