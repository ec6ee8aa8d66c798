//! End-to-end encryption across two servers, `a.lattice.test` and
//! `b.lattice.test`, that federate over TLS on 127.0.0.1: key queries and
//! claims for users of the other server, to-device messages, and device-list
//! updates, with real ed25519 keys and signatures.
//!
//! Device-list updates go between servers that share a room. Each server
//! gets a room where its own user is joined. The other server's user joins it
//! through the room service directly, with a join event built and signed by
//! the resident server. Both servers then see the two users sharing a room.

use std::time::{Duration, Instant};

use lattice::rooms::builder::EventDraft;
use reqwest::StatusCode;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    accounts::{login_client, password_auth},
    harness::{Client, TestCa, TestServer, backends, encode},
    keys::{SigningKey, bootstrap_cross_signing, cross_signing_key, device_keys, signed_key},
};

const PASSWORD: &str = "correct horse";

/// Starts `a.lattice.test` and `b.lattice.test`. For both,
/// `gone.lattice.test` leads to a port where nothing listens and
/// `silent.lattice.test` to `silent`, which accepts connections and never responds.
async fn start_pair(
    backend: &crate::harness::Backend,
    ca: &TestCa,
    silent: &tokio::net::TcpListener,
) -> (TestServer, TestServer) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let silent = silent.local_addr().expect("address");
    let mut servers = TestServer::start_federated(backend, ca, &["a.lattice.test", "b.lattice.test"], |config| {
        let overrides = &mut config.federation.host_overrides;
        overrides.insert("gone.lattice.test".into(), closed.to_string());
        overrides.insert("silent.lattice.test".into(), silent.to_string());
        config.federation.sender_retry_initial_ms = 100;
    })
    .await;
    let b = servers.pop().expect("server b");
    let a = servers.pop().expect("server a");
    (a, b)
}

async fn query(client: &Client, body: Value) -> Value {
    let (status, response) = client.post("/_matrix/client/v3/keys/query", body).await;
    assert_eq!(status, StatusCode::OK, "keys/query: {response}");
    response
}

async fn claim(client: &Client, body: Value) -> Value {
    let (status, response) = client.post("/_matrix/client/v3/keys/claim", body).await;
    assert_eq!(status, StatusCode::OK, "keys/claim: {response}");
    response
}

/// Asserts that `found` contains the device keys as uploaded, signatures included.
#[track_caller]
fn assert_same_keys(found: &Value, uploaded: &Value) {
    for field in ["user_id", "device_id", "algorithms", "keys", "signatures"] {
        assert_eq!(found[field], uploaded[field], "{field} of {found}");
    }
}

/// Creates a room of `owner` on `resident` and joins `guest`, a user of
/// another server, to it through the room service.
async fn room_with_guest(resident: &TestServer, owner: &Client, guest: &str) -> String {
    let room_id = owner.create_room(json!({ "preset": "public_chat" })).await;
    let guest = UserId::parse(guest).unwrap();
    resident
        .homeserver
        .services()
        .rooms
        .append(
            &RoomId::parse(&room_id).unwrap(),
            &guest,
            EventDraft::state("m.room.member", guest.as_str(), json!({ "membership": "join" })),
            None,
        )
        .await
        .expect("the guest joins");
    room_id
}

/// Long-polls `/sync` from `since` until `done` holds for the response.
async fn sync_until(client: &Client, since: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sync = client.sync(&format!("since={}&timeout=2000", encode(since))).await;
        if done(&sync) {
            return sync;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {sync}");
    }
}

fn changed(sync: &Value) -> Vec<String> {
    serde_json::from_value(sync["device_lists"]["changed"].clone()).unwrap_or_default()
}

fn to_device(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

/// Deletes a device with password authentication.
async fn delete_device(client: &Client, device_id: &str) {
    let path = format!("/_matrix/client/v3/devices/{}", encode(device_id));
    let (status, body) = client.delete(&path, json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let auth = password_auth(&client.user_id, PASSWORD, &body["session"]);
    let (status, body) = client.delete(&path, json!({ "auth": auth })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Sends a transaction of EDUs from `origin` to `destination`.
async fn send_edus(origin: &TestServer, destination: &TestServer, txn: &str, edus: Vec<Value>) {
    let body =
        json!({ "origin": origin.server_name, "origin_server_ts": 1_700_000_000_000_i64, "pdus": [], "edus": edus });
    let destination = ruma::ServerName::parse(&destination.server_name).unwrap();
    origin
        .homeserver
        .services()
        .federation
        .send_json(&destination, http::Method::PUT, &format!("/_matrix/federation/v1/send/{txn}"), Some(&body), true)
        .await
        .expect("transaction accepted");
}

#[tokio::test]
async fn keys_query_and_claim_remote() {
    for backend in backends() {
        let ca = TestCa::new();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (a, b) = start_pair(&backend, &ca, &silent).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;

        // Bob's device keys, two one-time keys, a fallback key and cross-signing keys.
        let key = SigningKey::new(Some(&bob.device_id));
        let bob_keys = device_keys(&bob, &key);
        let one_time: serde_json::Map<String, Value> =
            (1..=2).map(|i| (format!("signed_curve25519:AAAAA{i}"), signed_key(&bob, &key, false))).collect();
        let fallback = signed_key(&bob, &key, true);
        let (status, body) = bob
            .post(
                "/_matrix/client/v3/keys/upload",
                json!({
                    "device_keys": bob_keys,
                    "one_time_keys": one_time,
                    "fallback_keys": { "signed_curve25519:AAAAFB": fallback },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let cross = bootstrap_cross_signing(&bob).await;

        // Alice queries a for bob's keys. Then a queries b, which shares no room with her.
        let found = query(&alice, json!({ "device_keys": { bob.user_id.clone(): [] }, "timeout": 5000 })).await;
        assert_eq!(found["failures"], json!({}), "{backend:?}: {found}");
        let devices = found["device_keys"][&bob.user_id].as_object().expect("bob's devices");
        assert_eq!(devices.keys().collect::<Vec<_>>(), vec![&bob.device_id], "{backend:?}: {found}");
        assert_same_keys(&devices[&bob.device_id], &bob_keys);
        assert_eq!(
            found["master_keys"][&bob.user_id],
            cross_signing_key(&bob, "master", &cross.master, None),
            "{backend:?}: bob's master key"
        );
        assert_eq!(
            found["self_signing_keys"][&bob.user_id]["keys"],
            json!({ format!("ed25519:{}", cross.self_signing.public): cross.self_signing.public }),
            "{backend:?}: {found}"
        );
        assert!(found["user_signing_keys"].get(&bob.user_id).is_none(), "{backend:?}: never another user's");

        // The federation endpoint a used has the shape of the spec, and /user/devices the stream id.
        let b_name = ruma::ServerName::parse(&b.server_name).unwrap();
        let federation = &a.homeserver.services().federation;
        let path = format!("/_matrix/federation/v1/user/devices/{}", encode(&bob.user_id));
        let listed = federation.send_json(&b_name, http::Method::GET, &path, None, true).await.expect("user/devices");
        assert_eq!(listed["user_id"], bob.user_id, "{backend:?}: {listed}");
        assert!(listed["stream_id"].as_i64().is_some_and(|s| s > 0), "{backend:?}: {listed}");
        assert_eq!(listed["devices"].as_array().map(Vec::len), Some(1), "{backend:?}: {listed}");
        assert_eq!(listed["devices"][0]["device_id"], bob.device_id);
        assert_same_keys(&listed["devices"][0]["keys"], &bob_keys);
        assert_eq!(listed["master_key"]["usage"], json!(["master"]), "{backend:?}: {listed}");
        assert_eq!(listed["self_signing_key"]["usage"], json!(["self_signing"]), "{backend:?}: {listed}");
        assert!(listed.get("user_signing_key").is_none(), "{backend:?}: {listed}");
        let path = format!("/_matrix/federation/v1/user/devices/{}", encode(&alice.user_id));
        let err = federation.send_json(&b_name, http::Method::GET, &path, None, true).await.expect_err("not b's user");
        assert!(err.to_string().contains("M_INVALID_PARAM"), "{backend:?}: {err}");
        let path = "/_matrix/federation/v1/user/keys/query";
        let body = json!({ "device_keys": { alice.user_id.clone(): [] } });
        let err =
            federation.send_json(&b_name, http::Method::POST, path, Some(&body), true).await.expect_err("not b's");
        assert!(err.to_string().contains("M_INVALID_PARAM"), "{backend:?}: {err}");
        let body = json!({ "device_keys": { bob.user_id.clone(): "all" } });
        let err =
            federation.send_json(&b_name, http::Method::POST, path, Some(&body), true).await.expect_err("bad shape");
        assert!(err.to_string().contains("M_BAD_JSON"), "{backend:?}: {err}");
        assert!(err.to_string().contains("device_keys"), "{backend:?}: the message names the field: {err}");
        let body = json!({ "device_keys": { bob.user_id.clone(): [] } });
        let direct = federation.send_json(&b_name, http::Method::POST, path, Some(&body), true).await.expect("query");
        assert_same_keys(&direct["device_keys"][&bob.user_id][&bob.device_id], &bob_keys);
        assert!(direct.get("user_signing_keys").is_none(), "{backend:?}: {direct}");

        // Claims: the two one-time keys, each once, then the fallback key.
        let request =
            json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" } } });
        let mut claimed = Vec::new();
        for _ in 0..2 {
            let got = claim(&alice, request.clone()).await;
            assert_eq!(got["failures"], json!({}), "{backend:?}: {got}");
            let keys = got["one_time_keys"][&bob.user_id][&bob.device_id].as_object().expect("a claimed key").clone();
            let (name, value) = keys.iter().next().unwrap();
            assert_eq!(value, &one_time[name], "{backend:?}: the uploaded key");
            claimed.push(name.clone());
        }
        claimed.sort();
        assert_eq!(claimed, vec!["signed_curve25519:AAAAA1", "signed_curve25519:AAAAA2"], "{backend:?}");
        let got = claim(&alice, request.clone()).await;
        assert_eq!(
            got["one_time_keys"][&bob.user_id][&bob.device_id],
            json!({ "signed_curve25519:AAAAFB": fallback }),
            "{backend:?}: the fallback key once the one-time keys are gone"
        );
        let sync = bob.sync("timeout=0").await;
        assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0, "{backend:?}");

        // A server where nothing listens, and one that never responds: both in
        // `failures`, while the reachable server's keys are still there.
        let started = Instant::now();
        let found = query(
            &alice,
            json!({
                "device_keys": { bob.user_id.clone(): [], "@dan:gone.lattice.test": [], "@erin:silent.lattice.test": [] },
                "timeout": 1000,
            }),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(8), "{backend:?}: the timeout bounds the wait");
        assert_eq!(found["failures"]["gone.lattice.test"]["status"], 503, "{backend:?}: {found}");
        assert!(found["failures"]["gone.lattice.test"]["message"].is_string(), "{backend:?}: {found}");
        assert_eq!(found["failures"]["silent.lattice.test"]["status"], 503, "{backend:?}: {found}");
        assert!(found["failures"].get("b.lattice.test").is_none(), "{backend:?}: {found}");
        assert_same_keys(&found["device_keys"][&bob.user_id][&bob.device_id], &bob_keys);
        let got = claim(
            &alice,
            json!({ "one_time_keys": { "@dan:gone.lattice.test": { "DEVICE": "signed_curve25519" } }, "timeout": 1000 }),
        )
        .await;
        assert_eq!(got["failures"]["gone.lattice.test"]["status"], 503, "{backend:?}: {got}");
        assert_eq!(got["one_time_keys"], json!({}), "{backend:?}: {got}");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn to_device_reaches_remote_devices_once() {
    for backend in backends() {
        let ca = TestCa::new();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (a, b) = start_pair(&backend, &ca, &silent).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let laptop = login_client(&b, "bob", PASSWORD).await;
        let phone_since = bob.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();
        let laptop_since = laptop.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();

        let content = json!({
            "algorithm": "m.olm.v1.curve25519-aes-sha2",
            "sender_key": "Ym9ndXMgY3VydmUyNTUxOSBrZXkgZm9yIHRlc3Rpbmc",
            "ciphertext": { "c3VyZSB0aGlzIGlzIGEgY3VydmUyNTUxOSBrZXkgdG9v": { "type": 0, "body": "opaque" } },
        });
        let request = json!({ "messages": { bob.user_id.clone(): { "*": content } } });
        for _ in 0..2 {
            // The second request repeats the transaction id: nothing more is sent.
            let (status, body) =
                alice.put("/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1", request.clone()).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
            assert_eq!(body, json!({}));
        }
        let expected = json!({ "type": "m.room.encrypted", "sender": alice.user_id, "content": content });
        for (device, since) in [(&bob, &phone_since), (&laptop, &laptop_since)] {
            let sync = sync_until(device, since, "the to-device message", |s| !to_device(s).is_empty()).await;
            assert_eq!(to_device(&sync), vec![expected.clone()], "{backend:?}: {sync}");
            // The next token acknowledges it: deleted, and no second copy arrives.
            let next = sync["next_batch"].as_str().unwrap().to_owned();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = device.sync(&format!("since={}&timeout=0", encode(&next))).await;
            assert_eq!(to_device(&after), Vec::<Value>::new(), "{backend:?}: {after}");
            assert_eq!(to_device(&device.sync("timeout=0").await), Vec::<Value>::new(), "{backend:?}: deleted");
        }

        // A repeated message_id is delivered once, and a sender of another server is rejected.
        let since = bob.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();
        let edu = |sender: &str, message_id: &str| {
            json!({ "edu_type": "m.direct_to_device", "content": {
                "sender": sender, "type": "m.room_key_request", "message_id": message_id,
                "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "action": "request_cancellation", "request_id": message_id, "requesting_device_id": "ADEVICE" } } },
            } })
        };
        send_edus(&a, &b, "t1", vec![edu(&alice.user_id, "m1"), edu("@mallory:c.lattice.test", "m2")]).await;
        send_edus(&a, &b, "t2", vec![edu(&alice.user_id, "m1")]).await;
        let sync = sync_until(&bob, &since, "the direct EDU", |s| !to_device(s).is_empty()).await;
        let events = to_device(&sync);
        assert_eq!(events.len(), 1, "{backend:?}: {sync}");
        assert_eq!(events[0]["sender"], alice.user_id);
        assert_eq!(events[0]["type"], "m.room_key_request");
        assert_eq!(events[0]["content"]["request_id"], "m1");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn device_list_updates_reach_sharing_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (a, b) = start_pair(&backend, &ca, &silent).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let bob_keys = device_keys(&bob, &SigningKey::new(Some(&bob.device_id)));
        let (status, body) = bob.post("/_matrix/client/v3/keys/upload", json!({ "device_keys": bob_keys })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        room_with_guest(&a, &alice, &bob.user_id).await;
        room_with_guest(&b, &bob, &alice.user_id).await;
        let since = alice.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();

        // The first query fills a's cache of bob's devices.
        let bob_query = json!({ "device_keys": { bob.user_id.clone(): [] } });
        let found = query(&alice, bob_query.clone()).await;
        assert_same_keys(&found["device_keys"][&bob.user_id][&bob.device_id], &bob_keys);

        // A new device of bob with keys: alice's /sync lists bob, and the query has both devices.
        let laptop = login_client(&b, "bob", PASSWORD).await;
        let laptop_keys = device_keys(&laptop, &SigningKey::new(Some(&laptop.device_id)));
        let (status, body) = laptop.post("/_matrix/client/v3/keys/upload", json!({ "device_keys": laptop_keys })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sync = sync_until(&alice, &since, "bob's new device", |s| changed(s).contains(&bob.user_id)).await;
        let after_upload = sync["next_batch"].as_str().unwrap().to_owned();
        let found = query(&alice, bob_query.clone()).await;
        let devices = found["device_keys"][&bob.user_id].as_object().expect("bob's devices");
        assert_eq!(devices.len(), 2, "{backend:?}: {found}");
        assert_same_keys(&devices[&laptop.device_id], &laptop_keys);
        let (status, body) = alice
            .get(&format!("/_matrix/client/v3/keys/changes?from={}&to={}", encode(&since), encode(&after_upload)))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["changed"], json!([bob.user_id]), "{backend:?}: {body}");

        // A rename of a device with keys is an update too.
        let (status, body) = laptop
            .put(
                &format!("/_matrix/client/v3/devices/{}", encode(&laptop.device_id)),
                json!({ "display_name": "Bob's laptop" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sync = sync_until(&alice, &after_upload, "the rename", |s| changed(s).contains(&bob.user_id)).await;
        let after_rename = sync["next_batch"].as_str().unwrap().to_owned();
        let found = query(&alice, bob_query.clone()).await;
        assert_eq!(
            found["device_keys"][&bob.user_id][&laptop.device_id]["unsigned"]["device_display_name"], "Bob's laptop",
            "{backend:?}: {found}"
        );

        // New cross-signing keys arrive as a signing-key update.
        let cross = bootstrap_cross_signing(&bob).await;
        let sync =
            sync_until(&alice, &after_rename, "bob's cross-signing keys", |s| changed(s).contains(&bob.user_id)).await;
        let after_cross = sync["next_batch"].as_str().unwrap().to_owned();
        let found = query(&alice, bob_query.clone()).await;
        assert_eq!(
            found["master_keys"][&bob.user_id],
            cross_signing_key(&bob, "master", &cross.master, None),
            "{backend:?}"
        );
        assert_eq!(
            found["self_signing_keys"][&bob.user_id],
            cross_signing_key(&bob, "self_signing", &cross.self_signing, Some(&cross.master)),
            "{backend:?}"
        );

        // Alice verifies bob: her user-signing key signs his cached master
        // key. Only she sees the signature.
        let alice_cross = bootstrap_cross_signing(&alice).await;
        let bob_master_signed =
            alice_cross.user_signing.sign(&alice.user_id, found["master_keys"][&bob.user_id].clone());
        let (status, body) = alice
            .post(
                "/_matrix/client/v3/keys/signatures/upload",
                json!({ bob.user_id.clone(): { cross.master.public.clone(): bob_master_signed } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["failures"], json!({}), "{backend:?}: {body}");
        let found = query(&alice, bob_query.clone()).await;
        let usk_name = format!("ed25519:{}", alice_cross.user_signing.public);
        let signature = &found["master_keys"][&bob.user_id]["signatures"][&alice.user_id][&usk_name];
        assert!(signature.is_string(), "{backend:?}: alice's signature on bob's master key: {found}");
        let carol = a.register("carol").await;
        let seen_by_carol = query(&carol, bob_query.clone()).await;
        assert!(
            seen_by_carol["master_keys"][&bob.user_id]["signatures"].get(&alice.user_id).is_none(),
            "{backend:?}: {seen_by_carol}"
        );
        let after_cross = alice.sync(&format!("since={}&timeout=0", encode(&after_cross))).await["next_batch"]
            .as_str()
            .unwrap()
            .to_owned();

        // Deleting the laptop removes it from alice's view.
        delete_device(&bob, &laptop.device_id).await;
        let sync = sync_until(&alice, &after_cross, "the deletion", |s| changed(s).contains(&bob.user_id)).await;
        let after_delete = sync["next_batch"].as_str().unwrap().to_owned();
        let found = query(&alice, bob_query.clone()).await;
        let devices = found["device_keys"][&bob.user_id].as_object().expect("bob's devices");
        assert_eq!(devices.keys().collect::<Vec<_>>(), vec![&bob.device_id], "{backend:?}: {found}");

        // An update whose prev_id a has not seen makes a fetch the list again
        // from b: the device the update names is not on b, so it is not shown.
        let ghost = json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": bob.user_id, "device_id": "GHOST", "stream_id": 1_000_000, "prev_id": [999_999],
            "keys": { "user_id": bob.user_id, "device_id": "GHOST", "algorithms": [], "keys": {}, "signatures": {} },
        } });
        send_edus(&b, &a, "gap1", vec![ghost]).await;
        sync_until(&alice, &after_delete, "the resync", |s| changed(s).contains(&bob.user_id)).await;
        let found = query(&alice, bob_query.clone()).await;
        let devices = found["device_keys"][&bob.user_id].as_object().expect("bob's devices");
        assert_eq!(devices.keys().collect::<Vec<_>>(), vec![&bob.device_id], "{backend:?}: {found}");

        // With b stopped, a returns bob's keys from its cache.
        b.stop().await;
        let found = query(&alice, json!({ "device_keys": { bob.user_id.clone(): [] }, "timeout": 2000 })).await;
        assert_eq!(found["failures"], json!({}), "{backend:?}: {found}");
        assert_same_keys(&found["device_keys"][&bob.user_id][&bob.device_id], &bob_keys);
        assert_eq!(found["master_keys"][&bob.user_id]["usage"], json!(["master"]), "{backend:?}: {found}");
        a.stop().await;
    }
}
