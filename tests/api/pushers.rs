//! Pushers: `/pushers` and `/pushers/set`, and delivery to a push gateway
//! that the test runs on loopback, checking the exact notify payloads,
//! retries and the removal of rejected pushers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode as AxumStatus, routing::post};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

/// A push gateway that records every request and responds as configured.
#[derive(Clone, Default)]
struct Gateway {
    received: Arc<Mutex<Vec<Value>>>,
    /// Number of requests to fail with 500 before responding normally.
    failures: Arc<Mutex<u32>>,
    /// Pushkeys to report as rejected.
    rejected: Arc<Mutex<Vec<String>>>,
}

async fn notify(State(gateway): State<Gateway>, Json(body): Json<Value>) -> (AxumStatus, Json<Value>) {
    gateway.received.lock().unwrap().push(body);
    {
        let mut failures = gateway.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return (AxumStatus::INTERNAL_SERVER_ERROR, Json(json!({})));
        }
    }
    let rejected = gateway.rejected.lock().unwrap().clone();
    (AxumStatus::OK, Json(json!({ "rejected": rejected })))
}

impl Gateway {
    /// Starts the gateway and returns its notify URL.
    async fn start(&self) -> String {
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the gateway");
        let addr = listener.local_addr().expect("gateway address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/_matrix/push/v1/notify")
    }

    /// Waits up to five seconds for `count` requests and returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        for _ in 0..100 {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received.lock().unwrap().clone()
    }
}

async fn set_pusher(client: &Client, body: Value) -> (StatusCode, Value) {
    client.post("/_matrix/client/v3/pushers/set", body).await
}

fn http_pusher(pushkey: &str, data: Value) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": data,
    })
}

async fn start_server(backend: &crate::harness::Backend) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.policy.name = "open".into();
        config.push.retry_initial_ms = 50;
        config.push.retry_max_ms = 200;
    })
    .await
}

async fn send_text(client: &Client, room_id: &str, content: Value) -> String {
    let txn = lattice::rooms::random_localpart(16);
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room_id));
    let (status, body) = client.put(&path, content).await;
    assert_eq!(status, StatusCode::OK, "send: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn pusher_set_list_delete() {
    for backend in backends() {
        let server = start_server(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let url = "http://127.0.0.1:9/_matrix/push/v1/notify";

        let (status, body) =
            set_pusher(&bob, http_pusher("key-1", json!({ "url": url, "format": "event_id_only" }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, list) = bob.get("/_matrix/client/v3/pushers").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {list}");
        assert_eq!(
            list,
            json!({ "pushers": [{
                "kind": "http",
                "app_id": "org.example.app",
                "pushkey": "key-1",
                "app_display_name": "Example",
                "device_display_name": "Phone",
                "lang": "en",
                "data": { "url": url, "format": "event_id_only" },
            }] }),
            "{backend:?}"
        );

        // Setting the same app id and pushkey again replaces the pusher.
        let mut changed = http_pusher("key-1", json!({ "url": url }));
        changed["device_display_name"] = json!("Tablet");
        let (status, body) = set_pusher(&bob, changed).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, list) = bob.get("/_matrix/client/v3/pushers").await;
        assert_eq!(list["pushers"].as_array().unwrap().len(), 1, "{backend:?}: {list}");
        assert_eq!(list["pushers"][0]["device_display_name"], "Tablet", "{backend:?}");

        // Another user taking the same pushkey removes bob's unless appending.
        let (status, body) = set_pusher(&alice, http_pusher("key-1", json!({ "url": url }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, list) = bob.get("/_matrix/client/v3/pushers").await;
        assert_eq!(list, json!({ "pushers": [] }), "{backend:?}: bob's pusher moved to alice");
        let mut appended = http_pusher("key-1", json!({ "url": url }));
        appended["append"] = json!(true);
        let (status, body) = set_pusher(&bob, appended).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, list) = alice.get("/_matrix/client/v3/pushers").await;
        assert_eq!(list["pushers"].as_array().unwrap().len(), 1, "{backend:?}: alice keeps hers: {list}");

        // kind null deletes.
        let (status, body) =
            set_pusher(&bob, json!({ "kind": null, "app_id": "org.example.app", "pushkey": "key-1" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, list) = bob.get("/_matrix/client/v3/pushers").await;
        assert_eq!(list, json!({ "pushers": [] }), "{backend:?}");

        // Bad input.
        let response = set_pusher(&bob, http_pusher("k", json!({ "url": "http://127.0.0.1:9/other" }))).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = set_pusher(&bob, http_pusher("k", json!({}))).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = set_pusher(&bob, http_pusher("k", json!({ "url": url, "format": "full" }))).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let mut no_lang = http_pusher("k", json!({ "url": url }));
        no_lang.as_object_mut().unwrap().remove("lang");
        let response = set_pusher(&bob, no_lang).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let mut unknown_kind = http_pusher("k", json!({ "url": url }));
        unknown_kind["kind"] = json!("carrier-pigeon");
        let response = set_pusher(&bob, unknown_kind).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let mut email = http_pusher("bob@example.org", json!({}));
        email["kind"] = json!("email");
        let response = set_pusher(&bob, email).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn gateway_gets_full_payload() {
    for backend in backends() {
        let gateway = Gateway::default();
        let url = gateway.start().await;
        let server = start_server(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let (status, body) = alice
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id)),
                json!({ "displayname": "Alice" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let room = alice.create_room(json!({ "preset": "public_chat", "name": "Lunch plans" })).await;
        bob.join(&room).await;

        let (status, body) = set_pusher(&bob, http_pusher("bob-phone", json!({ "url": url, "custom": "kept" }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, list) = bob.get("/_matrix/client/v3/pushers").await;
        assert_eq!(list["pushers"].as_array().unwrap().len(), 1, "{backend:?}: {list}");

        let content = json!({ "msgtype": "m.text", "body": "noon?" });
        let event_id = send_text(&alice, &room, content.clone()).await;
        let received = gateway.wait_for(1).await;
        assert_eq!(received.len(), 1, "{backend:?}: one notification: {received:?}");
        let mut body = received[0].clone();
        let pushkey_ts = body["notification"]["devices"][0]["pushkey_ts"].take();
        assert!(
            pushkey_ts.as_i64().is_some_and(|ts| ts > 1_600_000_000),
            "{backend:?}: pushkey_ts in seconds: {pushkey_ts}"
        );
        assert_eq!(
            body,
            json!({ "notification": {
                "event_id": event_id,
                "room_id": room,
                "type": "m.room.message",
                "sender": alice.user_id,
                "sender_display_name": "Alice",
                "room_name": "Lunch plans",
                "content": content,
                "counts": { "unread": 1 },
                "prio": "high",
                "devices": [{
                    "app_id": "org.example.app",
                    "pushkey": "bob-phone",
                    "pushkey_ts": null,
                    "data": { "custom": "kept" },
                    "tweaks": { "sound": "default" },
                }],
            } }),
            "{backend:?}: a message in a two-member room"
        );

        // Alice's own message to bob's room is not pushed to alice (she has no
        // pusher), and bob's second unread message raises the count.
        send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "or one?" })).await;
        let received = gateway.wait_for(2).await;
        assert_eq!(received[1]["notification"]["counts"]["unread"], 2, "{backend:?}: {received:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn gateway_gets_event_id_only() {
    for backend in backends() {
        let gateway = Gateway::default();
        let url = gateway.start().await;
        let server = start_server(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;
        let (status, body) =
            set_pusher(&bob, http_pusher("bob-phone", json!({ "url": url, "format": "event_id_only" }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let mention = json!({ "msgtype": "m.text", "body": "bob?", "m.mentions": { "user_ids": [bob.user_id] } });
        let event_id = send_text(&alice, &room, mention).await;
        let received = gateway.wait_for(1).await;
        assert_eq!(received.len(), 1, "{backend:?}: {received:?}");
        let mut body = received[0].clone();
        body["notification"]["devices"][0]["pushkey_ts"].take();
        assert_eq!(
            body,
            json!({ "notification": {
                "event_id": event_id,
                "room_id": room,
                "counts": { "unread": 1 },
                "prio": "high",
                "devices": [{
                    "app_id": "org.example.app",
                    "pushkey": "bob-phone",
                    "pushkey_ts": null,
                    "data": { "format": "event_id_only" },
                    "tweaks": { "sound": "default", "highlight": true },
                }],
            } }),
            "{backend:?}: a mention in a group room"
        );

        // A plain group message notifies without sound or highlight: low priority.
        send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "anyone" })).await;
        let received = gateway.wait_for(2).await;
        assert_eq!(received.len(), 2, "{backend:?}: {received:?}");
        assert_eq!(received[1]["notification"]["prio"], "low", "{backend:?}");
        assert_eq!(received[1]["notification"]["devices"][0]["tweaks"], json!({}), "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn gateway_retries_then_delivers() {
    for backend in backends() {
        let gateway = Gateway::default();
        *gateway.failures.lock().unwrap() = 2;
        let url = gateway.start().await;
        let server = start_server(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let (status, body) = set_pusher(&bob, http_pusher("bob-phone", json!({ "url": url }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let event_id = send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "hello" })).await;
        let received = gateway.wait_for(3).await;
        assert_eq!(received.len(), 3, "{backend:?}: two failures and one success: {received:?}");
        for request in &received {
            assert_eq!(request["notification"]["event_id"], event_id, "{backend:?}: the same notification each time");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(gateway.received.lock().unwrap().len(), 3, "{backend:?}: no retry after success");
        server.stop().await;
    }
}

#[tokio::test]
async fn rejected_pushkey_removes_pusher() {
    for backend in backends() {
        let gateway = Gateway::default();
        gateway.rejected.lock().unwrap().push("stale-key".into());
        let url = gateway.start().await;
        let server = start_server(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let (status, body) = set_pusher(&bob, http_pusher("stale-key", json!({ "url": url }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "hello" })).await;
        let received = gateway.wait_for(1).await;
        assert_eq!(received.len(), 1, "{backend:?}: {received:?}");
        let mut pushers = json!(null);
        for _ in 0..50 {
            pushers = bob.get("/_matrix/client/v3/pushers").await.1;
            if pushers["pushers"].as_array().is_some_and(|p| p.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pushers, json!({ "pushers": [] }), "{backend:?}: the rejected pusher is gone");

        send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "again" })).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(gateway.received.lock().unwrap().len(), 1, "{backend:?}: nothing pushed to a removed pusher");
        server.stop().await;
    }
}

#[tokio::test]
async fn gateway_sender_resumes_after_restart() {
    for backend in backends() {
        let gateway = Gateway::default();
        let url = gateway.start().await;
        let server = start_server(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;
        let (status, body) = set_pusher(&bob, http_pusher("bob-phone", json!({ "url": url }))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let handled = send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "one" })).await;
        let missed = send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "two" })).await;
        let too_old = send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "three" })).await;
        assert_eq!(gateway.wait_for(3).await.len(), 3, "{backend:?}: three pushes before the restart");
        gateway.received.lock().unwrap().clear();

        // The database is left as after a crash right after the first push: the
        // sender's stored position is at the first message, and the third
        // message is older than `push.max_delivery_age_secs`.
        let server = server
            .restart_with_database(|pool| async move {
                sqlx::query(
                    "UPDATE push_sender_positions SET stream_ordering = \
                     (SELECT stream_ordering FROM events WHERE event_id = $1) WHERE name = 'gateway'",
                )
                .bind(&handled)
                .execute(&pool)
                .await
                .expect("move the sender's position back");
                for table in ["event_push_shared", "event_push_actions"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE {table} SET ts = ts - 2 * 86400000 WHERE event_id = $1"
                    )))
                    .bind(&too_old)
                    .execute(&pool)
                    .await
                    .expect("age the third message");
                }
            })
            .await;

        let received = gateway.wait_for(1).await;
        assert_eq!(received.len(), 1, "{backend:?}: one push after the restart: {received:?}");
        assert_eq!(received[0]["notification"]["event_id"], missed, "{backend:?}: {received:?}");
        assert_eq!(received[0]["notification"]["content"]["body"], "two", "{backend:?}: {received:?}");
        assert_eq!(received[0]["notification"]["counts"]["unread"], 3, "{backend:?}: {received:?}");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let received = gateway.received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{backend:?}: the old message is not pushed: {received:?}");

        // Messages after the restart are pushed as before.
        let bob = Client::new(&server.base, bob.token.clone());
        let alice = Client::new(&server.base, alice.token.clone());
        let (_, list) = bob.get("/_matrix/client/v3/pushers").await;
        assert_eq!(list["pushers"].as_array().map(Vec::len), Some(1), "{backend:?}: {list}");
        let fresh = send_text(&alice, &room, json!({ "msgtype": "m.text", "body": "four" })).await;
        let received = gateway.wait_for(2).await;
        assert_eq!(received.len(), 2, "{backend:?}: {received:?}");
        assert_eq!(received[1]["notification"]["event_id"], fresh, "{backend:?}: {received:?}");
        server.stop().await;
    }
}
