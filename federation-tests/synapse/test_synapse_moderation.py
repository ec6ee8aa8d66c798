"""Redactions, kicks, bans and power-level changes from either server take effect on both.

The room lives on Lattice. Alice (Lattice) created it; Sam (Synapse) is
raised to admin so he can moderate too. Bob (Lattice) and Sue (Synapse) are
ordinary members who get moderated.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

from harness.client import MatrixClient, MatrixError, wait_until
from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import event_by_id, wait_for_join


def moderated_room(lattice: LatticeServer, synapse: Synapse) -> tuple[MatrixClient, ...]:
    alice = lattice.register("alice")
    bob = lattice.register("bob")
    sam = synapse.register("sam")
    sue = synapse.register("sue")
    room_id = alice.create_room(preset="public_chat", name="Moderated")
    bob.join(room_id)
    sam.join(room_id, via=[lattice.server_name])
    sue.join(room_id, via=[lattice.server_name])
    for member in (alice, bob, sam, sue):
        for joined in (alice, bob, sam, sue):
            wait_for_join(member, room_id, joined.user_id)
    return alice, bob, sam, sue, room_id


def wait_for_power(reader: MatrixClient, room_id: str, user_id: str, level: int) -> None:
    wait_until(
        lambda: reader.get_state(room_id, "m.room.power_levels").get("users", {}).get(user_id) == level,
        f"{reader.user_id} sees {user_id} at power level {level}",
        30,
    )


def set_power(admin: MatrixClient, room_id: str, user_id: str, level: int) -> None:
    content = admin.get_state(room_id, "m.room.power_levels")
    content.setdefault("users", {})[user_id] = level
    admin.put_state(room_id, "m.room.power_levels", content)


def wait_until_redacted(reader: MatrixClient, room_id: str, event_id: str, redaction_id: str) -> dict:
    def redacted() -> dict | None:
        event = event_by_id(reader, room_id, event_id)
        return event if not event["content"] else None

    event = wait_until(redacted, f"{reader.user_id} sees {event_id} redacted", 30)
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction_id
    return event


def redact(moderator: MatrixClient, room_id: str, event_id: str, reason: str) -> str:
    path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/redact/{quote(event_id, safe='')}/{uuid.uuid4().hex}"
    return moderator.call("PUT", path, {"reason": reason})["event_id"]


def assert_forbidden_to_join(client: MatrixClient, room_id: str, via: list[str], errcode: str) -> None:
    """Check that a banned user's join is rejected with 403 and `errcode`.

    Synapse 1.163 returns `M_BAD_STATE` where Lattice returns `M_FORBIDDEN`.
    """
    try:
        client.join(room_id, via=via)
    except MatrixError as error:
        assert error.status == 403, error.body
        assert error.errcode == errcode, error.body
    else:
        raise AssertionError(f"{client.user_id} joined {room_id} although banned")


def test_moderation_from_lattice(lattice: LatticeServer, synapse: Synapse) -> None:
    alice, bob, sam, sue, room_id = moderated_room(lattice, synapse)

    # Power levels: Alice raises Sam to moderator; Synapse sees it.
    set_power(alice, room_id, sam.user_id, 50)
    wait_for_power(sam, room_id, sam.user_id, 50)

    # Redaction: Alice removes Sue's message; both servers strip its content.
    spam_id = sue.send_text(room_id, "buy cheap watches")
    alice.wait_for_text(room_id, "buy cheap watches")
    redaction_id = redact(alice, room_id, spam_id, "spam")
    wait_until_redacted(sam, room_id, spam_id, redaction_id)
    wait_until_redacted(alice, room_id, spam_id, redaction_id)

    # Kick: Alice kicks Sue; Sam's server shows her gone, and Sue sees the reason.
    # Sue syncs first: an initial /sync leaves out rooms she has left.
    sue.sync()
    alice.kick(room_id, sue.user_id, reason="off topic")
    sam.wait_for_membership(room_id, sue.user_id, "leave", 30)
    kicked = sue.wait_for_event(
        room_id,
        lambda e: e.get("type") == "m.room.member"
        and e.get("state_key") == sue.user_id
        and e["content"].get("membership") == "leave",
        "her kick",
    )
    assert kicked["content"]["membership"] == "leave"
    assert kicked["content"]["reason"] == "off topic"
    assert kicked["sender"] == alice.user_id

    # Ban: Alice bans Sue; Synapse refuses her rejoin.
    alice.ban(room_id, sue.user_id, reason="repeated spam")
    sam.wait_for_membership(room_id, sue.user_id, "ban", 30)
    assert_forbidden_to_join(sue, room_id, [lattice.server_name], "M_BAD_STATE")
    assert alice.members(room_id)[sue.user_id] == "ban"


def test_moderation_from_synapse(lattice: LatticeServer, synapse: Synapse) -> None:
    alice, bob, sam, sue, room_id = moderated_room(lattice, synapse)
    set_power(alice, room_id, sam.user_id, 100)
    wait_for_power(sam, room_id, sam.user_id, 100)

    # Power levels: Sam raises Sue to moderator; Lattice sees it.
    set_power(sam, room_id, sue.user_id, 50)
    wait_for_power(alice, room_id, sue.user_id, 50)

    # Kick: Sam kicks Bob; Lattice shows him gone and Bob sees who kicked him.
    # Bob syncs first: an initial /sync leaves out rooms he has left.
    bob.sync()
    sam.kick(room_id, bob.user_id, reason="off topic")
    alice.wait_for_membership(room_id, bob.user_id, "leave", 30)
    kicked = bob.wait_for_event(
        room_id,
        lambda e: e.get("type") == "m.room.member"
        and e.get("state_key") == bob.user_id
        and e["content"].get("membership") == "leave",
        "his kick",
    )
    assert kicked["content"]["membership"] == "leave"
    assert kicked["content"]["reason"] == "off topic"
    assert kicked["sender"] == sam.user_id

    # Ban: Sam bans Bob; Lattice refuses his rejoin.
    sam.ban(room_id, bob.user_id, reason="repeated spam")
    alice.wait_for_membership(room_id, bob.user_id, "ban", 30)
    assert_forbidden_to_join(bob, room_id, [], "M_FORBIDDEN")
    assert alice.members(room_id)[bob.user_id] == "ban"
    assert sam.members(room_id)[bob.user_id] == "ban"


def test_redaction_from_synapse(lattice: LatticeServer, synapse: Synapse) -> None:
    alice, bob, sam, sue, room_id = moderated_room(lattice, synapse)
    set_power(alice, room_id, sam.user_id, 50)
    wait_for_power(sam, room_id, sam.user_id, 50)

    # Sam removes Bob's message; both servers strip its content.
    spam_id = bob.send_text(room_id, "click this link")
    sam.wait_for_text(room_id, "click this link")
    redaction_id = redact(sam, room_id, spam_id, "spam")
    wait_until_redacted(sam, room_id, spam_id, redaction_id)
    wait_until_redacted(alice, room_id, spam_id, redaction_id)
    wait_until_redacted(bob, room_id, spam_id, redaction_id)
