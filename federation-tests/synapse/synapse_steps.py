"""Steps shared by the Synapse scenarios: what a user of either server sees."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.client import MatrixClient, wait_until


def bodies(client: MatrixClient, room_id: str, limit: int = 100) -> list[str]:
    """Bodies of the room's text messages that `client` reads with `/messages`, oldest first."""
    return [
        event["content"]["body"]
        for event in client.messages(room_id, limit)
        if event["type"] == "m.room.message" and "body" in event.get("content", {})
    ]


def wait_for_join(client: MatrixClient, room_id: str, user_id: str, timeout_s: float = 30.0) -> None:
    """Wait until `client` sees `user_id` joined: in `/members` and in its `/sync`."""
    client.wait_for_membership(room_id, user_id, "join", timeout_s)


def rich_text(body: str, html: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, "format": "org.matrix.custom.html", "formatted_body": html}


def reply(to_event_id: str, body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, "m.relates_to": {"m.in_reply_to": {"event_id": to_event_id}}}


def edit(of_event_id: str, new_body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": f"* {new_body}",
        "m.new_content": {"msgtype": "m.text", "body": new_body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": of_event_id},
    }


def event_by_id(client: MatrixClient, room_id: str, event_id: str) -> dict[str, Any]:
    """Wait until `client` can read the event with `/rooms/{roomId}/event/{eventId}`, and return it."""

    def fetch() -> dict[str, Any] | None:
        response = client.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}")
        return response.json() if response.status_code == 200 else None

    return wait_until(fetch, f"{client.user_id} can read {event_id}", 30.0)


def state_content(client: MatrixClient, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
    response = client.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state/{event_type}/{quote(state_key, safe='')}")
    return response.json() if response.status_code == 200 else None


def converse(first: MatrixClient, second: MatrixClient, room_id: str) -> None:
    """Exchange rich text, a reply and an edit, and check that both users read the same timeline."""
    html = "<p>Can we meet <strong>Tuesday</strong>?</p>"
    question_id = first.send(room_id, "m.room.message", rich_text("Can we meet Tuesday?", html))
    question = second.wait_for_text(room_id, "Can we meet Tuesday?")
    assert question["event_id"] == question_id
    assert question["sender"] == first.user_id
    assert question["content"]["formatted_body"] == html

    answer_id = second.send(room_id, "m.room.message", reply(question_id, "Tuesday works"))
    answer = first.wait_for_text(room_id, "Tuesday works")
    assert answer["sender"] == second.user_id
    assert answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == question_id

    edit_id = second.send(room_id, "m.room.message", edit(answer_id, "Tuesday at 10 works"))
    edited = first.wait_for_event(room_id, lambda event: event.get("event_id") == edit_id, "the edit")
    assert edited["content"]["m.new_content"]["body"] == "Tuesday at 10 works"
    assert edited["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": answer_id}

    expected = ["Can we meet Tuesday?", "Tuesday works", "* Tuesday at 10 works"]
    assert bodies(first, room_id)[-3:] == expected
    assert bodies(second, room_id)[-3:] == expected


def member_content(events: list[dict[str, Any]], user_id: str) -> dict[str, Any]:
    """Content of `user_id`'s member event among state events."""
    for event in events:
        if event["type"] == "m.room.member" and event["state_key"] == user_id:
            return event["content"]
    raise AssertionError(f"no member event of {user_id} among {[event['type'] for event in events]}")

