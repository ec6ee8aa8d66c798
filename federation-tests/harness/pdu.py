"""Hand-made PDUs of room version 12: redaction, content hash, reference hash (event id), signature.

The scripted server of the bad-input scenario builds its events here, so it
can also build them wrong on purpose. Each function follows the section of
the Server-Server API or room version 11/12 that it names.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import canonicaljson
from signedjson.key import SigningKey
from signedjson.sign import sign_json

# Room version 11 redaction algorithm (room version 12 keeps it): the
# top-level keys that survive, and the content keys kept per event type.
_KEPT_TOP_LEVEL = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}
_KEPT_CONTENT = {
    "m.room.member": {"membership", "join_authorised_via_users_server"},
    "m.room.join_rules": {"join_rule", "allow"},
    "m.room.power_levels": {
        "ban",
        "events",
        "events_default",
        "invite",
        "kick",
        "redact",
        "state_default",
        "users",
        "users_default",
    },
    "m.room.history_visibility": {"history_visibility"},
    "m.room.redaction": {"redacts"},
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _b64_url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def redact(event: dict[str, Any]) -> dict[str, Any]:
    """Return the redacted form of an event (room version 11 rules)."""
    redacted = {key: copy.deepcopy(value) for key, value in event.items() if key in _KEPT_TOP_LEVEL}
    content = event.get("content", {})
    event_type = event.get("type")
    if event_type == "m.room.create":
        kept = copy.deepcopy(content)
    else:
        kept = {key: copy.deepcopy(value) for key, value in content.items() if key in _KEPT_CONTENT.get(event_type, ())}
        if event_type == "m.room.member" and isinstance(content.get("third_party_invite"), dict):
            signed = content["third_party_invite"].get("signed")
            if signed is not None:
                kept["third_party_invite"] = {"signed": copy.deepcopy(signed)}
    redacted["content"] = kept
    return redacted


def content_hash(event: dict[str, Any]) -> str:
    """Compute the SHA-256 content hash over the event without `unsigned`, `signatures` and `hashes`."""
    stripped = {key: value for key, value in event.items() if key not in ("unsigned", "signatures", "hashes")}
    return _b64(hashlib.sha256(canonicaljson.encode_canonical_json(stripped)).digest())


def event_id(event: dict[str, Any]) -> str:
    """Compute the event id: the reference hash of the event (room versions 4 and later)."""
    redacted = redact(event)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return "$" + _b64_url(hashlib.sha256(canonicaljson.encode_canonical_json(redacted)).digest())


def sign(event: dict[str, Any], server_name: str, key: SigningKey) -> dict[str, Any]:
    """Add `server_name`'s signature over the redacted event and return the event."""
    redacted = redact(event)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    signed = sign_json(redacted, server_name, key)
    event.setdefault("signatures", {}).setdefault(server_name, {}).update(signed["signatures"][server_name])
    return event


def finish(event: dict[str, Any], server_name: str, key: SigningKey) -> tuple[str, dict[str, Any]]:
    """Hash and sign an event built by hand; return its event id and the PDU."""
    event.pop("hashes", None)
    event.pop("signatures", None)
    event["hashes"] = {"sha256": content_hash(event)}
    sign(event, server_name, key)
    return event_id(event), event
