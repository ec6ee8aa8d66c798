//! Room state: reading all of it or one event, writing it, and the errors for
//! missing events, missing power and invalid content.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

/// Counts the events in the room through `/messages`.
async fn event_count(client: &Client, room_id: &str) -> usize {
    let (status, body) = client.get(&room_path(room_id, "messages?dir=b&limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "messages: {body}");
    body["chunk"].as_array().expect("chunk").len()
}

#[tokio::test]
async fn get_all_state() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({ "name": "Everything", "topic": "All of it" })).await;

        let (status, body) = alice.get(&room_path(&room, "state")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: state: {body}");
        let events = body.as_array().expect("state is an array of events");
        let find = |kind: &str, key: &str| events.iter().find(|e| e["type"] == kind && e["state_key"] == key);
        for kind in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"] {
            assert!(find(kind, "").is_some(), "{backend:?}: {kind} in the room state: {body}");
        }
        let member = find("m.room.member", &alice.user_id).expect("alice's member event");
        assert_eq!(member["content"]["membership"], "join", "{backend:?}: alice's membership");
        let name = find("m.room.name", "").expect("name event");
        assert_eq!(name["content"]["name"], "Everything", "{backend:?}: name content");
        for event in events {
            assert!(event["event_id"].as_str().is_some_and(|id| id.starts_with('$')), "{backend:?}: event id: {event}");
            assert_eq!(event["room_id"], room, "{backend:?}: room_id on each event");
            assert!(event["sender"].is_string(), "{backend:?}: sender on each event");
            assert!(event["origin_server_ts"].is_u64(), "{backend:?}: origin_server_ts on each event");
        }
        let keys: Vec<(Value, Value)> = events.iter().map(|e| (e["type"].clone(), e["state_key"].clone())).collect();
        let mut unique = keys.clone();
        unique.sort_by_key(|(t, k)| format!("{t}{k}"));
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{backend:?}: one event per (type, state_key)");
        server.stop().await;
    }
}

#[tokio::test]
async fn get_one_state_event() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({ "topic": "Just this" })).await;

        let (status, content) = alice.get(&room_path(&room, "state/m.room.topic/")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: topic: {content}");
        assert_eq!(content, json!({ "topic": "Just this" }), "{backend:?}: content only by default");

        let (status, event) = alice.get(&room_path(&room, "state/m.room.topic/?format=event")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: topic as an event: {event}");
        assert_eq!(event["type"], "m.room.topic", "{backend:?}: type");
        assert_eq!(event["state_key"], "", "{backend:?}: state_key");
        assert_eq!(event["content"]["topic"], "Just this", "{backend:?}: content");
        assert_eq!(event["sender"], alice.user_id, "{backend:?}: sender");
        assert!(event["event_id"].as_str().is_some_and(|id| id.starts_with('$')), "{backend:?}: event_id: {event}");

        let (status, member) =
            alice.get(&room_path(&room, &format!("state/m.room.member/{}", encode(&alice.user_id)))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: member state with a state key: {member}");
        assert_eq!(member["membership"], "join", "{backend:?}: membership content");
        server.stop().await;
    }
}

#[tokio::test]
async fn put_name_and_topic() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;

        let (status, body) = alice.put(&room_path(&room, "state/m.room.name/"), json!({ "name": "Renamed" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: put name: {body}");
        let name_event = body["event_id"].as_str().expect("event_id").to_owned();
        assert!(name_event.starts_with('$'), "{backend:?}: event id {name_event}");

        let (status, body) = alice.put(&room_path(&room, "state/m.room.topic"), json!({ "topic": "New topic" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: put topic: {body}");

        let (_, name) = bob.get(&room_path(&room, "state/m.room.name")).await;
        assert_eq!(name["name"], "Renamed", "{backend:?}: other members read the new name");
        let (_, topic) = bob.get(&room_path(&room, "state/m.room.topic/")).await;
        assert_eq!(topic["topic"], "New topic", "{backend:?}: other members read the new topic");

        let (status, event) = bob.get(&room_path(&room, &format!("event/{}", encode(&name_event)))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: name event by id: {event}");
        assert_eq!(event["content"]["name"], "Renamed", "{backend:?}: event content");

        // A second change carries the previous content in unsigned.
        let (status, body) = alice.put(&room_path(&room, "state/m.room.name"), json!({ "name": "Again" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: second rename: {body}");
        let (_, event) = alice.get(&room_path(&room, "state/m.room.name?format=event")).await;
        assert_eq!(event["content"]["name"], "Again", "{backend:?}: newest name");
        assert_eq!(event["unsigned"]["prev_content"]["name"], "Renamed", "{backend:?}: prev_content: {event}");

        // Custom state with a state key.
        let (status, body) = alice.put(&room_path(&room, "state/org.example.widget/w1"), json!({ "url": "x" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: custom state: {body}");
        let (status, widget) = bob.get(&room_path(&room, "state/org.example.widget/w1")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: read custom state: {widget}");
        assert_eq!(widget, json!({ "url": "x" }), "{backend:?}: custom state content");
        let other_key = bob.get(&room_path(&room, "state/org.example.widget")).await;
        assert_error(&other_key, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn missing_state_is_not_found() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;

        for path in ["state/m.room.topic", "state/m.room.topic/", "state/org.example.nothing/key"] {
            let response = alice.get(&room_path(&room, path)).await;
            assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn state_access_rules() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let eve = server.register("eve").await;
        let room = alice.create_room(json!({ "preset": "public_chat", "name": "Original" })).await;
        bob.join(&room).await;

        let denied = bob.put(&room_path(&room, "state/m.room.name"), json!({ "name": "Mine now" })).await;
        assert_error(&denied, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (_, name) = alice.get(&room_path(&room, "state/m.room.name")).await;
        assert_eq!(name["name"], "Original", "{backend:?}: name unchanged after a forbidden write");

        let outsider_write = eve.put(&room_path(&room, "state/m.room.topic"), json!({ "topic": "x" })).await;
        assert_error(&outsider_write, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let outsider_read = eve.get(&room_path(&room, "state")).await;
        assert_error(&outsider_read, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn invalid_content_is_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({ "name": "Valid" })).await;
        let before = event_count(&alice, &room).await;

        let number = alice.put(&room_path(&room, "state/m.room.name"), json!({ "name": 42 })).await;
        assert_error(&number, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let bad_visibility = alice
            .put(&room_path(&room, "state/m.room.history_visibility"), json!({ "history_visibility": "everyone" }))
            .await;
        assert_error(&bad_visibility, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let not_object = alice.put(&room_path(&room, "state/m.room.topic"), json!(["a list"])).await;
        assert_error(&not_object, StatusCode::BAD_REQUEST, "M_BAD_JSON");

        let (_, name) = alice.get(&room_path(&room, "state/m.room.name")).await;
        assert_eq!(name["name"], "Valid", "{backend:?}: name unchanged");
        assert_eq!(event_count(&alice, &room).await, before, "{backend:?}: no event written");
        server.stop().await;
    }
}

#[tokio::test]
async fn left_member_reads_state_at_leave() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat", "name": "When bob was here" })).await;
        bob.join(&room).await;
        let (status, body) = bob.post(&room_path(&room, "leave"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: leave: {body}");
        let (status, body) =
            alice.put(&room_path(&room, "state/m.room.name"), json!({ "name": "After bob left" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: rename: {body}");

        let (status, name) = bob.get(&room_path(&room, "state/m.room.name")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: a former member reads the state: {name}");
        assert_eq!(name["name"], "When bob was here", "{backend:?}: the state as it was at the leave");
        let (status, all) = bob.get(&room_path(&room, "state")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: all state at the leave: {all}");
        let own = all
            .as_array()
            .expect("state array")
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            .expect("bob's member event");
        assert_eq!(own["content"]["membership"], "leave", "{backend:?}: state includes the leave");
        server.stop().await;
    }
}
