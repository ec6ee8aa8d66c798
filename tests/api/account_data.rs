//! Account data, global and per room: storage, access control, `/sync`
//! delivery and the server-managed types.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error, backends, encode};

fn global_path(user_id: &str, kind: &str) -> String {
    format!("/_matrix/client/v3/user/{}/account_data/{kind}", encode(user_id))
}

fn room_path(user_id: &str, room_id: &str, kind: &str) -> String {
    format!("/_matrix/client/v3/user/{}/rooms/{}/account_data/{kind}", encode(user_id), encode(room_id))
}

/// Finds the content of the event of type `kind` in a list of account data events.
fn find_event<'a>(events: &'a Value, kind: &str) -> Option<&'a Value> {
    events.as_array()?.iter().find(|e| e["type"] == kind).map(|e| &e["content"])
}

#[tokio::test]
async fn global_put_and_get() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = global_path(&alice.user_id, "org.example.settings");

        let (status, body) = alice.put(&path, json!({ "theme": "dark", "size": 3 })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({}), "{backend:?}: put returns an empty object");
        let (status, body) = alice.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({ "theme": "dark", "size": 3 }), "{backend:?}: stored content");

        let (status, body) = alice.put(&path, json!({ "theme": "light" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, body) = alice.get(&path).await;
        assert_eq!(body, json!({ "theme": "light" }), "{backend:?}: a second put replaces the content");
        server.stop().await;
    }
}

#[tokio::test]
async fn room_put_and_get() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        let path = room_path(&alice.user_id, &room, "m.tag");

        let (status, body) = alice.put(&path, json!({ "tags": { "u.work": { "order": 0.5 } } })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, body) = alice.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["tags"]["u.work"]["order"], 0.5, "{backend:?}: stored room content");

        let response = alice.get(&global_path(&alice.user_id, "m.tag")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn missing_is_not_found() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;

        let response = alice.get(&global_path(&alice.user_id, "org.example.none")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = alice.get(&room_path(&alice.user_id, &room, "org.example.none")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn other_users_data_forbidden() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;

        let global = global_path(&alice.user_id, "org.example.secret");
        let (status, body) = alice.put(&global, json!({ "pin": "1234" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let in_room = room_path(&alice.user_id, &room, "org.example.secret");
        let (status, body) = alice.put(&in_room, json!({ "pin": "1234" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let response = bob.get(&global).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response = bob.put(&global, json!({ "pin": "0000" })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response = bob.get(&in_room).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response = bob.put(&in_room, json!({ "pin": "0000" })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        let (_, body) = alice.get(&global).await;
        assert_eq!(body["pin"], "1234", "{backend:?}: bob's rejected put changed nothing globally");
        let (_, body) = alice.get(&in_room).await;
        assert_eq!(body["pin"], "1234", "{backend:?}: bob's rejected put changed nothing in the room");
        server.stop().await;
    }
}

#[tokio::test]
async fn server_managed_types_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;

        for kind in ["m.fully_read", "m.push_rules"] {
            let response = alice.put(&global_path(&alice.user_id, kind), json!({ "event_id": "$x" })).await;
            assert_error(&response, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
            let response = alice.put(&room_path(&alice.user_id, &room, kind), json!({ "event_id": "$x" })).await;
            assert_error(&response, StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
        }
        let response = alice.get(&room_path(&alice.user_id, &room, "m.fully_read")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn invalid_room_id_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let response = alice.put(&room_path(&alice.user_id, "not-a-room", "org.example.x"), json!({})).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn changes_appear_in_sync() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;

        let (status, body) = alice.put(&global_path(&alice.user_id, "org.example.first"), json!({ "n": 1 })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let initial = alice.sync("").await;
        assert_eq!(
            find_event(&initial["account_data"]["events"], "org.example.first"),
            Some(&json!({ "n": 1 })),
            "{backend:?}: initial sync has global account data: {}",
            initial["account_data"]
        );
        let since = initial["next_batch"].as_str().expect("next_batch").to_owned();

        let (status, body) = alice.put(&global_path(&alice.user_id, "org.example.second"), json!({ "n": 2 })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, body) = alice.put(&room_path(&alice.user_id, &room, "org.example.room"), json!({ "n": 3 })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let next = alice.sync(&format!("since={since}&timeout=5000")).await;
        let global = &next["account_data"]["events"];
        assert_eq!(
            find_event(global, "org.example.second"),
            Some(&json!({ "n": 2 })),
            "{backend:?}: the new global entry is in the incremental sync: {global}"
        );
        assert!(
            find_event(global, "org.example.first").is_none(),
            "{backend:?}: unchanged entries are not repeated: {global}"
        );
        assert!(
            find_event(global, "org.example.room").is_none(),
            "{backend:?}: room account data is not global: {global}"
        );
        let room_data = &next["rooms"]["join"][&room]["account_data"]["events"];
        assert_eq!(
            find_event(room_data, "org.example.room"),
            Some(&json!({ "n": 3 })),
            "{backend:?}: the room entry is in the room's account_data: {}",
            next["rooms"]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn put_wakes_waiting_sync() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let since = alice.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        let waiting = {
            let alice = alice.clone();
            tokio::spawn(async move { alice.sync(&format!("since={since}&timeout=20000")).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let (status, body) = alice.put(&global_path(&alice.user_id, "org.example.wake"), json!({ "n": 1 })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let next = waiting.await.expect("sync task");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{backend:?}: the put woke the waiting sync before its timeout"
        );
        assert_eq!(
            find_event(&next["account_data"]["events"], "org.example.wake"),
            Some(&json!({ "n": 1 })),
            "{backend:?}: the woken sync carries the change: {}",
            next["account_data"]
        );
        server.stop().await;
    }
}
