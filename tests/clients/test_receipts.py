"""Scenario: alice sees bob's read receipts on her messages."""

from nio import (
    FullyReadEvent,
    ReceiptEvent,
    RoomReadMarkersResponse,
    RoomSendResponse,
    UpdateReceiptMarkerResponse,
)

from matrix_helpers import create_shared_room, expect, joined_ephemeral, joined_timeline, sync_until


async def send_and_deliver(sender, receiver, room_id: str, body: str) -> str:
    """Send a text message, sync the receiver until it has the event, and return the event ID."""
    sent = expect(
        await sender.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}),
        RoomSendResponse,
    )
    await sync_until(
        receiver,
        lambda response: True
        if any(event.event_id == sent.event_id for event in joined_timeline(response, room_id))
        else None,
        f"message {sent.event_id}",
    )
    return sent.event_id


def read_receipt(room_id: str, user_id: str, event_id: str):
    """Build a sync check that returns the m.read receipt of user_id on event_id."""

    def find(response):
        for event in joined_ephemeral(response, room_id):
            if not isinstance(event, ReceiptEvent):
                continue
            for receipt in event.receipts:
                if receipt.user_id == user_id and receipt.event_id == event_id and receipt.receipt_type == "m.read":
                    return receipt
        return None

    return find


async def test_receipt_endpoint_seen_by_sender(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    event_id = await send_and_deliver(alice, bob, room_id, "Did you read the contract?")

    # nio sends POST /rooms/{roomId}/receipt/m.read/{eventId} with thread_id "main".
    expect(await bob.update_receipt_marker(room_id, event_id), UpdateReceiptMarkerResponse)

    receipt = await sync_until(alice, read_receipt(room_id, bob.user_id, event_id), "bob's m.read receipt")
    assert receipt.user_id == bob.user_id
    assert receipt.event_id == event_id
    assert receipt.receipt_type == "m.read"
    assert receipt.thread_id == "main"
    assert receipt.timestamp > 0


async def test_read_markers_seen_by_sender(register_user):
    alice = await register_user("alice")
    bob = await register_user("bob")
    room_id = await create_shared_room(alice, bob)

    await send_and_deliver(alice, bob, room_id, "First point")
    last_id = await send_and_deliver(alice, bob, room_id, "Second point")

    # POST /rooms/{roomId}/read_markers moves bob's fully read marker and sends an unthreaded m.read receipt.
    expect(
        await bob.room_read_markers(room_id, fully_read_event=last_id, read_event=last_id),
        RoomReadMarkersResponse,
    )

    receipt = await sync_until(alice, read_receipt(room_id, bob.user_id, last_id), "bob's m.read receipt")
    assert receipt.user_id == bob.user_id
    assert receipt.event_id == last_id
    assert receipt.thread_id is None

    # Bob's own sync carries the fully read marker as room account data.
    fully_read = await sync_until(
        bob,
        lambda response: next(
            (
                event
                for event in (response.rooms.join[room_id].account_data if room_id in response.rooms.join else [])
                if isinstance(event, FullyReadEvent)
            ),
            None,
        ),
        "the m.fully_read account data",
    )
    assert fully_read.event_id == last_id
