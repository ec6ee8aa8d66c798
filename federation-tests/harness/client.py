"""A small Matrix client over httpx, as a scenario's user drives a homeserver.

Each method is one Client-Server API call. Calls that must succeed raise an
AssertionError that shows the request and the server's JSON, so a failing
scenario names the step. `sync_until` long-polls `/sync` until a condition
holds, for a bounded time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

FoundT = TypeVar("FoundT")

REQUEST_TIMEOUT_S = 30.0
SYNC_POLL_MS = 1000
WAIT_S = 20.0


def _q(value: str) -> str:
    return quote(value, safe="")


class MatrixError(AssertionError):
    """An error response (HTTP 4xx or 5xx) to a Client-Server call."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        try:
            self.body = response.json()
        except ValueError:
            self.body = {"raw": response.text[:500]}
        self.errcode = self.body.get("errcode") if isinstance(self.body, dict) else None
        super().__init__(f"{response.request.method} {response.request.url.path} -> HTTP {self.status}: {self.body}")


class MatrixClient:
    """One logged-in device of a user on one homeserver."""

    def __init__(self, base_url: str, user_id: str, access_token: str, device_id: str) -> None:
        self.base_url = base_url
        self.user_id = user_id
        self.access_token = access_token
        self.device_id = device_id
        self.http = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, trust_env=False)
        self.next_batch: str | None = None
        # Every state and timeline event that sync() returned, per room, in
        # order. Waits look here first, because one /sync response can carry
        # several awaited events and each sync moves the token past them.
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def close(self) -> None:
        self.http.close()

    # -- raw requests -------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.access_token}"}
        return self.http.request(method, path, json=body, params=params, headers=headers)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Send a request and return its JSON body, or raise MatrixError."""
        response = self.request(method, path, body, params)
        if response.status_code >= 400:
            raise MatrixError(response)
        return response.json()

    # -- rooms ----------------------------------------------------------------

    def create_room(self, **body: Any) -> str:
        return self.call("POST", "/_matrix/client/v3/createRoom", body)["room_id"]

    def create_direct_room(self, invitee: str) -> str:
        """Start a 1:1 conversation the way Element does: a private room with `is_direct`."""
        return self.create_room(preset="trusted_private_chat", is_direct=True, invite=[invitee])

    def invite(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason is not None:
            body["reason"] = reason
        self.call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/invite", body)

    def join(self, room_id: str, via: list[str] | None = None) -> str:
        params = {"server_name": via} if via else None
        return self.call("POST", f"/_matrix/client/v3/join/{_q(room_id)}", {}, params)["room_id"]

    def leave(self, room_id: str) -> None:
        self.call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", {})

    def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason is not None:
            body["reason"] = reason
        self.call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/kick", body)

    def ban(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason is not None:
            body["reason"] = reason
        self.call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/ban", body)

    def send_text(self, room_id: str, body: str) -> str:
        return self.send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})

    def send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        txn = uuid.uuid4().hex
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{txn}"
        return self.call("PUT", path, content)["event_id"]

    def put_state(self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return self.call("PUT", path, content)["event_id"]

    def get_state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        return self.call("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}")

    def room_state(self, room_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state")

    def joined_members(self, room_id: str) -> dict[str, Any]:
        return self.call("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/joined_members")["joined"]

    def members(self, room_id: str) -> dict[str, str]:
        """Return the membership of each user in the room, from `/members`."""
        chunk = self.call("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/members")["chunk"]
        return {event["state_key"]: event["content"]["membership"] for event in chunk}

    def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Return the room's timeline, oldest first, read backwards from the end with `/messages`."""
        params = {"dir": "b", "limit": limit}
        chunk = self.call("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages", params=params)["chunk"]
        return list(reversed(chunk))

    def typing(self, room_id: str, typing: bool, timeout_ms: int = 30000) -> None:
        body: dict[str, Any] = {"typing": typing}
        if typing:
            body["timeout"] = timeout_ms
        self.call("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/typing/{_q(self.user_id)}", body)

    def read_receipt(self, room_id: str, event_id: str) -> None:
        self.call("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/receipt/m.read/{_q(event_id)}", {})

    def set_displayname(self, name: str) -> None:
        self.call("PUT", f"/_matrix/client/v3/profile/{_q(self.user_id)}/displayname", {"displayname": name})

    def profile(self, user_id: str) -> dict[str, Any]:
        return self.call("GET", f"/_matrix/client/v3/profile/{_q(user_id)}")

    # -- sync -----------------------------------------------------------------

    def sync(self, timeout_ms: int = 0, full_state: bool = False) -> dict[str, Any]:
        """Run one incremental `/sync` from the last token of this client, and keep the new token."""
        params: dict[str, Any] = {"timeout": timeout_ms}
        if self.next_batch is not None:
            params["since"] = self.next_batch
        if full_state:
            params["full_state"] = "true"
        response = self.call("GET", "/_matrix/client/v3/sync", params=params)
        self.next_batch = response["next_batch"]
        for section in ("join", "leave"):
            for room_id in response.get("rooms", {}).get(section, {}):
                self.seen.setdefault(room_id, []).extend(joined_events(response, room_id))
        return response

    def initial_sync(self) -> dict[str, Any]:
        """Run a `/sync` without a token, as a newly started client does. The client's own token stays."""
        return self.call("GET", "/_matrix/client/v3/sync", params={"timeout": 0})

    def sync_until(
        self,
        find: Callable[[dict[str, Any]], FoundT | None],
        description: str,
        timeout_s: float = WAIT_S,
    ) -> FoundT:
        """Sync until find(response) returns something other than None, and return it.

        Each request long-polls for at most SYNC_POLL_MS; after timeout_s the
        test fails with `description`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            found = find(self.sync(timeout_ms=SYNC_POLL_MS))
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user_id} did not see {description} within {timeout_s:.0f} s")

    def wait_for_event(
        self,
        room_id: str,
        match: Callable[[dict[str, Any]], bool],
        description: str,
        timeout_s: float = WAIT_S,
    ) -> dict[str, Any]:
        """Return the first event of the room that matches, from the events seen so far or from new syncs.

        Events count once this client's /sync returned them in the room's
        state or timeline (as a joined or left room).
        """

        def find(_response: dict[str, Any] | None = None) -> dict[str, Any] | None:
            return next((event for event in self.seen.get(room_id, []) if match(event)), None)

        found = find()
        if found is not None:
            return found
        return self.sync_until(find, description, timeout_s)

    def wait_for_invite(self, room_id: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """Sync until the room is under `rooms.invite`, and return its invite state events."""

        def find(response: dict[str, Any]) -> list[dict[str, Any]] | None:
            room = response.get("rooms", {}).get("invite", {}).get(room_id)
            return None if room is None else room["invite_state"]["events"]

        return self.sync_until(find, f"an invite to {room_id}", timeout_s)

    def wait_for_text(self, room_id: str, body: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        return self.wait_for_event(
            room_id,
            lambda event: event.get("type") == "m.room.message" and event.get("content", {}).get("body") == body,
            f"the message {body!r} in {room_id}",
            timeout_s,
        )

    def wait_for_membership(self, room_id: str, user_id: str, membership: str, timeout_s: float = WAIT_S) -> None:
        """Wait until `/members` of the room shows user_id with the membership."""
        wait_until(
            lambda: self.members(room_id).get(user_id) == membership or None,
            f"{self.user_id} sees {user_id} as {membership} in {room_id}",
            timeout_s,
        )


def joined_events(response: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    """State and timeline events of a joined (or left) room in one `/sync` response, in order."""
    for section in ("join", "leave"):
        room = response.get("rooms", {}).get(section, {}).get(room_id)
        if room is not None:
            return room.get("state", {}).get("events", []) + room.get("timeline", {}).get("events", [])
    return []


def ephemeral_events(response: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = response.get("rooms", {}).get("join", {}).get(room_id, {})
    return room.get("ephemeral", {}).get("events", [])


def wait_until(check: Callable[[], FoundT | None], description: str, timeout_s: float = WAIT_S) -> FoundT:
    """Call check() every 200 ms until it returns something other than None or False."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {description}")
        time.sleep(0.2)
