"""Media uploaded on one server is downloaded by a user of the other.

The uploader posts the file in a shared room as an `m.file` message. The
reader takes the `mxc://` URI from the event it received and downloads the
file through its own server, which fetches it over federation.
"""

from __future__ import annotations

import hashlib
import os
from urllib.parse import quote

from harness.client import MatrixClient
from harness.lattice import LatticeServer
from harness.synapse import Synapse
from synapse_steps import wait_for_join


def upload(client: MatrixClient, data: bytes, content_type: str, filename: str) -> str:
    response = client.http.post(
        "/_matrix/media/v3/upload",
        params={"filename": filename},
        content=data,
        headers={"Authorization": f"Bearer {client.access_token}", "Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    return response.json()["content_uri"]


def download(client: MatrixClient, mxc: str) -> tuple[bytes, str]:
    server_name, media_id = mxc.removeprefix("mxc://").split("/", 1)
    response = client.http.get(
        f"/_matrix/client/v1/media/download/{quote(server_name, safe='')}/{quote(media_id, safe='')}",
        headers={"Authorization": f"Bearer {client.access_token}"},
        timeout=60,
    )
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    return response.content, response.headers["content-type"]


def share_file(sender: MatrixClient, reader: MatrixClient, room_id: str, name: str) -> None:
    data = os.urandom(200_000)
    mxc = upload(sender, data, "application/pdf", name)
    sender.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.file", "body": name, "url": mxc, "info": {"mimetype": "application/pdf", "size": len(data)}},
    )
    event = reader.wait_for_text(room_id, name, timeout_s=30)
    assert event["content"]["url"] == mxc

    received, content_type = download(reader, event["content"]["url"])
    assert len(received) == len(data)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    assert content_type.startswith("application/pdf")


def test_media_both_ways(lattice: LatticeServer, synapse: Synapse) -> None:
    alice = lattice.register("alice")
    sam = synapse.register("sam")
    room_id = alice.create_room(preset="public_chat", name="Files")
    sam.join(room_id, via=[lattice.server_name])
    wait_for_join(alice, room_id, sam.user_id)

    share_file(sam, alice, room_id, "contract-from-synapse.pdf")
    share_file(alice, sam, room_id, "invoice-from-lattice.pdf")
