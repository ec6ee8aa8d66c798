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
    """The event as `client` reads it with `/rooms/{roomId}/event/{eventId}`, once it has arrived."""

    def fetch() -> dict[str, Any] | None:
        response = client.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}")
        return response.json() if response.status_code == 200 else None

    return wait_until(fetch, f"{client.user_id} can read {event_id}", 30.0)


def state_content(client: MatrixClient, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
    response = client.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state/{event_type}/{quote(state_key, safe='')}")
    return response.json() if response.status_code == 200 else None
