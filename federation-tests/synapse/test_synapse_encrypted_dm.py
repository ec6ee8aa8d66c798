"""An end-to-end encrypted DM between a Lattice user and a Synapse user, on real clients.

Both users run matrix-js-sdk with its Rust crypto (`tests/js/encrypted_dm_federation.mjs`),
each against the Client-Server API of their own server. The Lattice user
creates an encrypted DM with the Synapse user, who joins; both send a message
and decrypt the other's. Then the Synapse user creates one with the Lattice
user, and they talk again. Every decryption needs what the servers relay to
each other: device and one-time keys (`/user/keys/query`, `/user/devices`,
`/user/keys/claim`), the room keys as `m.direct_to_device` EDUs, and device
list updates.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def node_binary() -> str:
    """The `node` on PATH; the test is skipped, with the reason printed, when there is none."""
    node = shutil.which("node")
    if node is None:
        message = "Node.js is not installed, so the matrix-js-sdk scenario cannot run"
        print(f"SKIPPED: {message}")
        pytest.skip(message)
    if not (JS_DIR / "node_modules" / "matrix-js-sdk").is_dir():
        pytest.fail(f"matrix-js-sdk is not installed: run `npm ci` in {JS_DIR} (federation-tests/run.sh does)")
    return node


def account(base_url: str, server_name: str, client: MatrixClient) -> dict[str, str]:
    return {
        "base_url": base_url,
        "server_name": server_name,
        "user_id": client.user_id,
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


def check_server_holds_ciphertext(client: MatrixClient, result: dict[str, Any]) -> None:
    """The messages are stored on `client`'s server as megolm ciphertext, with no body."""
    sent = {message["event_id"] for message in result["messages"]}
    stored = {event["event_id"]: event for event in client.messages(result["room_id"]) if event["event_id"] in sent}
    assert set(stored) == sent
    for event in stored.values():
        assert event["type"] == "m.room.encrypted"
        assert event["content"]["algorithm"] == MEGOLM
        assert "ciphertext" in event["content"] and "body" not in event["content"]


def test_encrypted_dm_between_lattice_and_synapse_users(lattice: LatticeServer, synapse: Synapse, tmp_path: Path) -> None:
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
    for round_result in (lattice_creates, synapse_creates):
        check_server_holds_ciphertext(alice, round_result)
        check_server_holds_ciphertext(sam, round_result)
