"""The three servers serve federation over TLS with the test CA, and reach each other.

Before any room is shared, a user on each server reads the profile of a user
on every other server. That request goes over federation (`/query/profile`).
It proves that outbound TLS trusts the test CA, and that request signatures
verify with keys fetched from the key endpoints.
"""

from __future__ import annotations

from harness.lattice import LatticeServer


def test_each_server_publishes_its_key_over_tls(servers: list[LatticeServer]) -> None:
    for server in servers:
        document = server.key_document()
        assert document["server_name"] == server.server_name
        assert len(document["verify_keys"]) == 1
        key_id = next(iter(document["verify_keys"]))
        assert key_id.startswith("ed25519:")
        assert key_id in document["signatures"][server.server_name]


def test_users_read_profiles_on_the_other_servers(servers: list[LatticeServer]) -> None:
    names = {}
    clients = []
    for server, localpart in zip(servers, ["alice", "bob", "carol"]):
        name = f"{localpart.title()} at {server.ip}"
        client = server.register(localpart, displayname=name)
        names[client.user_id] = name
        clients.append(client)
    for reader in clients:
        for user_id, name in names.items():
            assert reader.profile(user_id)["displayname"] == name
