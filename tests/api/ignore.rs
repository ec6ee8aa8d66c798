//! Ignoring users: `m.ignored_user_list` hides an ignored user's messages
//! and invites from `/sync`, `/messages` and `/context`, keeps their state
//! events, and takes effect from the next request.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

async fn set_ignored(client: &Client, ignored: &[&str]) {
    let users: serde_json::Map<String, Value> = ignored.iter().map(|u| ((*u).to_owned(), json!({}))).collect();
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", encode(&client.user_id));
    let (status, body) = client.put(&path, json!({ "ignored_users": users })).await;
    assert_eq!(status, StatusCode::OK, "set the ignored users: {body}");
}

fn timeline_texts(sync: &Value, room_id: &str) -> Vec<String> {
    let events = sync["rooms"]["join"][room_id]["timeline"]["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter_map(|e| match e["type"].as_str() {
            Some("m.room.message") => e["content"]["body"].as_str().map(str::to_owned),
            Some("m.room.topic") => e["content"]["topic"].as_str().map(|t| format!("topic: {t}")),
            _ => None,
        })
        .collect()
}

fn chunk_texts(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| match e["type"].as_str() {
            Some("m.room.message") => e["content"]["body"].as_str().map(str::to_owned),
            Some("m.room.topic") => e["content"]["topic"].as_str().map(|t| format!("topic: {t}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn ignored_messages_hidden_state_kept() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice
            .create_room(json!({ "preset": "public_chat", "power_level_content_override": { "state_default": 0 } }))
            .await;
        bob.join(&room).await;
        carol.join(&room).await;
        let since = alice.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        set_ignored(&alice, &[&bob.user_id]).await;
        bob.send_text(&room, "from bob").await;
        let (status, body) = bob
            .put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", encode(&room)),
                json!({ "topic": "bob's topic" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "topic: {body}");
        let carols = carol.send_text(&room, "from carol").await;

        let sync = alice.sync(&format!("since={since}")).await;
        assert_eq!(timeline_texts(&sync, &room), vec!["topic: bob's topic".to_owned(), "from carol".to_owned()]);
        // Carol ignores no one, so all three reach her.
        let seen_by_carol = carol.sync(&format!("since={since}")).await;
        assert_eq!(
            timeline_texts(&seen_by_carol, &room),
            vec!["from bob".to_owned(), "topic: bob's topic".to_owned(), "from carol".to_owned()]
        );

        let (status, page) =
            alice.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5", encode(&room))).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(chunk_texts(&page["chunk"]), vec!["from carol".to_owned(), "topic: bob's topic".to_owned()]);
        let (status, context) =
            alice.get(&format!("/_matrix/client/v3/rooms/{}/context/{}?limit=4", encode(&room), encode(&carols))).await;
        assert_eq!(status, StatusCode::OK, "{context}");
        assert_eq!(chunk_texts(&context["events_before"]), vec!["topic: bob's topic".to_owned()]);

        // No longer ignored: bob's next messages show again.
        let since = sync["next_batch"].as_str().expect("next_batch").to_owned();
        set_ignored(&alice, &[]).await;
        bob.send_text(&room, "bob is back").await;
        let sync = alice.sync(&format!("since={since}")).await;
        assert_eq!(timeline_texts(&sync, &room), vec!["bob is back".to_owned()]);
    }
}

#[tokio::test]
async fn ignored_sender_does_not_notify() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        for member in [&bob, &carol, &dave] {
            member.join(&room).await;
        }

        set_ignored(&alice, &[&bob.user_id]).await;
        bob.send_text(&room, "from bob").await;
        let mention = json!({
            "msgtype": "m.text",
            "body": "alice, a question",
            "m.mentions": { "user_ids": [alice.user_id] },
        });
        let (status, body) =
            bob.put(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/m1", encode(&room)), mention).await;
        assert_eq!(status, StatusCode::OK, "mention: {body}");
        carol.send_text(&room, "from carol").await;

        let sync = alice.sync("").await;
        let counts = &sync["rooms"]["join"][&room]["unread_notifications"];
        assert_eq!(counts["notification_count"], 1, "{backend:?}: only carol's message counts: {counts}");
        assert_eq!(counts["highlight_count"], 0, "{backend:?}: bob's mention does not highlight: {counts}");
        let (status, listed) = alice.get("/_matrix/client/v3/notifications").await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        let bodies: Vec<&str> = listed["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["event"]["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, vec!["from carol"], "{backend:?}");

        // Dave ignores no one: all three messages count for him.
        let sync = dave.sync("").await;
        let counts = &sync["rooms"]["join"][&room]["unread_notifications"];
        assert_eq!(counts["notification_count"], 3, "{backend:?}: {counts}");
    }
}

#[tokio::test]
async fn ignored_inviter_invite_hidden() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        set_ignored(&alice, &[&bob.user_id]).await;

        let from_bob = bob.create_room(json!({ "invite": [alice.user_id] })).await;
        let from_carol = carol.create_room(json!({ "invite": [alice.user_id] })).await;
        let sync = alice.sync("").await;
        let invites = sync["rooms"]["invite"].as_object().cloned().unwrap_or_default();
        assert!(invites.contains_key(&from_carol), "carol's invite shows: {sync}");
        assert!(!invites.contains_key(&from_bob), "bob's invite is hidden: {sync}");
    }
}

#[tokio::test]
async fn ignored_user_list_rejects_bad_content() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", encode(&alice.user_id));
        for content in
            [json!({}), json!({ "ignored_users": ["@bob:localhost"] }), json!({ "ignored_users": { "bob": {} } })]
        {
            let response = alice.put(&path, content.clone()).await;
            assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
            let message = response.1["error"].as_str().unwrap_or_default();
            assert!(message.contains("ignored_users"), "the message names the field for {content}: {message}");
        }
        let (status, body) = alice.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored: {body}");
    }
}

#[tokio::test]
async fn ignored_replies_left_out_of_threads() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;
        set_ignored(&alice, &[&bob.user_id]).await;

        let root = carol.send_text(&room, "thread root").await;
        let reply = |client: &Client, body: &str, txn: &str| {
            let content = json!({
                "msgtype": "m.text",
                "body": body,
                "m.relates_to": { "rel_type": "m.thread", "event_id": root },
            });
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(&room));
            let client = client.clone();
            async move {
                let (status, body) = client.put(&path, content).await;
                assert_eq!(status, StatusCode::OK, "reply: {body}");
            }
        };
        reply(&carol, "carol replies", "t1").await;
        reply(&bob, "bob replies", "t2").await;
        reply(&bob, "bob again", "t3").await;

        let event_path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(&room), encode(&root));
        let (status, seen_by_alice) = alice.get(&event_path).await;
        assert_eq!(status, StatusCode::OK, "{seen_by_alice}");
        let thread = &seen_by_alice["unsigned"]["m.relations"]["m.thread"];
        assert_eq!(thread["count"], 1, "{backend:?}: {thread}");
        assert_eq!(thread["latest_event"]["content"]["body"], "carol replies", "{backend:?}");

        let (status, seen_by_carol) = carol.get(&event_path).await;
        assert_eq!(status, StatusCode::OK, "{seen_by_carol}");
        let thread = &seen_by_carol["unsigned"]["m.relations"]["m.thread"];
        assert_eq!(thread["count"], 3, "{backend:?}: {thread}");
        assert_eq!(thread["latest_event"]["content"]["body"], "bob again", "{backend:?}");

        let relations_path = format!("/_matrix/client/v1/rooms/{}/relations/{}", encode(&room), encode(&root));
        let (status, related) = alice.get(&relations_path).await;
        assert_eq!(status, StatusCode::OK, "{related}");
        assert_eq!(chunk_texts(&related["chunk"]), vec!["carol replies".to_owned()], "{backend:?}");
    }
}
