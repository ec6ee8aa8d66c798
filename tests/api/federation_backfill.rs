//! Backfill as the requesting server: a user of `b` joins a room that lives
//! on `a` and pages back with `/messages` through history from before the
//! join, which `b` fetches from `a` with `/backfill`. Both servers are
//! Lattice servers that federate over TLS on 127.0.0.1.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestCa, TestServer, backends, encode};

const A: &str = "a.lattice.test";
const B: &str = "b.lattice.test";

async fn start_pair(backend: &crate::harness::Backend) -> (TestServer, TestServer) {
    let ca = TestCa::new();
    let mut servers = TestServer::start_federated(backend, &ca, &[A, B], |_| {}).await;
    let b = servers.pop().expect("server b");
    let a = servers.pop().expect("server a");
    (a, b)
}

/// Sends `count` messages `{prefix} 000`, `{prefix} 001`, ... and returns their bodies.
async fn send_many(client: &Client, room_id: &str, prefix: &str, count: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(count);
    for index in 0..count {
        let body = format!("{prefix} {index:03}");
        client.send_text(room_id, &body).await;
        bodies.push(body);
    }
    bodies
}

async fn join_through_a(client: &Client, room_id: &str) {
    let path = format!("/_matrix/client/v3/join/{}?server_name={A}", encode(room_id));
    let (status, body) = client.post(&path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "join through {A}: {body}");
}

/// Pages back through the room with `/messages` from its newest event,
/// `limit` events a page, until a page has no `end`. Returns every event,
/// oldest first, and the number of pages.
async fn page_back(client: &Client, room_id: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for page in 1..=200 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}", encode(room_id));
        if let Some(token) = &from {
            path.push_str(&format!("&from={}", encode(token)));
        }
        let (status, body) = client.get(&path).await;
        assert_eq!(status, StatusCode::OK, "page {page} of /messages: {body}");
        let chunk = body["chunk"].as_array().expect("chunk in /messages");
        events.extend(chunk.iter().cloned());
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => {
                events.reverse();
                return (events, page);
            }
        }
    }
    panic!("/messages still had more pages after 200");
}

fn message_bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn event_ids(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
}

/// Waits until `client`'s `/sync` shows a message with `body` in the room.
async fn wait_for_message(client: &Client, room_id: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sync =
            client.sync("timeout=0&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A50%7D%7D%7D").await;
        let seen = sync["rooms"]["join"][room_id]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == body));
        if seen {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {body:?} on {}", client.user_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn backfill_pages_through_whole_history() {
    for backend in backends() {
        let (a, b) = start_pair(&backend).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat", "name": "Archive" })).await;
        let sent = send_many(&alice, &room_id, "history", 250).await;

        join_through_a(&bob, &room_id).await;
        alice.send_text(&room_id, "after the join").await;
        wait_for_message(&bob, &room_id, "after the join").await;

        let (events, pages) = page_back(&bob, &room_id, 40).await;
        let mut expected = sent.clone();
        expected.push("after the join".to_owned());
        assert_eq!(message_bodies(&events), expected, "{backend:?}: bob reads every message in order");
        let ids = event_ids(&events);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{backend:?}: no event comes twice");
        assert_eq!(events[0]["type"], "m.room.create", "{backend:?}: pagination reaches the start of the room");
        assert!(pages > 250 / 40, "{backend:?}: {pages} pages of at most 40 events");
        let joins: Vec<&Value> =
            events.iter().filter(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()).collect();
        assert_eq!(joins.len(), 1, "{backend:?}: bob's join shows once");

        // The joining server shows the same events in the same order as the room's own server.
        let (on_a, _) = page_back(&alice, &room_id, 100).await;
        assert_eq!(ids, event_ids(&on_a), "{backend:?}: both servers order the history alike");

        // The history is stored now: with the other server gone, it reads the same.
        a.stop().await;
        let (again, _) = page_back(&bob, &room_id, 100).await;
        assert_eq!(event_ids(&again), ids, "{backend:?}: the stored history reads the same");
        b.stop().await;
    }
}

#[tokio::test]
async fn backfill_respects_history_visibility() {
    for backend in backends() {
        let (a, b) = start_pair(&backend).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;

        // A room that only shows members what was sent while they were joined.
        let joined_only = alice
            .create_room(json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility",
                    "state_key": "",
                    "content": { "history_visibility": "joined" },
                }],
            }))
            .await;
        send_many(&alice, &joined_only, "before", 20).await;
        join_through_a(&bob, &joined_only).await;
        alice.send_text(&joined_only, "after 000").await;
        wait_for_message(&bob, &joined_only, "after 000").await;
        let (events, _) = page_back(&bob, &joined_only, 10).await;
        assert_eq!(message_bodies(&events), ["after 000"], "{backend:?}: no message from before the join");
        // The room's first state events came before any history visibility
        // event, so the default `shared` applies to them.
        let before_join: Vec<&Value> = events.iter().take_while(|e| e["state_key"] != bob.user_id.as_str()).collect();
        assert!(before_join.iter().all(|e| e["state_key"].is_string()), "{backend:?}: {before_join:?}");

        // A room whose history was shared, then only for joined members:
        // bob reads the shared part, and nothing sent after the change.
        let switched = alice.create_room(json!({ "preset": "public_chat" })).await;
        let shared = send_many(&alice, &switched, "shared", 30).await;
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", encode(&switched));
        let (status, body) = alice.put(&path, json!({ "history_visibility": "joined" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        send_many(&alice, &switched, "hidden", 30).await;
        join_through_a(&bob, &switched).await;
        let (events, _) = page_back(&bob, &switched, 25).await;
        assert_eq!(message_bodies(&events), shared, "{backend:?}: the shared history and no hidden message");
        let change = events.iter().rev().find(|e| e["type"] == "m.room.history_visibility");
        assert_eq!(change.map(|e| &e["content"]["history_visibility"]), Some(&json!("joined")));
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn backfill_with_server_down_returns_stored() {
    for backend in backends() {
        let (a, b) = start_pair(&backend).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        let sent = send_many(&alice, &room_id, "history", 150).await;
        join_through_a(&bob, &room_id).await;
        alice.send_text(&room_id, "after the join").await;
        wait_for_message(&bob, &room_id, "after the join").await;

        // One page backfills one batch; then the room's server goes away.
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", encode(&room_id));
        let (status, first) = bob.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert!(first["end"].is_string(), "more history follows: {first}");
        a.stop().await;

        let started = Instant::now();
        let (events, _) = page_back(&bob, &room_id, 20).await;
        let bodies = message_bodies(&events);
        assert_eq!(bodies.last().map(String::as_str), Some("after the join"), "{backend:?}");
        let history = &bodies[..bodies.len() - 1];
        assert!(!history.is_empty(), "{backend:?}: the first batch is stored");
        assert!(history.len() < sent.len(), "{backend:?}: the rest of the history is not reachable");
        assert_eq!(history, &sent[sent.len() - history.len()..], "{backend:?}: the newest messages, in order");
        assert!(started.elapsed() < Duration::from_secs(30), "{backend:?}: a down server does not hold the request");

        let ids = event_ids(&events);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{backend:?}: no event comes twice");
        b.stop().await;
    }
}

/// Redacts `event_id` as `client` and returns the redaction's event id.
async fn redact(client: &Client, room_id: &str, event_id: &str) -> String {
    let txn = lattice::rooms::random_localpart(16);
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", encode(room_id), encode(event_id));
    let (status, body) = client.put(&path, json!({ "reason": "oops" })).await;
    assert_eq!(status, StatusCode::OK, "redact {event_id}: {body}");
    body["event_id"].as_str().expect("event_id of the redaction").to_owned()
}

fn find<'a>(events: &'a [Value], event_id: &str) -> &'a Value {
    events.iter().find(|e| e["event_id"] == event_id).unwrap_or_else(|| panic!("{event_id} in {events:?}"))
}

#[tokio::test]
async fn backfill_applies_redactions() {
    for backend in backends() {
        let (a, b) = start_pair(&backend).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;

        // The first redaction comes in an earlier batch than its target,
        // the second in the same batch as its target.
        let old_secret = alice.send_text(&room_id, "old secret").await;
        send_many(&alice, &room_id, "filler", 120).await;
        let new_secret = alice.send_text(&room_id, "new secret").await;
        let redact_old = redact(&alice, &room_id, &old_secret).await;
        let redact_new = redact(&alice, &room_id, &new_secret).await;
        join_through_a(&bob, &room_id).await;
        alice.send_text(&room_id, "after the join").await;
        wait_for_message(&bob, &room_id, "after the join").await;

        let (events, _) = page_back(&bob, &room_id, 50).await;
        for (target, redaction) in [(&old_secret, &redact_old), (&new_secret, &redact_new)] {
            let event = find(&events, target);
            assert_eq!(event["content"], json!({}), "{backend:?}: {event}");
            assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction.as_str(), "{backend:?}: {event}");
        }
        assert!(!Value::Array(events.clone()).to_string().contains("secret"), "{backend:?}");

        // A redaction shows once it applies. The first one waited for its
        // target while the pagination passed it, so it shows from the next one.
        let shown = find(&events, &redact_new);
        assert_eq!(shown["content"]["redacts"], new_secret.as_str(), "{backend:?}: {shown}");
        let (again, _) = page_back(&bob, &room_id, 50).await;
        let shown = find(&again, &redact_old);
        assert_eq!(shown["content"]["redacts"], old_secret.as_str(), "{backend:?}: {shown}");

        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(&room_id), encode(&old_secret));
        let (status, event) = bob.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {event}");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redact_old.as_str(), "{backend:?}: {event}");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn backfilled_messages_count_in_metrics_once() {
    for backend in backends() {
        let (a, b) = start_pair(&backend).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        alice.send_text(&room_id, "hello bob").await;
        join_through_a(&bob, &room_id).await;
        bob.send_text(&room_id, "hi alice").await;

        // Paging back fetches alice's first message, which opened the
        // conversation; paging again changes nothing.
        let path = "/_matrix/client/unstable/dev.lattice.connections/metrics";
        for round in 1..=2 {
            let (events, _) = page_back(&bob, &room_id, 20).await;
            assert_eq!(message_bodies(&events), ["hello bob", "hi alice"], "{backend:?}, round {round}");
            let (status, metrics) = bob.get(path).await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: {metrics}");
            assert_eq!(metrics["conversations_started"], 0, "{backend:?}, round {round}: {metrics}");
            assert_eq!(metrics["conversations_received"], 1, "{backend:?}, round {round}: {metrics}");
            assert_eq!(metrics["answered_within_24h"], 1.0, "{backend:?}, round {round}: {metrics}");
        }
        a.stop().await;
        b.stop().await;
    }
}

/// Waits until `client`'s server shows `user_id` with `membership` in the room.
async fn wait_for_membership(client: &Client, room_id: &str, user_id: &str, membership: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(room_id), encode(user_id));
    loop {
        let (_, body) = client.get(&path).await;
        if body["membership"] == membership {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {user_id} to {membership}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rejoin_backfills_the_gap() {
    for backend in backends() {
        let (a, b) = start_pair(&backend).await;
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        let mut expected = send_many(&alice, &room_id, "early", 5).await;
        join_through_a(&bob, &room_id).await;
        bob.send_text(&room_id, "bob was here").await;
        expected.push("bob was here".to_owned());

        // Bob leaves, and with him the last member on b, which then misses
        // what alice sends until he joins again.
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(&room_id));
        let (status, body) = bob.post(&path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        wait_for_membership(&alice, &room_id, &bob.user_id, "leave").await;
        expected.extend(send_many(&alice, &room_id, "away", 70).await);
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", encode(&room_id));
        let (status, body) = alice.put(&path, json!({ "topic": "while bob was away" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        expected.extend(send_many(&alice, &room_id, "away again", 60).await);
        join_through_a(&bob, &room_id).await;
        alice.send_text(&room_id, "welcome back").await;
        expected.push("welcome back".to_owned());
        wait_for_message(&bob, &room_id, "welcome back").await;

        let (events, _) = page_back(&bob, &room_id, 30).await;
        assert_eq!(message_bodies(&events), expected, "{backend:?}: every message, in order");
        let ids = event_ids(&events);
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{backend:?}: no event comes twice");
        let (on_a, _) = page_back(&alice, &room_id, 100).await;
        assert_eq!(ids, event_ids(&on_a), "{backend:?}: both servers order the history alike");

        // Search finds the messages of the gap and those after it.
        for (word, expected) in [("away", 131), ("welcome", 1), ("while", 1)] {
            let criteria = json!({ "search_term": word, "filter": { "limit": 1 } });
            let (status, body) = bob
                .post("/_matrix/client/v3/search", json!({ "search_categories": { "room_events": criteria } }))
                .await;
            assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
            let count = &body["search_categories"]["room_events"]["count"];
            assert_eq!(count, expected, "{backend:?}: search for {word:?}: {body}");
        }

        // Stored now: the same without the other server.
        a.stop().await;
        let (again, _) = page_back(&bob, &room_id, 100).await;
        assert_eq!(event_ids(&again), ids, "{backend:?}: the stored history reads the same");
        b.stop().await;
    }
}
