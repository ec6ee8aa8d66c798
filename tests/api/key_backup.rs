//! Server-side key backups: versions, keys at every level, the replacement
//! rule, `etag` and `count`, and writes to an old version.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn session_data(tag: &str) -> Value {
    json!({ "ephemeral": format!("eph-{tag}"), "ciphertext": format!("cipher-{tag}"), "mac": format!("mac-{tag}") })
}

fn key(first_message_index: u64, forwarded_count: u64, is_verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": session_data(tag),
    })
}

async fn create_version(client: &Client, public_key: &str) -> String {
    let (status, body) = client
        .post(
            "/_matrix/client/v3/room_keys/version",
            json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": public_key, "signatures": {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "create version: {body}");
    body["version"].as_str().expect("version is a string").to_owned()
}

#[tokio::test]
async fn backup_versions_lifecycle() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let response = alice.get("/_matrix/client/v3/room_keys/version").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let v1 = create_version(&alice, "pk1").await;
        let (status, body) = alice.get("/_matrix/client/v3/room_keys/version").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["version"], v1);
        assert_eq!(body["algorithm"], ALGORITHM);
        assert_eq!(body["auth_data"]["public_key"], "pk1");
        assert_eq!(body["count"], 0);
        assert!(body["etag"].is_string(), "{body}");
        // Versions are per user.
        let response = bob.get("/_matrix/client/v3/room_keys/version").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Updating replaces auth_data; the algorithm and the version cannot change.
        let (status, body) = alice
            .put(
                &format!("/_matrix/client/v3/room_keys/version/{v1}"),
                json!({ "algorithm": ALGORITHM, "auth_data": { "public_key": "pk1", "signatures": { "x": {} } }, "version": v1 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, body) = alice.get(&format!("/_matrix/client/v3/room_keys/version/{v1}")).await;
        assert_eq!(body["auth_data"]["signatures"], json!({ "x": {} }), "{backend:?}: {body}");
        let response = alice
            .put(
                &format!("/_matrix/client/v3/room_keys/version/{v1}"),
                json!({ "algorithm": "m.other", "auth_data": {} }),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = alice
            .put(
                &format!("/_matrix/client/v3/room_keys/version/{v1}"),
                json!({ "algorithm": ALGORITHM, "auth_data": {}, "version": "77" }),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        // A new version becomes the current one; the old one can still be read.
        let v2 = create_version(&alice, "pk2").await;
        assert_ne!(v1, v2);
        let (_, body) = alice.get("/_matrix/client/v3/room_keys/version").await;
        assert_eq!(body["version"], v2, "{backend:?}");
        let (status, body) = alice.get(&format!("/_matrix/client/v3/room_keys/version/{v1}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["auth_data"]["public_key"], "pk1");

        // Keys go only into the current version.
        let response = alice
            .put(
                &format!("/_matrix/client/v3/room_keys/keys/{}/s1?version={v1}", encode("!room:localhost")),
                key(0, 0, false, "a"),
            )
            .await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(response.1["current_version"], v2, "{}", response.1);

        // Deleting the current version makes the previous one current again.
        let (status, _) = alice.delete(&format!("/_matrix/client/v3/room_keys/version/{v2}"), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        let response = alice.get(&format!("/_matrix/client/v3/room_keys/version/{v2}")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (_, body) = alice.get("/_matrix/client/v3/room_keys/version").await;
        assert_eq!(body["version"], v1, "{backend:?}");
        let response = alice.delete(&format!("/_matrix/client/v3/room_keys/version/{v2}"), json!({})).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn backup_keys_at_every_level() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let version = create_version(&alice, "pk").await;
        let room_a = "!a:localhost";
        let room_b = "!b:localhost";
        let keys_path = format!("/_matrix/client/v3/room_keys/keys?version={version}");
        let room_path = |room: &str| format!("/_matrix/client/v3/room_keys/keys/{}?version={version}", encode(room));
        let session_path =
            |room: &str, s: &str| format!("/_matrix/client/v3/room_keys/keys/{}/{s}?version={version}", encode(room));

        // All rooms at once.
        let (status, body) = alice
            .put(
                &keys_path,
                json!({ "rooms": {
                    room_a: { "sessions": { "s1": key(5, 1, false, "a1"), "s2": key(0, 0, true, "a2") } },
                    room_b: { "sessions": { "s3": key(0, 0, false, "b3") } },
                } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["count"], 3);
        let etag1 = body["etag"].clone();

        // One room, one session.
        let (status, body) =
            alice.put(&room_path(room_b), json!({ "sessions": { "s4": key(2, 0, false, "b4") } })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["count"], 4);
        assert_ne!(body["etag"], etag1, "{backend:?}: the etag changes with the keys");
        let (status, body) = alice.put(&session_path(room_a, "s5"), key(0, 0, false, "a5")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["count"], 5);

        // The replacement rule: a worse key is ignored, a better one replaces.
        let (_, before) = alice.get(&session_path(room_a, "s1")).await;
        let (_, body) = alice.put(&session_path(room_a, "s1"), key(9, 0, false, "worse")).await;
        assert_eq!(body["etag"], alice.get("/_matrix/client/v3/room_keys/version").await.1["etag"]);
        let (_, after) = alice.get(&session_path(room_a, "s1")).await;
        assert_eq!(after, before, "{backend:?}: a higher first_message_index does not replace");
        alice.put(&session_path(room_a, "s1"), key(5, 0, false, "fewer-forwards")).await;
        let (_, after) = alice.get(&session_path(room_a, "s1")).await;
        assert_eq!(
            after["session_data"],
            session_data("fewer-forwards"),
            "{backend:?}: lower forwarded_count replaces"
        );
        alice.put(&session_path(room_a, "s2"), key(0, 0, false, "unverified")).await;
        let (_, after) = alice.get(&session_path(room_a, "s2")).await;
        assert_eq!(after, key(0, 0, true, "a2"), "{backend:?}: an unverified key never replaces a verified one");
        alice.put(&session_path(room_a, "s1"), key(50, 3, true, "verified")).await;
        let (_, after) = alice.get(&session_path(room_a, "s1")).await;
        assert_eq!(after, key(50, 3, true, "verified"), "{backend:?}: a verified key replaces an unverified one");

        // Reads at every level.
        let (status, all) = alice.get(&keys_path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(all["rooms"][room_b]["sessions"]["s3"], key(0, 0, false, "b3"), "{backend:?}: {all}");
        assert_eq!(all["rooms"][room_a]["sessions"].as_object().unwrap().len(), 3);
        let (_, room) = alice.get(&room_path(room_b)).await;
        assert_eq!(room["sessions"].as_object().unwrap().len(), 2, "{backend:?}: {room}");
        let (status, empty) = alice.get(&room_path("!none:localhost")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(empty, json!({ "sessions": {} }));
        let response = alice.get(&session_path(room_b, "missing")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (_, info) = alice.get("/_matrix/client/v3/room_keys/version").await;
        assert_eq!(info["count"], 5, "{backend:?}");

        // Deletes at every level return the new count and etag.
        let (status, body) = alice.delete(&session_path(room_a, "s5"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["count"], 4);
        let (_, body) = alice.delete(&room_path(room_b), json!({})).await;
        assert_eq!(body["count"], 2);
        let (_, body) = alice.delete(&keys_path, json!({})).await;
        assert_eq!(body["count"], 0);
        let (_, all) = alice.get(&keys_path).await;
        assert_eq!(all, json!({ "rooms": {} }), "{backend:?}");

        // Bad input.
        let response = alice.get("/_matrix/client/v3/room_keys/keys").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
        let response = alice.put(&session_path(room_a, "s9"), json!({ "first_message_index": 0 })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let response = alice.get("/_matrix/client/v3/room_keys/keys?version=99").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}
