//! Sending events: transaction-id idempotency per device, the transaction id
//! in `unsigned`, redactions, and sending where the caller is not a member.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode, timeline};

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

/// Logs the user `localpart` in again, which creates a second device.
async fn second_device(server: &TestServer, localpart: &str) -> Client {
    let (status, body) = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": localpart },
                "password": "correct horse",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "login {localpart}: {body}");
    let mut client = Client::new(&server.base, body["access_token"].as_str().map(str::to_owned));
    client.user_id = body["user_id"].as_str().expect("user_id").to_owned();
    client.device_id = body["device_id"].as_str().expect("device_id").to_owned();
    client
}

async fn send_with_txn(client: &Client, room_id: &str, txn: &str, body: &str) -> (StatusCode, Value) {
    client
        .put(&room_path(room_id, &format!("send/m.room.message/{txn}")), json!({ "msgtype": "m.text", "body": body }))
        .await
}

/// Finds the messages in the room with this body, newest first.
async fn messages_with_body(client: &Client, room_id: &str, body: &str) -> Vec<Value> {
    let (status, response) = client.get(&room_path(room_id, "messages?dir=b&limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "messages: {response}");
    response["chunk"].as_array().expect("chunk").iter().filter(|e| e["content"]["body"] == body).cloned().collect()
}

#[tokio::test]
async fn transaction_ids_are_idempotent() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;

        let (status, first) = send_with_txn(&alice, &room, "txn-1", "once").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: first send: {first}");
        let (status, second) = send_with_txn(&alice, &room, "txn-1", "once").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: repeated send: {second}");
        assert_eq!(first["event_id"], second["event_id"], "{backend:?}: same transaction, same event");
        assert_eq!(messages_with_body(&alice, &room, "once").await.len(), 1, "{backend:?}: one event stored");

        let laptop = second_device(&server, "alice").await;
        assert_ne!(laptop.device_id, alice.device_id, "{backend:?}: login created a new device");
        let (status, other) = send_with_txn(&laptop, &room, "txn-1", "once").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: send from another device: {other}");
        assert_ne!(other["event_id"], first["event_id"], "{backend:?}: another device's transaction is new");
        assert_eq!(messages_with_body(&alice, &room, "once").await.len(), 2, "{backend:?}: two events stored");

        // A transaction id is scoped to the request path: another room, another
        // event type or the redact endpoint make a new request.
        let other_room = alice.create_room(json!({})).await;
        let (status, elsewhere) = send_with_txn(&alice, &other_room, "txn-1", "elsewhere").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: send in another room: {elsewhere}");
        assert_ne!(elsewhere["event_id"], first["event_id"], "{backend:?}: another room's transaction is new");
        assert_eq!(
            messages_with_body(&alice, &other_room, "elsewhere").await.len(),
            1,
            "{backend:?}: stored in the other room"
        );

        let (status, custom) =
            alice.put(&room_path(&room, "send/org.example.note/txn-1"), json!({ "body": "note" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: send another type: {custom}");
        assert_ne!(custom["event_id"], first["event_id"], "{backend:?}: another event type's transaction is new");

        let target = first["event_id"].as_str().expect("event_id");
        let (status, redaction) =
            alice.put(&room_path(&room, &format!("redact/{}/txn-1", encode(target))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: redact: {redaction}");
        assert_ne!(redaction["event_id"], first["event_id"], "{backend:?}: a redaction is a new event");
        let (status, repeated) =
            alice.put(&room_path(&room, &format!("redact/{}/txn-1", encode(target))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: repeated redact: {repeated}");
        assert_eq!(repeated["event_id"], redaction["event_id"], "{backend:?}: repeated redaction, same event");
        server.stop().await;
    }
}

#[tokio::test]
async fn transaction_id_only_for_sending_device() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let laptop = second_device(&server, "alice").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;

        let (status, sent) = send_with_txn(&alice, &room, "local-echo-7", "echo").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: send: {sent}");
        let event_id = sent["event_id"].clone();

        for (who, client, expected) in [
            ("sending device", &alice, Some("local-echo-7")),
            ("other device", &laptop, None),
            ("other user", &bob, None),
        ] {
            let sync = client.sync("").await;
            let event = timeline(&sync, &room)
                .iter()
                .find(|e| e["event_id"] == event_id)
                .unwrap_or_else(|| panic!("{backend:?}: message in the {who}'s timeline"))
                .clone();
            match expected {
                Some(txn) => assert_eq!(event["unsigned"]["transaction_id"], txn, "{backend:?}: {who}: {event}"),
                None => assert!(event["unsigned"].get("transaction_id").is_none(), "{backend:?}: {who}: {event}"),
            }
        }

        let (status, event) =
            alice.get(&room_path(&room, &format!("event/{}", encode(event_id.as_str().unwrap())))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: event: {event}");
        assert_eq!(event["unsigned"]["transaction_id"], "local-echo-7", "{backend:?}: /event for the sending device");
        server.stop().await;
    }
}

#[tokio::test]
async fn redaction_removes_content() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let target = alice.send_text(&room, "regrettable").await;

        let denied =
            bob.put(&room_path(&room, &format!("redact/{}/r1", encode(&target))), json!({ "reason": "no" })).await;
        assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (_, event) = bob.get(&room_path(&room, &format!("event/{}", encode(&target)))).await;
        assert_eq!(event["content"]["body"], "regrettable", "{backend:?}: content kept after a denied redaction");

        let (status, body) =
            alice.put(&room_path(&room, &format!("redact/{}/r1", encode(&target))), json!({ "reason": "typo" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: redact: {body}");
        let redaction = body["event_id"].as_str().expect("redaction event id").to_owned();
        assert!(redaction.starts_with('$'), "{backend:?}: redaction event id {redaction}");

        for (who, client) in [("alice", &alice), ("bob", &bob)] {
            let (status, event) = client.get(&room_path(&room, &format!("event/{}", encode(&target)))).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: {who} reads the redacted event: {event}");
            assert_eq!(event["content"], json!({}), "{backend:?}: {who}: content removed");
            assert_eq!(event["type"], "m.room.message", "{backend:?}: {who}: type kept");
            let because = &event["unsigned"]["redacted_because"];
            assert_eq!(because["event_id"], redaction, "{backend:?}: {who}: redacted_because: {event}");
            assert_eq!(because["content"]["reason"], "typo", "{backend:?}: {who}: redaction reason");

            let (status, page) = client.get(&room_path(&room, "messages?dir=b&limit=50")).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: messages: {page}");
            let in_page = page["chunk"]
                .as_array()
                .expect("chunk")
                .iter()
                .find(|e| e["event_id"] == target)
                .expect("redacted event in /messages")
                .clone();
            assert_eq!(in_page["content"], json!({}), "{backend:?}: {who}: /messages shows the redacted form");
            assert!(
                in_page["unsigned"]["redacted_because"].is_object(),
                "{backend:?}: {who}: redacted_because in /messages"
            );
        }

        // Members may redact their own events without extra power.
        let own = bob.send_text(&room, "mine").await;
        let (status, body) = bob.put(&room_path(&room, &format!("redact/{}/r2", encode(&own))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: bob redacts his own event: {body}");
        let (_, event) = alice.get(&room_path(&room, &format!("event/{}", encode(&own)))).await;
        assert_eq!(event["content"], json!({}), "{backend:?}: own redaction applies");

        let unknown = alice.put(&room_path(&room, &format!("redact/{}/r3", encode("$doesnotexist"))), json!({})).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn sending_outside_rooms() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;

        let not_member = send_with_txn(&bob, &room, "t1", "intruder").await;
        assert_error(&not_member, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(messages_with_body(&alice, &room, "intruder").await.is_empty(), "{backend:?}: nothing stored");

        // Unknown rooms answer like rooms the caller is not in, so room ids cannot be probed.
        let unknown = format!("!unknownroom:{}", server.server_name);
        let response = send_with_txn(&bob, &unknown, "t2", "void").await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        bob.join(&room).await;
        let (status, body) = bob.post(&room_path(&room, "leave"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: leave: {body}");
        let after_leave = send_with_txn(&bob, &room, "t3", "ghost").await;
        assert_error(&after_leave, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        let invalid_room = send_with_txn(&bob, "not-a-room", "t4", "x").await;
        assert_eq!(invalid_room.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid room id: {}", invalid_room.1);
        server.stop().await;
    }
}
