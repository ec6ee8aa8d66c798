"""An end-to-end encrypted DM between a Lattice user and a Synapse user, on real clients.

Both users run matrix-js-sdk with its Rust crypto (`tests/js/encrypted_dm_federation.mjs`),
each against the Client-Server API of their own server. The Lattice user
creates an encrypted DM with the Synapse user, who joins; both send a message
and decrypt the other's. Then the Synapse user creates one with the Lattice
user, and they talk again. Last, each user logs in a new device: the other
user's client must learn of it and encrypt for it, and the new device
decrypts. Then each user sets up cross-signing, and the other user's client
must see their device signed by them. Every decryption needs what the servers relay to
each other: device and one-time keys (`/user/keys/query`, `/user/devices`,
`/user/keys/claim`), the room keys as `m.direct_to_device` EDUs, and device
list updates, and cross-signing keys as `m.signing_key_update` EDUs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.client import MatrixClient
from harness.lattice import REPO_ROOT, LatticeServer
from harness.synapse import Synapse

JS_DIR = REPO_ROOT / "tests" / "js"
SCRIPT = JS_DIR / "encrypted_dm_federation.mjs"
SCENARIO_TIMEOUT_S = 600
MEGOLM = "m.megolm.v1.aes-sha2"
# Shield reasons that mean the reader could not tie the message to a device
# whose keys it fetched from the sender's server.
UNTRUSTED_SENDER = {"UNKNOWN_DEVICE", "AUTHENTICITY_NOT_GUARANTEED", "MISMATCHED_SENDER_KEY"}


NODE = shutil.which("node")

# Checked before the fixtures start any server.
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed, so the matrix-js-sdk scenario cannot run")


def node_binary() -> str:
    """The `node` on PATH, with the scenario's npm packages installed."""
    assert NODE is not None
    if not (JS_DIR / "node_modules" / "matrix-js-sdk").is_dir():
        pytest.fail(f"matrix-js-sdk is not installed: run `npm ci` in {JS_DIR} (federation-tests/run.sh does)")
    return NODE


def account(base_url: str, server_name: str, client: MatrixClient) -> dict[str, str]:
    return {
        "base_url": base_url,
        "server_name": server_name,
        "user_id": client.user_id,
        "localpart": client.user_id[1:].split(":", 1)[0],
        "device_id": client.device_id,
        "access_token": client.access_token,
    }


def run_scenario(node: str, accounts: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run the script and return its result file; its output goes into the assertion message."""
    accounts_path = workdir / "accounts.json"
    result_path = workdir / "result.json"
    accounts_path.write_text(json.dumps(accounts))
    completed = subprocess.run(
        [node, str(SCRIPT), str(accounts_path), str(result_path)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
    )
    output = (completed.stdout + completed.stderr)[-6000:]
    assert result_path.exists(), f"the scenario wrote no result (exit {completed.returncode}):\n{output}"
    result = json.loads(result_path.read_text())
    assert result["error"] is None, f"the scenario failed at {result['step']!r}:\n{output}"
    assert completed.returncode == 0, output
    return result


def expected_bodies(name: str, creator: str, invitee: str) -> list[tuple[str, str, str]]:
    """(sender, reader, body) of the two messages of a round, as the script sends them."""
    return [
        (creator, invitee, f"{name}: hello from {creator}, encrypted"),
        (invitee, creator, f"{name}: {invitee} reads you and answers, encrypted"),
    ]


def check_round(result: dict[str, Any], name: str, creator: str, invitee: str) -> None:
    assert (result["name"], result["creator"], result["invitee"]) == (name, creator, invitee)
    assert result["invite"] == {"sender": creator, "is_direct": True, "encryption": {"algorithm": MEGOLM}}
    assert result["encryption"] == {"creator": {"algorithm": MEGOLM}, "invitee": {"algorithm": MEGOLM}}
    messages = result["messages"]
    assert [(m["sender"], m["reader"], m["body"]) for m in messages] == expected_bodies(name, creator, invitee)
    for message in messages:
        assert message["event_id"] == message["sent_event_id"]
        assert (message["wire_type"], message["algorithm"], message["clear_type"]) == (
            "m.room.encrypted",
            MEGOLM,
            "m.room.message",
        )
        assert message["shield_reason"] not in UNTRUSTED_SENDER, message


def check_new_device(result: dict[str, Any], name: str, owner: MatrixClient, peer: MatrixClient, room_id: str) -> None:
    """The peer's client listed the owner's new device, and that device read the peer's next message."""
    assert (result["name"], result["owner"], result["peer"], result["room_id"]) == (name, owner.user_id, peer.user_id, room_id)
    assert result["device_id"] != owner.device_id
    assert result["devices_seen_by_peer"] == sorted([owner.device_id, result["device_id"]])
    message = result["message"]
    assert (message["sender"], message["reader"], message["reader_device"]) == (peer.user_id, owner.user_id, result["device_id"])
    assert message["body"] == f"{name}: {peer.user_id} writes to every device of {owner.user_id}"
    assert message["event_id"] == message["sent_event_id"]
    assert (message["wire_type"], message["algorithm"]) == ("m.room.encrypted", MEGOLM)
    assert message["shield_reason"] not in UNTRUSTED_SENDER, message


def check_cross_signing(result: dict[str, Any], name: str, owner: MatrixClient, peer: MatrixClient) -> None:
    """The peer's client saw the owner's device signed by the owner, and rated the owner's message by it."""
    assert (result["name"], result["owner"], result["peer"], result["device_id"]) == (
        name,
        owner.user_id,
        peer.user_id,
        owner.device_id,
    )
    assert result["ready_for_owner"] is True
    assert result["signed_by_owner_for_peer"] is True
    # The peer knows the owner's identity but has not verified it.
    assert result["identity_verified_for_peer"] is False
    message = result["message"]
    assert (message["sender"], message["reader"], message["reader_device"]) == (owner.user_id, peer.user_id, peer.device_id)
    assert message["body"] == f"{name}: {owner.user_id} writes from a cross-signed device"
    assert (message["wire_type"], message["algorithm"]) == ("m.room.encrypted", MEGOLM)
    # A device signed by its owner's identity, which the reader has not
    # verified, gets no warning; before cross-signing it was UNSIGNED_DEVICE.
    assert (message["shield_colour"], message["shield_reason"]) == ("NONE", None), message


def check_server_holds_ciphertext(client: MatrixClient, result: dict[str, Any]) -> None:
    """The messages are stored on `client`'s server as megolm ciphertext, with no body."""
    sent = {message["event_id"] for message in result["messages"]}
    stored = {event["event_id"]: event for event in client.messages(result["room_id"]) if event["event_id"] in sent}
    assert set(stored) == sent
    for event in stored.values():
        assert event["type"] == "m.room.encrypted"
        assert event["content"]["algorithm"] == MEGOLM
        assert "ciphertext" in event["content"]
        assert "body" not in event["content"]


def device_list_fetches(synapse: Synapse, user_id: str) -> int:
    """How many times Synapse fetched `user_id`'s whole device list, read from its request log."""
    path = f"/_matrix/federation/v1/user/devices/{quote(user_id, safe='')}"
    lines = synapse.log_file.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if "Completed request: 200" in line and "GET matrix-federation://" in line and path in line)


def test_encrypted_dm_lattice_and_synapse(lattice: LatticeServer, synapse: Synapse, tmp_path: Path) -> None:
    node = node_binary()
    alice = lattice.register("alice", displayname="Alice")
    sam = synapse.register("sam", displayname="Sam")
    accounts = {
        "first": account(lattice.client_url, lattice.server_name, alice),
        "second": account(synapse.client_url, synapse.server_name, sam),
    }

    result = run_scenario(node, accounts, tmp_path)

    assert result["step"] == "done"
    lattice_creates, synapse_creates = result["rounds"]
    check_round(lattice_creates, "first creates", alice.user_id, sam.user_id)
    check_round(synapse_creates, "second creates", sam.user_id, alice.user_id)
    assert lattice_creates["room_id"] != synapse_creates["room_id"]

    alice_device, sam_device = result["new_devices"]
    check_new_device(alice_device, "first's new device", alice, sam, lattice_creates["room_id"])
    check_new_device(sam_device, "second's new device", sam, alice, lattice_creates["room_id"])

    alice_signs, sam_signs = result["cross_signing"]
    check_cross_signing(alice_signs, "first cross-signs", alice, sam)
    check_cross_signing(sam_signs, "second cross-signs", sam, alice)

    later_messages = [alice_device["message"], sam_device["message"], alice_signs["message"], sam_signs["message"]]
    # Synapse fetched alice's list once, at its first key query. Her new device
    # and her cross-signing reached it as EDUs whose prev_id it already had.
    assert device_list_fetches(synapse, alice.user_id) == 1

    for round_result in (lattice_creates | {"messages": lattice_creates["messages"] + later_messages}, synapse_creates):
        check_server_holds_ciphertext(alice, round_result)
        check_server_holds_ciphertext(sam, round_result)
