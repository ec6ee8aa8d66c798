//! Reading a room's timeline: `/messages` pagination and filters, `/context`,
//! `/event`, and history visibility for members who joined late or left.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

async fn messages(client: &Client, room_id: &str, query: &str) -> Value {
    let (status, body) = client.get(&room_path(room_id, &format!("messages?{query}"))).await;
    assert_eq!(status, StatusCode::OK, "messages?{query}: {body}");
    body
}

/// Collects the bodies of the `m.room.message` events in a chunk, in chunk order.
fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .expect("chunk array")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().expect("body").to_owned())
        .collect()
}

/// Collects the bodies of every message the user can read, oldest first.
async fn readable_bodies(client: &Client, room_id: &str) -> Vec<String> {
    let page = messages(client, room_id, "dir=f&limit=1000").await;
    bodies(&page["chunk"])
}

async fn set_history_visibility(client: &Client, room_id: &str, visibility: &str) {
    let (status, body) = client
        .put(&room_path(room_id, "state/m.room.history_visibility"), json!({ "history_visibility": visibility }))
        .await;
    assert_eq!(status, StatusCode::OK, "set history_visibility {visibility}: {body}");
}

#[tokio::test]
async fn paginate_both_directions() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        let numbers: Vec<String> = (1..=7).map(|i| format!("m{i}")).collect();
        let mut mark = String::new();
        for (i, body) in numbers.iter().enumerate() {
            alice.send_text(&room, body).await;
            if i == 1 {
                // The position just after m2, for the `to` and `from` checks below.
                mark = alice.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();
            }
        }

        // Backwards in pages of 3 until `end` is absent.
        let mut collected = Vec::new();
        let mut from: Option<String> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 20, "{backend:?}: pagination ends");
            let query = match &from {
                Some(token) => format!("dir=b&limit=3&from={}", encode(token)),
                None => "dir=b&limit=3".to_owned(),
            };
            let page = messages(&alice, &room, &query).await;
            let chunk = page["chunk"].as_array().expect("chunk");
            assert!(chunk.len() <= 3, "{backend:?}: a page holds at most limit events");
            assert!(page["start"].is_string(), "{backend:?}: start token on every page");
            collected.extend(bodies(&page["chunk"]));
            match page["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => break,
            }
        }
        let newest_first: Vec<String> = numbers.iter().rev().cloned().collect();
        assert_eq!(collected, newest_first, "{backend:?}: backwards pagination returns every message newest first");

        // The first backwards page: the three newest messages.
        let page = messages(&alice, &room, "dir=b&limit=3").await;
        assert_eq!(bodies(&page["chunk"]), vec!["m7", "m6", "m5"], "{backend:?}: newest page");

        // Forwards from the start of the room.
        let forward = messages(&alice, &room, "dir=f&limit=100").await;
        assert_eq!(bodies(&forward["chunk"]), numbers, "{backend:?}: forwards returns messages oldest first");
        let first = &forward["chunk"][0];
        assert_eq!(first["type"], "m.room.create", "{backend:?}: forwards starts at the create event");

        // `to` stops pagination at a token in both directions.
        let back_to = messages(&alice, &room, &format!("dir=b&limit=100&to={}", encode(&mark))).await;
        assert_eq!(bodies(&back_to["chunk"]), vec!["m7", "m6", "m5", "m4", "m3"], "{backend:?}: backwards to the mark");
        let forward_from = messages(&alice, &room, &format!("dir=f&limit=2&from={}", encode(&mark))).await;
        assert_eq!(bodies(&forward_from["chunk"]), vec!["m3", "m4"], "{backend:?}: forwards from the mark");
        let next = forward_from["end"].as_str().expect("end of a full forward page").to_owned();
        let rest = messages(&alice, &room, &format!("dir=f&limit=100&from={}", encode(&next))).await;
        assert_eq!(bodies(&rest["chunk"]), vec!["m5", "m6", "m7"], "{backend:?}: forwards continues from end");
        let forward_to = messages(&alice, &room, &format!("dir=f&limit=100&to={}", encode(&mark))).await;
        assert_eq!(bodies(&forward_to["chunk"]), vec!["m1", "m2"], "{backend:?}: forwards to the mark");

        let bad_dir = alice.get(&room_path(&room, "messages?dir=sideways")).await;
        assert_eq!(bad_dir.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid dir: {}", bad_dir.1);
        let bad_token = alice.get(&room_path(&room, "messages?dir=b&from=garbage")).await;
        assert_eq!(bad_token.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid from token: {}", bad_token.1);
        server.stop().await;
    }
}

#[tokio::test]
async fn message_filters() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        alice.send_text(&room, "from alice").await;
        bob.send_text(&room, "from bob").await;
        let (status, body) = alice.put(&room_path(&room, "send/org.example.ping/p1"), json!({ "ping": true })).await;
        assert_eq!(status, StatusCode::OK, "custom event: {body}");

        let filter = |f: Value| encode(&f.to_string());

        let only_messages =
            messages(&alice, &room, &format!("dir=b&filter={}", filter(json!({ "types": ["m.room.message"] })))).await;
        let chunk = only_messages["chunk"].as_array().expect("chunk");
        assert_eq!(chunk.len(), 2, "{backend:?}: types keeps only messages: {only_messages}");
        assert!(chunk.iter().all(|e| e["type"] == "m.room.message"), "{backend:?}: types filter");

        let wildcard = messages(
            &alice,
            &room,
            &format!("dir=b&limit=100&filter={}", filter(json!({ "types": ["org.example.*"] }))),
        )
        .await;
        assert_eq!(wildcard["chunk"].as_array().expect("chunk").len(), 1, "{backend:?}: wildcard type: {wildcard}");

        let no_members = messages(
            &alice,
            &room,
            &format!("dir=b&limit=100&filter={}", filter(json!({ "not_types": ["m.room.member", "m.room.message"] }))),
        )
        .await;
        let chunk = no_members["chunk"].as_array().expect("chunk");
        assert!(!chunk.is_empty(), "{backend:?}: other events remain");
        assert!(
            chunk.iter().all(|e| e["type"] != "m.room.member" && e["type"] != "m.room.message"),
            "{backend:?}: not_types removes member and message events"
        );

        let from_bob =
            messages(&alice, &room, &format!("dir=b&limit=100&filter={}", filter(json!({ "senders": [bob.user_id] }))))
                .await;
        let chunk = from_bob["chunk"].as_array().expect("chunk");
        assert!(chunk.iter().all(|e| e["sender"] == bob.user_id), "{backend:?}: senders filter");
        assert_eq!(bodies(&from_bob["chunk"]), vec!["from bob"], "{backend:?}: bob's message");

        let lazy = messages(
            &alice,
            &room,
            &format!(
                "dir=b&limit=100&filter={}",
                filter(json!({ "types": ["m.room.message"], "lazy_load_members": true }))
            ),
        )
        .await;
        let state = lazy["state"].as_array().expect("lazy-loaded member state");
        let mut members: Vec<&str> = state
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "m.room.member", "{backend:?}: state holds member events");
                e["state_key"].as_str().expect("state_key")
            })
            .collect();
        members.sort();
        let mut expected = vec![alice.user_id.as_str(), bob.user_id.as_str()];
        expected.sort();
        assert_eq!(members, expected, "{backend:?}: member events of the senders in the chunk");

        let invalid = alice.get(&room_path(&room, "messages?dir=b&filter=%7Bnot%20json")).await;
        assert_error(&invalid, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        server.stop().await;
    }
}

#[tokio::test]
async fn context_around_event() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({ "name": "Context" })).await;
        let mut ids = Vec::new();
        for i in 1..=5 {
            ids.push(alice.send_text(&room, &format!("c{i}")).await);
        }

        let (status, body) = alice.get(&room_path(&room, &format!("context/{}?limit=4", encode(&ids[2])))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: context: {body}");
        assert_eq!(body["event"]["event_id"], ids[2], "{backend:?}: the event itself");
        assert_eq!(body["event"]["content"]["body"], "c3", "{backend:?}: event content");
        assert_eq!(bodies(&body["events_before"]), vec!["c2", "c1"], "{backend:?}: events before, newest first");
        assert_eq!(bodies(&body["events_after"]), vec!["c4", "c5"], "{backend:?}: events after, oldest first");
        assert!(body["start"].is_string() && body["end"].is_string(), "{backend:?}: start and end tokens");
        let state = body["state"].as_array().expect("state");
        let name = state.iter().find(|e| e["type"] == "m.room.name").expect("room name in context state");
        assert_eq!(name["content"]["name"], "Context", "{backend:?}: state content");

        // The tokens continue pagination on either side.
        let start = body["start"].as_str().unwrap();
        let older = messages(&alice, &room, &format!("dir=b&limit=100&from={}", encode(start))).await;
        let older_events = older["chunk"].as_array().expect("chunk");
        assert!(
            older_events.iter().all(|e| e["content"]["body"] != "c1" && e["content"]["body"] != "c2"),
            "{backend:?}: start continues before events_before"
        );
        assert!(older_events.iter().any(|e| e["type"] == "m.room.name"), "{backend:?}: older events reachable");
        let end = body["end"].as_str().unwrap();
        let newer = messages(&alice, &room, &format!("dir=f&limit=100&from={}", encode(end))).await;
        assert!(bodies(&newer["chunk"]).is_empty(), "{backend:?}: nothing after c5");

        let missing = alice.get(&room_path(&room, &format!("context/{}", encode("$missingevent")))).await;
        assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn event_by_id() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let eve = server.register("eve").await;
        let room = alice.create_room(json!({})).await;
        let event_id = alice.send_text(&room, "look me up").await;

        let (status, event) = alice.get(&room_path(&room, &format!("event/{}", encode(&event_id)))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: event: {event}");
        assert_eq!(event["event_id"], event_id, "{backend:?}: event_id");
        assert_eq!(event["content"]["body"], "look me up", "{backend:?}: content");
        assert_eq!(event["sender"], alice.user_id, "{backend:?}: sender");
        assert_eq!(event["room_id"], room, "{backend:?}: room_id");
        assert!(event["origin_server_ts"].is_u64(), "{backend:?}: origin_server_ts");

        let missing = alice.get(&room_path(&room, &format!("event/{}", encode("$nosuchevent")))).await;
        assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // An event looked up through the wrong room is not found.
        let other = alice.create_room(json!({})).await;
        let wrong_room = alice.get(&room_path(&other, &format!("event/{}", encode(&event_id)))).await;
        assert_error(&wrong_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let outsider = eve.get(&room_path(&room, &format!("event/{}", encode(&event_id)))).await;
        assert_eq!(outsider.0, StatusCode::FORBIDDEN, "{backend:?}: outsider: {}", outsider.1);
        server.stop().await;
    }
}

#[tokio::test]
async fn history_visibility_joined_and_shared() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let joined_room = alice.create_room(json!({ "preset": "public_chat" })).await;
        set_history_visibility(&alice, &joined_room, "joined").await;
        alice.send_text(&joined_room, "before bob").await;
        bob.join(&joined_room).await;
        alice.send_text(&joined_room, "after bob").await;
        assert_eq!(
            readable_bodies(&bob, &joined_room).await,
            vec!["after bob"],
            "{backend:?}: joined hides earlier messages"
        );
        let backwards = messages(&bob, &joined_room, "dir=b&limit=100").await;
        assert_eq!(bodies(&backwards["chunk"]), vec!["after bob"], "{backend:?}: joined, backwards");
        assert_eq!(
            readable_bodies(&alice, &joined_room).await,
            vec!["before bob", "after bob"],
            "{backend:?}: alice reads everything"
        );

        let shared_room = alice.create_room(json!({ "preset": "public_chat" })).await;
        alice.send_text(&shared_room, "before bob").await;
        bob.join(&shared_room).await;
        alice.send_text(&shared_room, "after bob").await;
        assert_eq!(
            readable_bodies(&bob, &shared_room).await,
            vec!["before bob", "after bob"],
            "{backend:?}: shared shows earlier messages"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn history_visibility_invited() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "private_chat" })).await;
        set_history_visibility(&alice, &room, "invited").await;
        alice.send_text(&room, "before invite").await;

        let (status, body) = alice.post(&room_path(&room, "invite"), json!({ "user_id": bob.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: invite: {body}");
        alice.send_text(&room, "while invited").await;
        bob.join(&room).await;
        alice.send_text(&room, "after join").await;

        assert_eq!(
            readable_bodies(&bob, &room).await,
            vec!["while invited", "after join"],
            "{backend:?}: invited shows events from the invite on"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn left_user_sees_nothing_after_leaving() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        alice.send_text(&room, "while joined").await;
        let (status, body) = bob.post(&room_path(&room, "leave"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: leave: {body}");
        let hidden = alice.send_text(&room, "after leave").await;

        assert_eq!(
            readable_bodies(&bob, &room).await,
            vec!["while joined"],
            "{backend:?}: forwards stops at the leave"
        );
        let backwards = messages(&bob, &room, "dir=b&limit=100").await;
        assert_eq!(bodies(&backwards["chunk"]), vec!["while joined"], "{backend:?}: backwards starts at the leave");
        let direct = bob.get(&room_path(&room, &format!("event/{}", encode(&hidden)))).await;
        assert_error(&direct, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let context = bob.get(&room_path(&room, &format!("context/{}", encode(&hidden)))).await;
        assert_error(&context, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn world_readable_history_for_non_members() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let eve = server.register("eve").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        alice.send_text(&room, "before world_readable").await;
        set_history_visibility(&alice, &room, "world_readable").await;
        let public = alice.send_text(&room, "for everyone").await;

        assert_eq!(
            readable_bodies(&eve, &room).await,
            vec!["for everyone"],
            "{backend:?}: a non-member reads what was sent while world_readable"
        );
        let (status, event) = eve.get(&room_path(&room, &format!("event/{}", encode(&public)))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: non-member reads a world_readable event: {event}");
        assert_eq!(event["content"]["body"], "for everyone", "{backend:?}: content");
        server.stop().await;
    }
}
