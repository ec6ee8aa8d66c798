//! `/sync`: initial and incremental responses, limited timelines, full state,
//! long polling, filters, invited and left rooms, and unread counts.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, backends, encode, timeline};

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

fn filter_query(filter: Value) -> String {
    format!("filter={}", encode(&filter.to_string()))
}

/// Collects the bodies of the `m.room.message` events in a room's sync timeline, oldest first.
fn timeline_bodies(sync: &Value, room_id: &str) -> Vec<String> {
    timeline(sync, room_id)
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().expect("body").to_owned())
        .collect()
}

fn notification_count(sync: &Value, room_id: &str) -> Value {
    sync["rooms"]["join"][room_id]["unread_notifications"]["notification_count"].clone()
}

#[tokio::test]
async fn initial_sync_contents() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat", "name": "Initial" })).await;
        bob.join(&room).await;
        for i in 1..=12 {
            alice.send_text(&room, &format!("n{i}")).await;
        }

        let sync = alice.sync("").await;
        let joined = &sync["rooms"]["join"][&room];
        let events = timeline(&sync, &room);
        assert_eq!(events.len(), 10, "{backend:?}: default timeline limit");
        assert_eq!(
            timeline_bodies(&sync, &room),
            (3..=12).map(|i| format!("n{i}")).collect::<Vec<_>>(),
            "{backend:?}: the newest messages, oldest first"
        );
        assert_eq!(joined["timeline"]["limited"], true, "{backend:?}: older events were left out");

        let state = joined["state"]["events"].as_array().expect("state events");
        let find = |kind: &str| state.iter().find(|e| e["type"] == kind);
        assert!(find("m.room.create").is_some(), "{backend:?}: create event in state: {state:?}");
        assert_eq!(find("m.room.name").expect("name in state")["content"]["name"], "Initial", "{backend:?}: name");
        let members: Vec<&Value> = state.iter().filter(|e| e["type"] == "m.room.member").collect();
        assert_eq!(members.len(), 2, "{backend:?}: both member events in state");
        assert!(state.iter().all(|e| e.get("room_id").is_none()), "{backend:?}: sync events omit room_id");

        assert_eq!(joined["summary"]["m.joined_member_count"], 2, "{backend:?}: joined member count");
        assert_eq!(joined["summary"]["m.invited_member_count"], 0, "{backend:?}: invited member count");
        let heroes = joined["summary"]["m.heroes"].as_array().expect("heroes");
        assert_eq!(heroes, &vec![json!(bob.user_id)], "{backend:?}: heroes are the other members");

        // prev_batch continues backwards from the start of the timeline.
        let prev_batch = joined["timeline"]["prev_batch"].as_str().expect("prev_batch");
        let (status, page) =
            alice.get(&room_path(&room, &format!("messages?dir=b&limit=3&from={}", encode(prev_batch)))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: messages from prev_batch: {page}");
        let older: Vec<&str> =
            page["chunk"].as_array().expect("chunk").iter().filter_map(|e| e["content"]["body"].as_str()).collect();
        assert_eq!(older, vec!["n2", "n1"], "{backend:?}: the messages just before the timeline");
        server.stop().await;
    }
}

#[tokio::test]
async fn incremental_sync_returns_new_events() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        let quiet = alice.create_room(json!({})).await;
        alice.send_text(&room, "old").await;
        let since = next_batch(&alice.sync("").await);

        let new_id = alice.send_text(&room, "new").await;
        let sync = alice.sync(&format!("since={}", encode(&since))).await;
        let events = timeline(&sync, &room);
        assert_eq!(events.len(), 1, "{backend:?}: only the new event: {sync}");
        assert_eq!(events[0]["event_id"], new_id, "{backend:?}: the new event");
        assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], false, "{backend:?}: not limited");
        assert!(sync["rooms"]["join"].get(&quiet).is_none(), "{backend:?}: rooms without news are left out");
        assert_ne!(next_batch(&sync), since, "{backend:?}: next_batch moves on");

        let empty = alice.sync(&format!("since={}", encode(&next_batch(&sync)))).await;
        assert!(
            empty["rooms"]["join"].as_object().is_none_or(|rooms| !rooms.contains_key(&room)),
            "{backend:?}: nothing new: {empty}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn incremental_sync_limited() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({ "name": "Busy" })).await;
        let since = next_batch(&alice.sync("").await);
        for i in 1..=15 {
            alice.send_text(&room, &format!("b{i}")).await;
        }

        let filter = filter_query(json!({ "room": { "timeline": { "limit": 5 } } }));
        let sync = alice.sync(&format!("since={}&{filter}", encode(&since))).await;
        let joined = &sync["rooms"]["join"][&room];
        assert_eq!(
            timeline_bodies(&sync, &room),
            (11..=15).map(|i| format!("b{i}")).collect::<Vec<_>>(),
            "{backend:?}: the five newest"
        );
        assert_eq!(joined["timeline"]["limited"], true, "{backend:?}: limited");
        let prev_batch = joined["timeline"]["prev_batch"].as_str().expect("prev_batch");

        let (status, page) = alice
            .get(&room_path(
                &room,
                &format!("messages?dir=b&limit=10&from={}&to={}", encode(prev_batch), encode(&since)),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: fill the gap: {page}");
        let gap: Vec<&str> =
            page["chunk"].as_array().expect("chunk").iter().filter_map(|e| e["content"]["body"].as_str()).collect();
        let expected: Vec<String> = (1..=10).rev().map(|i| format!("b{i}")).collect();
        assert_eq!(gap, expected, "{backend:?}: the gap between since and the timeline");
        server.stop().await;
    }
}

#[tokio::test]
async fn full_state_repeats_state() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({ "name": "Stateful" })).await;
        let since = next_batch(&alice.sync("").await);

        let sync = alice.sync(&format!("since={}&full_state=true", encode(&since))).await;
        let joined = &sync["rooms"]["join"][&room];
        assert!(joined.is_object(), "{backend:?}: full_state includes every joined room: {sync}");
        let in_state_or_timeline = |kind: &str| {
            let state = joined["state"]["events"].as_array().expect("state");
            let events = joined["timeline"]["events"].as_array().expect("timeline");
            state.iter().chain(events.iter()).any(|e| e["type"] == kind)
        };
        for kind in ["m.room.create", "m.room.name", "m.room.power_levels", "m.room.member"] {
            assert!(in_state_or_timeline(kind), "{backend:?}: {kind} with full_state");
        }

        let plain = alice.sync(&format!("since={}", encode(&since))).await;
        assert!(plain["rooms"]["join"].get(&room).is_none(), "{backend:?}: without full_state nothing is repeated");
        server.stop().await;
    }
}

#[tokio::test]
async fn long_poll_wakes_on_message() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let since = next_batch(&alice.sync("").await);

        let waiting = alice.clone();
        let started = Instant::now();
        let poll = tokio::spawn(async move { waiting.sync(&format!("since={}&timeout=30000", encode(&since))).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "{backend:?}: the long poll waits while nothing happens");

        bob.send_text(&room, "wake up").await;
        let sync = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("long poll returns")
            .expect("sync task succeeds");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "{backend:?}: long poll returned after {elapsed:?}");
        assert_eq!(timeline_bodies(&sync, &room), vec!["wake up"], "{backend:?}: the message that woke it");
        server.stop().await;
    }
}

#[tokio::test]
async fn sync_filters() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let first = alice.create_room(json!({})).await;
        let second = alice.create_room(json!({})).await;
        for (i, room) in [&first, &second].into_iter().enumerate() {
            alice.send_text(room, "hello").await;
            let (status, body) =
                alice.put(&room_path(room, &format!("send/org.example.ping/p{i}")), json!({ "n": 1 })).await;
            assert_eq!(status, StatusCode::OK, "custom event: {body}");
        }

        let only_first = alice.sync(&filter_query(json!({ "room": { "rooms": [first] } }))).await;
        assert!(only_first["rooms"]["join"].get(&first).is_some(), "{backend:?}: rooms keeps the named room");
        assert!(only_first["rooms"]["join"].get(&second).is_none(), "{backend:?}: rooms drops the others");

        let not_first = alice.sync(&filter_query(json!({ "room": { "not_rooms": [first] } }))).await;
        assert!(not_first["rooms"]["join"].get(&first).is_none(), "{backend:?}: not_rooms drops the room");
        assert!(not_first["rooms"]["join"].get(&second).is_some(), "{backend:?}: not_rooms keeps the others");

        let limited = alice.sync(&filter_query(json!({ "room": { "timeline": { "limit": 2 } } }))).await;
        assert_eq!(timeline(&limited, &first).len(), 2, "{backend:?}: timeline limit");
        assert_eq!(limited["rooms"]["join"][&first]["timeline"]["limited"], true, "{backend:?}: limited by the filter");

        let typed = alice.sync(&filter_query(json!({ "room": { "timeline": { "types": ["m.room.message"] } } }))).await;
        let events = timeline(&typed, &first);
        assert_eq!(events.len(), 1, "{backend:?}: types keeps only the message: {typed}");
        assert_eq!(events[0]["content"]["body"], "hello", "{backend:?}: the message");

        let not_typed =
            alice.sync(&filter_query(json!({ "room": { "timeline": { "not_types": ["m.room.*"] } } }))).await;
        let events = timeline(&not_typed, &second);
        assert!(!events.is_empty(), "{backend:?}: not_types leaves the custom event");
        assert!(events.iter().all(|e| e["type"] == "org.example.ping"), "{backend:?}: not_types wildcard");

        // A stored filter works the same as an inline one.
        let (status, created) = alice
            .post(
                &format!("/_matrix/client/v3/user/{}/filter", encode(&alice.user_id)),
                json!({ "room": { "rooms": [second] } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: create filter: {created}");
        let filter_id = created["filter_id"].as_str().expect("filter_id");
        let stored = alice.sync(&format!("filter={filter_id}")).await;
        assert!(stored["rooms"]["join"].get(&second).is_some(), "{backend:?}: stored filter keeps its room");
        assert!(stored["rooms"]["join"].get(&first).is_none(), "{backend:?}: stored filter drops the other");
        server.stop().await;
    }
}

#[tokio::test]
async fn invited_and_left_rooms() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let since = next_batch(&bob.sync("").await);

        let room = alice.create_room(json!({ "name": "Invitation", "invite": [bob.user_id] })).await;
        let sync = bob.sync(&format!("since={}", encode(&since))).await;
        let invite_state = sync["rooms"]["invite"][&room]["invite_state"]["events"].as_array().expect("invite_state");
        let name = invite_state.iter().find(|e| e["type"] == "m.room.name").expect("name in invite_state");
        assert_eq!(name["content"]["name"], "Invitation", "{backend:?}: room name for the invitee");
        let own = invite_state
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            .expect("bob's invite");
        assert_eq!(own["content"]["membership"], "invite", "{backend:?}: invite membership");
        assert!(
            invite_state.iter().all(|e| e.get("event_id").is_none()),
            "{backend:?}: stripped state has no event ids"
        );
        assert!(sync["rooms"]["join"].get(&room).is_none(), "{backend:?}: not joined yet");

        bob.join(&room).await;
        let joined_sync = bob.sync(&format!("since={}", encode(&next_batch(&sync)))).await;
        assert!(joined_sync["rooms"]["join"].get(&room).is_some(), "{backend:?}: joined room in join");
        assert!(joined_sync["rooms"]["invite"].get(&room).is_none(), "{backend:?}: no longer invited");

        let (status, body) = bob.post(&room_path(&room, "leave"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: leave: {body}");
        let left_sync = bob.sync(&format!("since={}", encode(&next_batch(&joined_sync)))).await;
        let left = &left_sync["rooms"]["leave"][&room];
        assert!(left.is_object(), "{backend:?}: left room in leave: {left_sync}");
        let leave_event = left["timeline"]["events"]
            .as_array()
            .expect("leave timeline")
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            .expect("bob's leave event in the leave timeline")
            .clone();
        assert_eq!(leave_event["content"]["membership"], "leave", "{backend:?}: leave membership");
        assert!(left_sync["rooms"]["join"].get(&room).is_none(), "{backend:?}: not in join after leaving");

        // Messages after the leave do not reach bob.
        let after = next_batch(&left_sync);
        alice.send_text(&room, "after bob left").await;
        let later = bob.sync(&format!("since={}", encode(&after))).await;
        assert!(later["rooms"]["leave"].get(&room).is_none(), "{backend:?}: no further updates for a left room");
        assert!(later["rooms"]["join"].get(&room).is_none(), "{backend:?}: left room stays out of join");
        server.stop().await;
    }
}

#[tokio::test]
async fn unread_notification_counts() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let first = alice.send_text(&room, "one").await;
        alice.send_text(&room, "two").await;
        let last = alice.send_text(&room, "three").await;

        let sync = bob.sync("").await;
        assert_eq!(notification_count(&sync, &room), 3, "{backend:?}: three unread messages from alice");
        let own = alice.sync("").await;
        assert_eq!(notification_count(&own, &room), 0, "{backend:?}: own messages do not count");

        let (status, body) =
            bob.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&first))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: receipt: {body}");
        let sync = bob.sync("").await;
        assert_eq!(notification_count(&sync, &room), 2, "{backend:?}: two unread after reading the first");

        let (status, body) = bob.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&last))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: receipt: {body}");
        let sync = bob.sync("").await;
        assert_eq!(notification_count(&sync, &room), 0, "{backend:?}: nothing unread after the newest");
        server.stop().await;
    }
}

#[tokio::test]
async fn long_poll_wakes_on_invite() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "private_chat" })).await;
        let since = next_batch(&bob.sync("").await);

        let waiting = bob.clone();
        let started = Instant::now();
        let poll = tokio::spawn(async move { waiting.sync(&format!("since={}&timeout=30000", encode(&since))).await });
        tokio::time::sleep(Duration::from_millis(300)).await;

        let (status, body) = alice.post(&room_path(&room, "invite"), json!({ "user_id": bob.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: invite: {body}");
        let sync = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("long poll returns")
            .expect("sync task succeeds");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "{backend:?}: long poll returned after {elapsed:?}");
        assert!(sync["rooms"]["invite"].get(&room).is_some(), "{backend:?}: the invite woke bob's sync: {sync}");
        server.stop().await;
    }
}
