//! Send-to-device messaging: delivery through `/sync`, deletion once a later
//! `/sync` acknowledges it, `*` for every device, transaction ids, wake-ups.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    accounts::login_client,
    harness::{TestServer, assert_error, backends, encode},
};

const PASSWORD: &str = "correct horse";

fn to_device(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn to_device_delivery_and_acknowledgement() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let bob_laptop = login_client(&server, "bob", PASSWORD).await;
        let first = bob.sync("timeout=0").await;
        assert_eq!(to_device(&first), Vec::<Value>::new(), "{backend:?}: nothing yet");
        let since = first["next_batch"].as_str().unwrap().to_owned();

        let content = json!({ "algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": { "key": { "type": 0, "body": "opaque" } } });
        let (status, body) = alice
            .put(
                "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1",
                json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): content } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({}));
        // The same transaction again is not sent twice.
        let (status, _) = alice
            .put(
                "/_matrix/client/v3/sendToDevice/m.room.encrypted/txn1",
                json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): content } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let sync = bob.sync(&format!("since={}&timeout=0", encode(&since))).await;
        let expected = json!({ "type": "m.room.encrypted", "sender": alice.user_id, "content": content });
        assert_eq!(to_device(&sync), vec![expected.clone()], "{backend:?}: {sync}");
        // Until acknowledged, the same since token gets it again.
        let again = bob.sync(&format!("since={}&timeout=0", encode(&since))).await;
        assert_eq!(to_device(&again), vec![expected], "{backend:?}: redelivered until acknowledged");
        // The next token acknowledges it: gone for good, even from an initial sync.
        let next = sync["next_batch"].as_str().unwrap().to_owned();
        let after = bob.sync(&format!("since={}&timeout=0", encode(&next))).await;
        assert_eq!(to_device(&after), Vec::<Value>::new(), "{backend:?}: {after}");
        assert_eq!(to_device(&bob.sync("timeout=0").await), Vec::<Value>::new(), "{backend:?}: deleted");
        // Bob's other device got nothing.
        assert_eq!(to_device(&bob_laptop.sync("timeout=0").await), Vec::<Value>::new(), "{backend:?}");

        // `*` reaches every device of the user.
        let (status, _) = alice
            .put(
                "/_matrix/client/v3/sendToDevice/m.room_key_request/txn2",
                json!({ "messages": { bob.user_id.clone(): { "*": { "action": "request_cancellation", "request_id": "r1", "requesting_device_id": alice.device_id } } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        for device in [&bob, &bob_laptop] {
            let events = to_device(&device.sync("timeout=0").await);
            assert_eq!(events.len(), 1, "{backend:?}: device {}: {events:?}", device.device_id);
            assert_eq!(events[0]["type"], "m.room_key_request");
            assert_eq!(events[0]["content"]["request_id"], "r1");
        }

        let response =
            alice.put("/_matrix/client/v3/sendToDevice/m.test/txn3", json!({ "messages": { "not-a-user": {} } })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let response = alice.put("/_matrix/client/v3/sendToDevice/m.test/txn4", json!({})).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        server.stop().await;
    }
}

#[tokio::test]
async fn to_device_wakes_a_waiting_sync() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let since = bob.sync("timeout=0").await["next_batch"].as_str().unwrap().to_owned();
        let poll = {
            let bob = bob.clone();
            tokio::spawn(async move { bob.sync(&format!("since={}&timeout=30000", encode(&since))).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let (status, _) = alice
            .put(
                "/_matrix/client/v3/sendToDevice/m.dummy/wake1",
                json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let sync = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("sync returns").unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{backend:?}: woken at once");
        assert_eq!(
            to_device(&sync),
            vec![json!({ "type": "m.dummy", "sender": alice.user_id, "content": { "n": 1 } })],
            "{backend:?}"
        );
        server.stop().await;
    }
}
