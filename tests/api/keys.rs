//! End-to-end encryption keys: device keys, one-time and fallback keys,
//! device-list tracking and cross-signing, with real ed25519 keys and
//! signatures made the way clients make them.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use reqwest::StatusCode;
use ruma::{CanonicalJsonObject, signatures::Ed25519KeyPair};
use serde_json::{Value, json};

use crate::{
    accounts::{login_client, password_auth},
    harness::{Client, TestServer, assert_error, backends, encode},
};

const PASSWORD: &str = "correct horse";

/// An ed25519 signing key as a client keeps it.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pub public: String,
}

impl SigningKey {
    /// Generates a key named by `name` (a device id), or by its own public key when `None`
    /// (cross-signing keys are named so).
    pub fn new(name: Option<&str>) -> Self {
        let document = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&document, "probe".into()).expect("parse the key");
        let public = STANDARD_NO_PAD.encode(probe.public_key());
        let version = name.map_or_else(|| public.clone(), str::to_owned);
        let pair = Ed25519KeyPair::from_der(&document, version).expect("parse the key");
        Self { pair, public }
    }

    /// Adds this key's signature as `user_id` to `object`.
    pub fn sign(&self, user_id: &str, object: Value) -> Value {
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object).expect("a JSON object");
        ruma::signatures::sign_json(user_id, &self.pair, &mut canonical).expect("sign");
        serde_json::to_value(canonical).expect("serialize")
    }
}

fn random_curve25519() -> String {
    let bytes: [u8; 32] = rand::random();
    STANDARD_NO_PAD.encode(bytes)
}

/// Device keys signed by the device's own ed25519 key, as `/keys/upload` takes them.
pub fn device_keys(client: &Client, key: &SigningKey) -> Value {
    let device = &client.device_id;
    key.sign(
        &client.user_id,
        json!({
            "user_id": client.user_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): random_curve25519(),
                format!("ed25519:{device}"): key.public,
            },
        }),
    )
}

/// Builds a signed curve25519 one-time (or fallback) key.
pub fn signed_key(client: &Client, key: &SigningKey, fallback: bool) -> Value {
    let mut object = json!({ "key": random_curve25519() });
    if fallback {
        object["fallback"] = json!(true);
    }
    key.sign(&client.user_id, object)
}

/// Uploads fresh device keys for a client and returns its signing key.
pub async fn upload_device_keys(client: &Client) -> SigningKey {
    let key = SigningKey::new(Some(&client.device_id));
    let (status, body) =
        client.post("/_matrix/client/v3/keys/upload", json!({ "device_keys": device_keys(client, &key) })).await;
    assert_eq!(status, StatusCode::OK, "keys/upload: {body}");
    key
}

async fn query(client: &Client, users: &[&str]) -> Value {
    let requested: serde_json::Map<String, Value> = users.iter().map(|u| (u.to_string(), json!([]))).collect();
    let (status, body) = client.post("/_matrix/client/v3/keys/query", json!({ "device_keys": requested })).await;
    assert_eq!(status, StatusCode::OK, "keys/query: {body}");
    body
}

async fn claim(client: &Client, user: &str, device: &str) -> Value {
    let (status, body) = client
        .post("/_matrix/client/v3/keys/claim", json!({ "one_time_keys": { user: { device: "signed_curve25519" } } }))
        .await;
    assert_eq!(status, StatusCode::OK, "keys/claim: {body}");
    body["one_time_keys"][user][device].clone()
}

#[tokio::test]
async fn keys_upload_query_and_claim_with_fallback() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let key = SigningKey::new(Some(&alice.device_id));
        let keys = device_keys(&alice, &key);
        let one_time: serde_json::Map<String, Value> =
            (1..=3).map(|i| (format!("signed_curve25519:AAAAA{i}"), signed_key(&alice, &key, false))).collect();
        let fallback = signed_key(&alice, &key, true);
        let (status, body) = alice
            .post(
                "/_matrix/client/v3/keys/upload",
                json!({
                    "device_keys": keys,
                    "one_time_keys": one_time,
                    "fallback_keys": { "signed_curve25519:AAAAFB": fallback },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 3, "{backend:?}: {body}");

        let sync = alice.sync("timeout=0").await;
        assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 3, "{backend:?}");
        assert_eq!(sync["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{backend:?}");

        // Bob gets alice's device keys as uploaded, with the device's display name.
        let found = query(&bob, &[&alice.user_id]).await;
        let device = &found["device_keys"][&alice.user_id][&alice.device_id];
        for field in ["user_id", "device_id", "algorithms", "keys", "signatures"] {
            assert_eq!(device[field], keys[field], "{backend:?}: {field} of the queried keys");
        }
        assert!(device["unsigned"].is_object(), "{backend:?}: unsigned: {device}");
        assert_eq!(found["failures"], json!({}), "{backend:?}");

        // Three one-time keys, each handed out once, then the fallback key, again and again.
        let mut claimed = Vec::new();
        for _ in 0..3 {
            let got = claim(&bob, &alice.user_id, &alice.device_id).await;
            let (name, value) = got.as_object().and_then(|m| m.iter().next()).expect("a claimed key");
            assert_eq!(value, &one_time[name], "{backend:?}: the claimed key is the uploaded one");
            claimed.push(name.clone());
        }
        claimed.sort();
        claimed.dedup();
        assert_eq!(claimed.len(), 3, "{backend:?}: no key handed out twice");
        for _ in 0..2 {
            let got = claim(&bob, &alice.user_id, &alice.device_id).await;
            assert_eq!(got, json!({ "signed_curve25519:AAAAFB": fallback }), "{backend:?}: the fallback key");
        }
        let sync = alice.sync("timeout=0").await;
        assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0, "{backend:?}");
        assert_eq!(sync["device_unused_fallback_key_types"], json!([]), "{backend:?}: the fallback key is used");

        // A new fallback key is unused again.
        let (status, _) = alice
            .post(
                "/_matrix/client/v3/keys/upload",
                json!({ "fallback_keys": { "signed_curve25519:AAAAFC": signed_key(&alice, &key, true) } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let sync = alice.sync("timeout=0").await;
        assert_eq!(sync["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "{backend:?}");

        // A device without keys gives nothing to claim.
        let laptop = login_client(&server, "alice", PASSWORD).await;
        assert_eq!(claim(&bob, &alice.user_id, &laptop.device_id).await, Value::Null, "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn keys_upload_rejects_bad_keys_without_partial_writes() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let key = SigningKey::new(Some(&alice.device_id));

        let mut foreign = device_keys(&alice, &key);
        foreign["user_id"] = json!(bob.user_id);
        let response = alice.post("/_matrix/client/v3/keys/upload", json!({ "device_keys": foreign })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        assert!(response.1["error"].as_str().unwrap().contains("user_id"), "{}", response.1);

        let mut other_device = device_keys(&alice, &key);
        other_device["device_id"] = json!("SOMEOTHER");
        let response = alice.post("/_matrix/client/v3/keys/upload", json!({ "device_keys": other_device })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        assert!(response.1["error"].as_str().unwrap().contains("device_id"), "{}", response.1);

        let first = signed_key(&alice, &key, false);
        let (status, body) = alice
            .post("/_matrix/client/v3/keys/upload", json!({ "one_time_keys": { "signed_curve25519:AAAAAA": first } }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        // The same key again is accepted and counted once.
        let (status, body) = alice
            .post("/_matrix/client/v3/keys/upload", json!({ "one_time_keys": { "signed_curve25519:AAAAAA": first } }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 1, "{backend:?}");
        // The same id with other content fails, and the other key of the request is not stored.
        let response = alice
            .post(
                "/_matrix/client/v3/keys/upload",
                json!({ "one_time_keys": {
                    "signed_curve25519:AAAAAA": signed_key(&alice, &key, false),
                    "signed_curve25519:AAAAAB": signed_key(&alice, &key, false),
                } }),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        assert!(response.1["error"].as_str().unwrap().contains("AAAAAA"), "{}", response.1);
        let (_, body) = alice.post("/_matrix/client/v3/keys/upload", json!({})).await;
        assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 1, "{backend:?}: nothing half-written");

        let response =
            alice.post("/_matrix/client/v3/keys/upload", json!({ "one_time_keys": { "nocolon": "x" } })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let response =
            alice.post("/_matrix/client/v3/keys/query", json!({ "device_keys": { "not a user": [] } })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        server.stop().await;
    }
}

fn changed(sync: &Value) -> Vec<String> {
    serde_json::from_value(sync["device_lists"]["changed"].clone()).unwrap_or_default()
}

fn left(sync: &Value) -> Vec<String> {
    serde_json::from_value(sync["device_lists"]["left"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn device_lists_follow_keys_and_shared_rooms() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice
            .create_room(json!({
                "preset": "private_chat",
                "invite": [bob.user_id],
                "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
            }))
            .await;
        bob.join(&room).await;
        let since = bob.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();

        // A waiting /sync of bob wakes when alice uploads device keys.
        let poll = {
            let bob = bob.clone();
            let since = since.clone();
            tokio::spawn(async move { bob.sync(&format!("since={}&timeout=30000", encode(&since))).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        upload_device_keys(&alice).await;
        let sync = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("sync wakes").unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{backend:?}: woken at once");
        assert_eq!(changed(&sync), vec![alice.user_id.clone()], "{backend:?}: {sync}");
        let after_upload = sync["next_batch"].as_str().unwrap().to_owned();

        // /keys/changes gives the same between the two tokens.
        let (status, body) = bob
            .get(&format!("/_matrix/client/v3/keys/changes?from={}&to={}", encode(&since), encode(&after_upload)))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({ "changed": [alice.user_id], "left": [] }), "{backend:?}");

        // Carol's keys do not concern bob until she shares a room with him.
        upload_device_keys(&carol).await;
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&after_upload))).await;
        assert!(!changed(&sync).contains(&carol.user_id), "{backend:?}: {sync}");
        let (status, _) = alice
            .post(&format!("/_matrix/client/v3/rooms/{}/invite", encode(&room)), json!({ "user_id": carol.user_id }))
            .await;
        assert_eq!(status, StatusCode::OK);
        carol.join(&room).await;
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&after_upload))).await;
        assert!(changed(&sync).contains(&carol.user_id), "{backend:?}: carol joined: {sync}");
        let after_join = sync["next_batch"].as_str().unwrap().to_owned();

        let (status, _) = carol.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&room)), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&after_join))).await;
        assert_eq!(left(&sync), vec![carol.user_id.clone()], "{backend:?}: carol left: {sync}");
        let after_leave = sync["next_batch"].as_str().unwrap().to_owned();

        // Deleting a device removes its keys and is announced.
        let laptop = login_client(&server, "alice", PASSWORD).await;
        upload_device_keys(&laptop).await;
        let (status, body) = alice
            .post(
                "/_matrix/client/v3/delete_devices",
                json!({ "devices": [laptop.device_id], "auth": password_auth(&alice.user_id, PASSWORD, &Value::Null) }),
            )
            .await;
        if status == StatusCode::UNAUTHORIZED {
            let session = body["session"].clone();
            let (status, body) = alice
                .post(
                    "/_matrix/client/v3/delete_devices",
                    json!({ "devices": [laptop.device_id], "auth": password_auth(&alice.user_id, PASSWORD, &session) }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let found = query(&bob, &[&alice.user_id]).await;
        let devices = found["device_keys"][&alice.user_id].as_object().unwrap();
        assert!(devices.contains_key(&alice.device_id), "{backend:?}: {found}");
        assert!(!devices.contains_key(&laptop.device_id), "{backend:?}: deleted device's keys are gone");
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&after_leave))).await;
        assert_eq!(changed(&sync), vec![alice.user_id.clone()], "{backend:?}: {sync}");
        server.stop().await;
    }
}

/// Builds a cross-signing key of `usage` for `client`, signed by `master` unless it is the master key.
pub fn cross_signing_key(client: &Client, usage: &str, key: &SigningKey, master: Option<&SigningKey>) -> Value {
    let object = json!({
        "user_id": client.user_id,
        "usage": [usage],
        "keys": { format!("ed25519:{}", key.public): key.public },
    });
    match master {
        Some(master) => master.sign(&client.user_id, object),
        None => object,
    }
}

/// Cross-signing keys of a user, as a client keeps them.
pub struct CrossSigning {
    pub master: SigningKey,
    pub self_signing: SigningKey,
    pub user_signing: SigningKey,
}

/// Uploads a first set of cross-signing keys (no user-interactive auth needed).
pub async fn bootstrap_cross_signing(client: &Client) -> CrossSigning {
    let keys = CrossSigning {
        master: SigningKey::new(None),
        self_signing: SigningKey::new(None),
        user_signing: SigningKey::new(None),
    };
    let (status, body) = client
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            json!({
                "master_key": cross_signing_key(client, "master", &keys.master, None),
                "self_signing_key": cross_signing_key(client, "self_signing", &keys.self_signing, Some(&keys.master)),
                "user_signing_key": cross_signing_key(client, "user_signing", &keys.user_signing, Some(&keys.master)),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "first cross-signing upload: {body}");
    keys
}

#[tokio::test]
async fn cross_signing_upload_visibility_and_auth() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let keys = bootstrap_cross_signing(&alice).await;

        let own = query(&alice, &[&alice.user_id]).await;
        assert_eq!(
            own["master_keys"][&alice.user_id]["keys"][format!("ed25519:{}", keys.master.public)],
            keys.master.public
        );
        assert_eq!(
            own["self_signing_keys"][&alice.user_id]["keys"][format!("ed25519:{}", keys.self_signing.public)],
            keys.self_signing.public
        );
        assert_eq!(
            own["user_signing_keys"][&alice.user_id]["usage"],
            json!(["user_signing"]),
            "{backend:?}: alice sees her user-signing key"
        );
        let other = query(&bob, &[&alice.user_id]).await;
        assert!(other["master_keys"][&alice.user_id].is_object(), "{backend:?}: {other}");
        assert!(other["self_signing_keys"][&alice.user_id].is_object(), "{backend:?}: {other}");
        assert_eq!(other["user_signing_keys"], json!({}), "{backend:?}: bob does not see alice's user-signing key");

        // The same keys again need no authentication (a retried upload).
        let (status, body) = alice
            .post(
                "/_matrix/client/v3/keys/device_signing/upload",
                json!({ "master_key": own["master_keys"][&alice.user_id] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        // Replacing the master key needs the password.
        let new_master = SigningKey::new(None);
        let request = json!({
            "master_key": cross_signing_key(&alice, "master", &new_master, None),
            "self_signing_key": cross_signing_key(&alice, "self_signing", &keys.self_signing, Some(&new_master)),
        });
        let (status, challenge) = alice.post("/_matrix/client/v3/keys/device_signing/upload", request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{backend:?}: {challenge}");
        assert!(challenge["flows"].as_array().is_some_and(|f| !f.is_empty()), "{challenge}");
        let unchanged = query(&bob, &[&alice.user_id]).await;
        assert_eq!(unchanged["master_keys"], other["master_keys"], "{backend:?}: nothing replaced before auth");
        let mut authed = request.clone();
        authed["auth"] = password_auth(&alice.user_id, PASSWORD, &challenge["session"]);
        let (status, body) = alice.post("/_matrix/client/v3/keys/device_signing/upload", authed).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let replaced = query(&bob, &[&alice.user_id]).await;
        assert_eq!(
            replaced["master_keys"][&alice.user_id]["keys"][format!("ed25519:{}", new_master.public)],
            new_master.public,
            "{backend:?}: {replaced}"
        );

        // A self-signing key not signed by the master key is refused.
        let stranger = SigningKey::new(None);
        let mut bad = json!({
            "self_signing_key": cross_signing_key(&alice, "self_signing", &SigningKey::new(None), Some(&stranger)),
        });
        bad["auth"] = json!(null);
        let (status, challenge) = alice.post("/_matrix/client/v3/keys/device_signing/upload", bad.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
        bad["auth"] = password_auth(&alice.user_id, PASSWORD, &challenge["session"]);
        let response = alice.post("/_matrix/client/v3/keys/device_signing/upload", bad).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE");

        // A key of someone else is refused.
        let response = bob
            .post(
                "/_matrix/client/v3/keys/device_signing/upload",
                json!({ "master_key": cross_signing_key(&alice, "master", &SigningKey::new(None), None) }),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn signatures_upload_verifies_and_merges() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let device_key = upload_device_keys(&alice).await;
        let alice_cs = bootstrap_cross_signing(&alice).await;
        let bob_cs = bootstrap_cross_signing(&bob).await;
        let since = bob.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();
        let room = alice.create_room(json!({ "invite": [bob.user_id] })).await;
        bob.join(&room).await;

        // Alice signs her device with her self-signing key and her master key with her device.
        let own = query(&alice, &[&alice.user_id]).await;
        let mut device = own["device_keys"][&alice.user_id][&alice.device_id].clone();
        device.as_object_mut().unwrap().remove("unsigned");
        let device_signed = alice_cs.self_signing.sign(&alice.user_id, device);
        let master = own["master_keys"][&alice.user_id].clone();
        let master_signed = device_key.sign(&alice.user_id, master);
        // Alice signs bob's master key with her user-signing key.
        let bobs = query(&alice, &[&bob.user_id]).await;
        let bob_master_signed = alice_cs.user_signing.sign(&alice.user_id, bobs["master_keys"][&bob.user_id].clone());
        // A forged signature: made by a key that is not alice's self-signing key, but named as it.
        let mut forged_device = own["device_keys"][&alice.user_id][&alice.device_id].clone();
        forged_device.as_object_mut().unwrap().remove("unsigned");
        let impostor = SigningKey::new(Some(&alice_cs.self_signing.public));
        let forged_device = impostor.sign(&alice.user_id, forged_device);

        let (status, body) = alice
            .post(
                "/_matrix/client/v3/keys/signatures/upload",
                json!({
                    alice.user_id.clone(): {
                        alice.device_id.clone(): device_signed,
                        alice_cs.master.public.clone(): master_signed,
                    },
                    bob.user_id.clone(): { bob_cs.master.public.clone(): bob_master_signed },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["failures"], json!({}), "{backend:?}: {body}");

        let (status, body) = alice
            .post(
                "/_matrix/client/v3/keys/signatures/upload",
                json!({ alice.user_id.clone(): { alice.device_id.clone(): forged_device } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(
            body["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE",
            "{backend:?}: {body}"
        );

        let seen = query(&bob, &[&alice.user_id, &bob.user_id]).await;
        let ssk_name = format!("ed25519:{}", alice_cs.self_signing.public);
        assert!(
            seen["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id][&ssk_name].is_string(),
            "{backend:?}: the device carries the self-signing signature: {seen}"
        );
        assert!(
            seen["master_keys"][&alice.user_id]["signatures"][&alice.user_id][format!("ed25519:{}", alice.device_id)]
                .is_string(),
            "{backend:?}: alice's master key carries her device's signature: {seen}"
        );
        let usk_name = format!("ed25519:{}", alice_cs.user_signing.public);
        assert!(
            query(&alice, &[&bob.user_id]).await["master_keys"][&bob.user_id]["signatures"][&alice.user_id][&usk_name]
                .is_string(),
            "{backend:?}: alice sees her signature of bob's master key"
        );
        assert!(
            query(&carol, &[&bob.user_id]).await["master_keys"][&bob.user_id]["signatures"][&alice.user_id].is_null(),
            "{backend:?}: carol does not see alice's signature of bob"
        );
        // Bob's own master key got a new signature, so bob's sync lists him.
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&since))).await;
        assert!(changed(&sync).contains(&bob.user_id), "{backend:?}: {sync}");
        server.stop().await;
    }
}

#[tokio::test]
async fn encrypted_room_receipts_typing_counts() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice
            .create_room(json!({
                "preset": "trusted_private_chat",
                "is_direct": true,
                "invite": [bob.user_id],
                "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
            }))
            .await;
        bob.join(&room).await;
        let since = bob.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();

        let encrypted = json!({
            "algorithm": "m.megolm.v1.aes-sha2",
            "sender_key": random_curve25519(),
            "session_id": "session-1",
            "device_id": alice.device_id,
            "ciphertext": "AwgAEnAC1pXU7Qw",
        });
        let (status, body) = alice
            .put(&format!("/_matrix/client/v3/rooms/{}/send/m.room.encrypted/e1", encode(&room)), encrypted.clone())
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let event_id = body["event_id"].as_str().unwrap().to_owned();
        let (status, _) = alice
            .put(
                &format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&room), encode(&alice.user_id)),
                json!({ "typing": true, "timeout": 30000 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let sync = bob.sync(&format!("since={}&timeout=0", encode(&since))).await;
        let joined = &sync["rooms"]["join"][&room];
        let events = joined["timeline"]["events"].as_array().unwrap();
        let last = events.last().expect("the encrypted event");
        assert_eq!(last["type"], "m.room.encrypted", "{backend:?}: {sync}");
        assert_eq!(last["content"], encrypted, "{backend:?}: content passes through unchanged");
        assert_eq!(joined["unread_notifications"]["notification_count"], 1, "{backend:?}: {joined}");
        let ephemeral = joined["ephemeral"]["events"].as_array().unwrap();
        assert!(
            ephemeral.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!([alice.user_id])),
            "{backend:?}: typing in an encrypted room: {ephemeral:?}"
        );
        let after = sync["next_batch"].as_str().unwrap().to_owned();

        let (status, _) = bob
            .post(
                &format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&room), encode(&event_id)),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let sync = alice.sync("timeout=0").await;
        let ephemeral = sync["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap().clone();
        let receipt = ephemeral.iter().find(|e| e["type"] == "m.receipt").expect("a receipt");
        assert!(receipt["content"][&event_id]["m.read"][&bob.user_id]["ts"].is_i64(), "{backend:?}: {receipt}");
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&after))).await;
        assert_eq!(
            sync["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 0,
            "{backend:?}: read up to the encrypted event: {sync}"
        );
        server.stop().await;
    }
}
