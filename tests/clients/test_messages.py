"""Scenario: alice and bob exchange plain and HTML messages in a shared room."""

from nio import RoomMessageText, RoomSendResponse

from matrix_helpers import create_shared_room, expect, joined_timeline, sync_until

PLAIN = {"msgtype": "m.text", "body": "Hi Bob, are you free at 3?\nSecond line: café ☕"}
RICH_FROM_ALICE = {
    "msgtype": "m.text",
    "body": "Agenda: *budget* and <review>",
    "format": "org.matrix.custom.html",
    "formatted_body": "Agenda: <em>budget</em> and &lt;review&gt;",
}
RICH_FROM_BOB = {
    "msgtype": "m.text",
    "body": "Sounds good\n- budget\n- review",
    "format": "org.matrix.custom.html",
    "formatted_body": "<p>Sounds <strong>good</strong></p><ul><li>budget</li><li>review</li></ul>",
}


async def send_message(client, room_id: str, content: dict) -> str:
    response = expect(await client.room_send(room_id, "m.room.message", dict(content)), RoomSendResponse)
    assert response.event_id.startswith("$")
    return response.event_id


async def receive_messages(client, room_id: str, event_ids: list[str]) -> list[RoomMessageText]:
    """Sync until the client has seen every event in event_ids, and return them in that order."""
    seen: dict[str, RoomMessageText] = {}

    def collect(response):
        for event in joined_timeline(response, room_id):
            if event.event_id in event_ids:
                seen[event.event_id] = event
        return True if len(seen) == len(event_ids) else None

    await sync_until(client, collect, f"messages {event_ids}")
    return [seen[event_id] for event_id in event_ids]


async def test_plain_and_rich_messages_both_ways(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    plain_id = await send_message(alice, room_id, PLAIN)
    rich_id = await send_message(alice, room_id, RICH_FROM_ALICE)

    plain, rich = await receive_messages(bob, room_id, [plain_id, rich_id])

    assert isinstance(plain, RoomMessageText)
    assert plain.sender == alice.user_id
    assert plain.body == PLAIN["body"]
    assert plain.formatted_body is None
    assert plain.source["content"] == PLAIN

    assert isinstance(rich, RoomMessageText)
    assert rich.sender == alice.user_id
    assert rich.body == RICH_FROM_ALICE["body"]
    assert rich.format == "org.matrix.custom.html"
    assert rich.formatted_body == RICH_FROM_ALICE["formatted_body"]
    assert rich.source["content"] == RICH_FROM_ALICE

    # Bob's timeline shows alice's two messages in the order she sent them.
    assert plain.server_timestamp <= rich.server_timestamp

    reply_id = await send_message(bob, room_id, RICH_FROM_BOB)
    (reply,) = await receive_messages(alice, room_id, [reply_id])

    assert isinstance(reply, RoomMessageText)
    assert reply.sender == bob.user_id
    assert reply.body == RICH_FROM_BOB["body"]
    assert reply.format == "org.matrix.custom.html"
    assert reply.formatted_body == RICH_FROM_BOB["formatted_body"]
    assert reply.source["content"] == RICH_FROM_BOB


async def test_retried_send_delivers_once(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)
    content = {"msgtype": "m.text", "body": "Sent on a flaky connection"}

    # A client that retries after a lost response reuses its transaction ID, and the server returns the same event.
    first = expect(await alice.room_send(room_id, "m.room.message", dict(content), tx_id="retry-1"), RoomSendResponse)
    retry = expect(await alice.room_send(room_id, "m.room.message", dict(content), tx_id="retry-1"), RoomSendResponse)
    assert retry.event_id == first.event_id

    marker_id = await send_message(alice, room_id, {"msgtype": "m.text", "body": "After the retry"})

    # Bob's timeline contains the retried message once, before the next message.
    timeline = []

    def until_marker(response):
        timeline.extend(joined_timeline(response, room_id))
        return True if any(event.event_id == marker_id for event in timeline) else None

    await sync_until(bob, until_marker, f"message {marker_id}")
    bodies = [event.body for event in timeline if isinstance(event, RoomMessageText)]
    assert bodies == [content["body"], "After the retry"]

    # Alice's own sync carries the transaction ID on her message, so her client can replace its local echo.
    own_echo = await sync_until(
        alice,
        lambda response: next(
            (event for event in joined_timeline(response, room_id) if event.event_id == first.event_id),
            None,
        ),
        f"her own message {first.event_id}",
    )
    assert own_echo.transaction_id == "retry-1"
