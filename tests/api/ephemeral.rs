//! Ephemeral room data: typing notifications, public, private and threaded
//! read receipts, and read markers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Finds the ephemeral event of `kind` in a room's sync section.
fn ephemeral(sync: &Value, room_id: &str, kind: &str) -> Option<Value> {
    sync["rooms"]["join"][room_id]["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == kind).cloned()
}

async fn set_typing(client: &Client, room_id: &str, user_id: &str, typing: bool) -> (StatusCode, Value) {
    client
        .put(&room_path(room_id, &format!("typing/{}", encode(user_id))), json!({ "typing": typing, "timeout": 20000 }))
        .await
}

async fn post_receipt(client: &Client, room_id: &str, kind: &str, event_id: &str, body: Value) -> (StatusCode, Value) {
    client.post(&room_path(room_id, &format!("receipt/{kind}/{}", encode(event_id))), body).await
}

#[tokio::test]
async fn typing_on_and_off() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let since = next_batch(&bob.sync("").await);

        let (status, body) = set_typing(&alice, &room, &alice.user_id, true).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: start typing: {body}");
        let sync = bob.sync(&format!("since={}", encode(&since))).await;
        let typing = ephemeral(&sync, &room, "m.typing").expect("m.typing in bob's sync");
        assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]), "{backend:?}: alice is typing");

        let (status, body) = set_typing(&alice, &room, &alice.user_id, false).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: stop typing: {body}");
        let sync = bob.sync(&format!("since={}", encode(&next_batch(&sync)))).await;
        let typing = ephemeral(&sync, &room, "m.typing").expect("m.typing after stopping");
        assert_eq!(typing["content"]["user_ids"], json!([]), "{backend:?}: nobody is typing");

        let other = set_typing(&bob, &room, &alice.user_id, true).await;
        assert_error(&other, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        let eve = server.register("eve").await;
        let outsider = set_typing(&eve, &room, &eve.user_id, true).await;
        assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn public_and_private_receipts() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let first = alice.send_text(&room, "first").await;
        let second = alice.send_text(&room, "second").await;

        let (status, body) = post_receipt(&bob, &room, "m.read", &first, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: public receipt: {body}");
        let (status, body) = post_receipt(&bob, &room, "m.read.private", &second, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: private receipt: {body}");

        let alice_sync = alice.sync("").await;
        let receipts = ephemeral(&alice_sync, &room, "m.receipt").expect("m.receipt for alice");
        let public = &receipts["content"][&first]["m.read"][&bob.user_id];
        assert!(public["ts"].is_u64(), "{backend:?}: bob's public receipt reaches alice: {receipts}");
        assert!(
            receipts["content"].get(&second).is_none(),
            "{backend:?}: bob's private receipt stays hidden from alice: {receipts}"
        );

        let bob_sync = bob.sync("").await;
        let receipts = ephemeral(&bob_sync, &room, "m.receipt").expect("m.receipt for bob");
        assert!(
            receipts["content"][&second]["m.read.private"][&bob.user_id]["ts"].is_u64(),
            "{backend:?}: bob sees his own private receipt: {receipts}"
        );
        assert!(
            receipts["content"][&first]["m.read"][&bob.user_id]["ts"].is_u64(),
            "{backend:?}: bob sees his public receipt"
        );

        let unknown_type = post_receipt(&bob, &room, "m.seen", &first, json!({})).await;
        assert_eq!(unknown_type.0, StatusCode::BAD_REQUEST, "{backend:?}: unknown receipt type: {}", unknown_type.1);
        server.stop().await;
    }
}

#[tokio::test]
async fn incremental_receipts() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let event = alice.send_text(&room, "read me").await;
        let since = next_batch(&alice.sync("").await);

        let (status, body) = post_receipt(&bob, &room, "m.read", &event, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: receipt: {body}");
        let sync = alice.sync(&format!("since={}", encode(&since))).await;
        let receipts = ephemeral(&sync, &room, "m.receipt").expect("new receipt in the incremental sync");
        assert!(receipts["content"][&event]["m.read"][&bob.user_id].is_object(), "{backend:?}: {receipts}");
        let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().expect("timeline");
        assert!(timeline.is_empty(), "{backend:?}: a receipt adds no timeline events");
        server.stop().await;
    }
}

#[tokio::test]
async fn threaded_receipts() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let root = alice.send_text(&room, "thread root").await;
        let (status, reply) = alice
            .put(
                &room_path(&room, "send/m.room.message/reply1"),
                json!({
                    "msgtype": "m.text",
                    "body": "in the thread",
                    "m.relates_to": { "rel_type": "m.thread", "event_id": root },
                }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: thread reply: {reply}");
        let reply = reply["event_id"].as_str().expect("event_id").to_owned();

        let (status, body) = post_receipt(&bob, &room, "m.read", &reply, json!({ "thread_id": root })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: threaded receipt: {body}");
        let (status, body) = post_receipt(&bob, &room, "m.read", &root, json!({ "thread_id": "main" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: main timeline receipt: {body}");

        let sync = alice.sync("").await;
        let receipts = ephemeral(&sync, &room, "m.receipt").expect("m.receipt");
        assert_eq!(
            receipts["content"][&reply]["m.read"][&bob.user_id]["thread_id"], root,
            "{backend:?}: thread receipt names the thread: {receipts}"
        );
        assert_eq!(
            receipts["content"][&root]["m.read"][&bob.user_id]["thread_id"], "main",
            "{backend:?}: main receipt is kept beside the thread receipt: {receipts}"
        );

        let empty = post_receipt(&bob, &room, "m.read", &reply, json!({ "thread_id": "" })).await;
        assert_error(&empty, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn read_markers() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let older = alice.send_text(&room, "older").await;
        let newer = alice.send_text(&room, "newer").await;

        let (status, body) =
            bob.post(&room_path(&room, "read_markers"), json!({ "m.fully_read": older, "m.read": newer })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: read_markers: {body}");

        let bob_sync = bob.sync("").await;
        let account_data =
            bob_sync["rooms"]["join"][&room]["account_data"]["events"].as_array().expect("room account data");
        let fully_read = account_data.iter().find(|e| e["type"] == "m.fully_read").expect("m.fully_read account data");
        assert_eq!(fully_read["content"]["event_id"], older, "{backend:?}: fully read marker");

        let (status, stored) = bob
            .get(&format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                encode(&bob.user_id),
                encode(&room)
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: account data endpoint: {stored}");
        assert_eq!(stored["event_id"], older, "{backend:?}: fully read marker through account data");

        let alice_sync = alice.sync("").await;
        let receipts = ephemeral(&alice_sync, &room, "m.receipt").expect("m.receipt from read_markers");
        assert!(
            receipts["content"][&newer]["m.read"][&bob.user_id].is_object(),
            "{backend:?}: m.read receipt: {receipts}"
        );
        let alice_data = alice_sync["rooms"]["join"][&room]["account_data"]["events"].as_array().expect("account data");
        assert!(alice_data.iter().all(|e| e["type"] != "m.fully_read"), "{backend:?}: bob's marker is his alone");
        server.stop().await;
    }
}

#[tokio::test]
async fn receipt_for_unknown_event() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        let other = alice.create_room(json!({})).await;
        let elsewhere = alice.send_text(&other, "other room").await;

        let unknown = post_receipt(&alice, &room, "m.read", "$notanevent", json!({})).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let wrong_room = post_receipt(&alice, &room, "m.read", &elsewhere, json!({})).await;
        assert_error(&wrong_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let eve = server.register("eve").await;
        let outsider = post_receipt(&eve, &other, "m.read", &elsewhere, json!({})).await;
        assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}
