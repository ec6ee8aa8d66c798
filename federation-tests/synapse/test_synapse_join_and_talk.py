"""A Synapse user joins a room that lives on Lattice, and the two servers talk.

Lattice is the resident server, so it serves Synapse's `make_join` and
`send_join`. Every message, in either direction, must reach the other user's
`/sync` with its rich text, reply relation and edit intact.
"""

from __future__ import annotations

import time

import httpx

from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import bodies, edit, event_by_id, reply, rich_text, wait_for_join


def notary_keys(url: str, server_name: str, key_id: str, verify) -> dict:
    """Ask the notary at `url` for the key `key_id` of `server_name`.

    The key id and `minimum_valid_until_ts` are given because Synapse's
    notary fetches a key it has not cached only when the request names it,
    and rejects criteria without a `minimum_valid_until_ts`.
    """
    criteria = {"minimum_valid_until_ts": int(time.time() * 1000)}
    body = {"server_keys": {server_name: {key_id: criteria}}}
    response = httpx.post(f"{url}/_matrix/key/v2/query", json=body, verify=verify, trust_env=False, timeout=30)
    assert response.status_code == 200, response.text
    keys = response.json()["server_keys"]
    assert len(keys) == 1, keys
    return keys[0]


def test_server_keys_fetched_both_ways(lattice: LatticeServer, synapse: Synapse) -> None:
    own_synapse = httpx.get(
        f"{synapse.federation_url}/_matrix/key/v2/server", verify=lattice.ca.ssl_context(), trust_env=False
    ).json()
    own_lattice = lattice.key_document()

    # Lattice fetches Synapse's key document over TLS and serves it as a notary.
    synapse_key_id = next(iter(own_synapse["verify_keys"]))
    seen_by_lattice = notary_keys(lattice.federation_url, synapse.server_name, synapse_key_id, lattice.ca.ssl_context())
    assert seen_by_lattice["server_name"] == synapse.server_name
    assert seen_by_lattice["verify_keys"] == own_synapse["verify_keys"]
    assert synapse.server_name in seen_by_lattice["signatures"]
    assert lattice.server_name in seen_by_lattice["signatures"], "countersigned by the notary"

    # Synapse fetches Lattice's key document the same way.
    lattice_key_id = next(iter(own_lattice["verify_keys"]))
    seen_by_synapse = notary_keys(synapse.federation_url, lattice.server_name, lattice_key_id, lattice.ca.ssl_context())
    assert seen_by_synapse["server_name"] == lattice.server_name
    assert seen_by_synapse["verify_keys"] == own_lattice["verify_keys"]
    assert lattice.server_name in seen_by_synapse["signatures"]
    assert synapse.server_name in seen_by_synapse["signatures"], "countersigned by the notary"


def test_profiles_read_across(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice", displayname="Alice on Lattice")
    sam = synapse.register("sam", displayname="Sam on Synapse")

    assert alice.profile(sam.user_id)["displayname"] == "Sam on Synapse"
    assert sam.profile(alice.user_id)["displayname"] == "Alice on Lattice"


def test_synapse_user_joins_and_talks(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice", displayname="Alice")
    sam = synapse.register("sam", displayname="Sam")
    room_id = alice.create_room(preset="public_chat", name="Design review", topic="Weekly")
    alice.send_text(room_id, "before sam joined")

    assert sam.join(room_id, via=[lattice.server_name]) == room_id
    wait_for_join(alice, room_id, sam.user_id)
    assert sam.get_state(room_id, "m.room.name")["name"] == "Design review"
    assert sam.get_state(room_id, "m.room.topic")["topic"] == "Weekly"
    assert set(sam.joined_members(room_id)) == {alice.user_id, sam.user_id}
    assert sam.joined_members(room_id)[alice.user_id]["display_name"] == "Alice"

    # Rich text from Lattice to Synapse.
    html = "<p>Agenda: <strong>budget</strong> and <em>hiring</em></p>"
    agenda_id = alice.send(room_id, "m.room.message", rich_text("Agenda: budget and hiring", html))
    agenda = sam.wait_for_text(room_id, "Agenda: budget and hiring")
    assert agenda["event_id"] == agenda_id
    assert agenda["sender"] == alice.user_id
    assert agenda["content"]["format"] == "org.matrix.custom.html"
    assert agenda["content"]["formatted_body"] == html

    # A reply from Synapse to Lattice.
    answer_id = sam.send(room_id, "m.room.message", reply(agenda_id, "Sounds good"))
    answer = alice.wait_for_text(room_id, "Sounds good")
    assert answer["event_id"] == answer_id
    assert answer["sender"] == sam.user_id
    assert answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == agenda_id

    # Sam edits the reply, and Alice receives the edit with its new content.
    edit_id = sam.send(room_id, "m.room.message", edit(answer_id, "Sounds good, see you at 10"))
    edited = alice.wait_for_event(room_id, lambda event: event.get("event_id") == edit_id, "the edit")
    assert edited["content"]["m.new_content"]["body"] == "Sounds good, see you at 10"
    assert edited["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": answer_id}

    # An edit from Lattice reaches Synapse the same way.
    alice_edit_id = alice.send(room_id, "m.room.message", edit(agenda_id, "Agenda: budget only"))
    alice_edit = event_by_id(sam, room_id, alice_edit_id)
    assert alice_edit["content"]["m.new_content"]["body"] == "Agenda: budget only"

    expected = [
        "before sam joined",
        "Agenda: budget and hiring",
        "Sounds good",
        "* Sounds good, see you at 10",
        "* Agenda: budget only",
    ]
    assert bodies(alice, room_id) == expected
    assert bodies(sam, room_id) == expected
