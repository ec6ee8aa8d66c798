//! Stored push actions in rooms where most members share the default
//! outcome and a few have one of their own: counts and highlights per
//! member, threads, receipts, `GET /notifications` pages that mix both kinds
//! of rows, the read position that a user's own message sets, and pruning.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    harness::{Client, TestServer, backends, encode},
    push_rules::{counts, has_highlight, put_rule, room_path, send},
};

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } })
}

/// The event ids and `read` flags of one `/notifications` page, and its `next_token`.
async fn notifications(client: &Client, query: &str) -> (Vec<(String, bool)>, Option<String>) {
    let (status, page) = client.get(&format!("/_matrix/client/v3/notifications?{query}")).await;
    assert_eq!(status, StatusCode::OK, "notifications: {page}");
    let entries = page["notifications"]
        .as_array()
        .expect("notifications array")
        .iter()
        .map(|n| (n["event"]["event_id"].as_str().unwrap().to_owned(), n["read"].as_bool().unwrap()))
        .collect();
    (entries, page["next_token"].as_str().map(str::to_owned))
}

async fn ids(client: &Client, query: &str) -> Vec<String> {
    notifications(client, query).await.0.into_iter().map(|(id, _)| id).collect()
}

async fn receipt(client: &Client, room: &str, event_id: &str, body: Value) {
    let (status, response) = client.post(&room_path(room, &format!("receipt/m.read/{}", encode(event_id))), body).await;
    assert_eq!(status, StatusCode::OK, "receipt: {response}");
}

/// A room of five: alice sends, bob has a keyword rule, carol is mentioned,
/// dave muted the room and erin keeps the defaults.
struct FiveMembers {
    room: String,
    alice: Client,
    bob: Client,
    carol: Client,
    dave: Client,
    erin: Client,
}

async fn five_members(server: &TestServer) -> FiveMembers {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let erin = server.register("erin").await;
    let room = alice.create_room(json!({ "preset": "public_chat" })).await;
    for member in [&bob, &carol, &dave, &erin] {
        member.join(&room).await;
    }
    let keyword = json!({ "pattern": "pizza", "actions": ["notify", { "set_tweak": "highlight" }] });
    put_rule(&bob, "content", "pizza", keyword).await;
    put_rule(&dave, "room", &room, json!({ "actions": [] })).await;
    FiveMembers { room, alice, bob, carol, dave, erin }
}

#[tokio::test]
async fn five_members_keyword_mention_and_muted_room() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let FiveMembers { room, alice, bob, carol, dave, erin } = five_members(&server).await;

        let plain = send(&alice, &room, "m.room.message", text("hello all")).await;
        let pizza = send(&alice, &room, "m.room.message", text("pizza tonight?")).await;
        let mention = json!({ "msgtype": "m.text", "body": "carol?", "m.mentions": { "user_ids": [carol.user_id] } });
        let mention = send(&alice, &room, "m.room.message", mention).await;

        assert_eq!(counts(&alice.sync("").await, &room), (0, 0), "{backend:?}: the sender");
        assert_eq!(counts(&bob.sync("").await, &room), (3, 1), "{backend:?}: bob's keyword highlights");
        assert_eq!(counts(&carol.sync("").await, &room), (3, 1), "{backend:?}: carol's mention highlights");
        assert_eq!(counts(&dave.sync("").await, &room), (0, 0), "{backend:?}: dave muted the room");
        assert_eq!(counts(&erin.sync("").await, &room), (3, 0), "{backend:?}: erin on the defaults");

        let expected = vec![mention.clone(), pizza.clone(), plain.clone()];
        assert_eq!(ids(&erin, "").await, expected, "{backend:?}: erin's notifications");
        assert_eq!(ids(&bob, "").await, expected, "{backend:?}: bob's notifications");
        assert_eq!(ids(&bob, "only=highlight").await, vec![pizza.clone()], "{backend:?}: bob's highlight");
        assert_eq!(ids(&carol, "only=highlight").await, vec![mention.clone()], "{backend:?}: carol's highlight");
        assert!(ids(&dave, "").await.is_empty(), "{backend:?}: dave has no notifications");
        assert!(ids(&alice, "").await.is_empty(), "{backend:?}: alice has no notifications");
        assert!(ids(&erin, "only=highlight").await.is_empty(), "{backend:?}: erin has no highlight");

        // The actions of each row are the member's own.
        let (_, page) = bob.get("/_matrix/client/v3/notifications").await;
        let actions: Vec<bool> =
            page["notifications"].as_array().unwrap().iter().map(|n| has_highlight(&n["actions"])).collect();
        assert_eq!(actions, [false, true, false], "{backend:?}: {page}");

        // A profile change keeps the counts of the rows shared before it.
        let path = format!("/_matrix/client/v3/profile/{}/displayname", encode(&erin.user_id));
        let (status, body) = erin.put(&path, json!({ "displayname": "Erin E." })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&erin.sync("").await, &room), (3, 0), "{backend:?}: erin after renaming");

        // A member who joins later gets nothing of the earlier messages.
        let frank = server.register("frank").await;
        frank.join(&room).await;
        assert_eq!(counts(&frank.sync("").await, &room), (0, 0), "{backend:?}: frank joined later");
        let after = send(&alice, &room, "m.room.message", text("welcome")).await;
        assert_eq!(counts(&frank.sync("").await, &room), (1, 0), "{backend:?}: frank's first message");
        assert_eq!(ids(&frank, "").await, vec![after.clone()], "{backend:?}: frank's notifications");

        // Receipts clear each member's counts on their own.
        receipt(&bob, &room, &pizza, json!({})).await;
        assert_eq!(counts(&bob.sync("").await, &room), (2, 0), "{backend:?}: bob read up to the keyword");
        assert_eq!(counts(&erin.sync("").await, &room), (4, 0), "{backend:?}: erin's counts unchanged");
        receipt(&carol, &room, &after, json!({})).await;
        assert_eq!(counts(&carol.sync("").await, &room), (0, 0), "{backend:?}: carol read everything");
        let read: Vec<bool> = notifications(&carol, "").await.0.into_iter().map(|(_, read)| read).collect();
        assert_eq!(read, [true, true, true, true], "{backend:?}: carol's notifications are read");
        server.stop().await;
    }
}

#[tokio::test]
async fn threads_with_shared_and_own_rows() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let FiveMembers { room, alice, bob, erin, .. } = five_members(&server).await;

        let root = send(&alice, &room, "m.room.message", text("root")).await;
        send(&alice, &room, "m.room.message", in_thread(&root, "pizza in the thread")).await;
        let last_in_thread = send(&alice, &room, "m.room.message", in_thread(&root, "plain in the thread")).await;
        let main = send(&alice, &room, "m.room.message", text("main")).await;

        let filter = encode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
        for (member, highlights) in [(&bob, 1), (&erin, 0)] {
            let sync = member.sync(&format!("filter={filter}")).await;
            assert_eq!(counts(&sync, &room), (2, 0), "{backend:?}: {} main timeline", member.user_id);
            let thread = &sync["rooms"]["join"][&room]["unread_thread_notifications"][&root];
            assert_eq!(thread["notification_count"], 2, "{backend:?}: {} thread: {sync}", member.user_id);
            assert_eq!(thread["highlight_count"], highlights, "{backend:?}: {} thread: {sync}", member.user_id);
        }

        // A threaded receipt clears its thread only; a main one the main timeline.
        receipt(&bob, &room, &last_in_thread, json!({ "thread_id": root })).await;
        let sync = bob.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (2, 0), "{backend:?}: bob's main timeline unchanged");
        assert!(sync["rooms"]["join"][&room].get("unread_thread_notifications").is_none(), "{backend:?}: {sync}");
        receipt(&erin, &room, &main, json!({ "thread_id": "main" })).await;
        let sync = erin.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (0, 0), "{backend:?}: erin read the main timeline");
        let thread = &sync["rooms"]["join"][&room]["unread_thread_notifications"][&root];
        assert_eq!(thread["notification_count"], 2, "{backend:?}: erin's thread unchanged: {sync}");
        assert_eq!(counts(&erin.sync("").await, &room), (2, 0), "{backend:?}: erin's total is the thread");
        server.stop().await;
    }
}

#[tokio::test]
async fn notifications_pages_mix_shared_and_own_rows() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let FiveMembers { room, alice, bob, .. } = five_members(&server).await;

        // Even messages match bob's keyword (a row of his own), odd ones are shared.
        let mut sent = Vec::new();
        for i in 0..7 {
            let body = if i % 2 == 0 { format!("pizza {i}") } else { format!("message {i}") };
            sent.push(send(&alice, &room, "m.room.message", text(&body)).await);
        }
        receipt(&bob, &room, &sent[2], json!({})).await;

        let mut seen = Vec::new();
        let mut query = "limit=3".to_owned();
        let mut pages = 0;
        loop {
            let (entries, next) = notifications(&bob, &query).await;
            assert!(entries.len() <= 3, "{backend:?}: page size: {entries:?}");
            seen.extend(entries);
            pages += 1;
            match next {
                Some(token) => query = format!("limit=3&from={}", encode(&token)),
                None => break,
            }
            assert!(pages < 10, "{backend:?}: pagination does not end");
        }
        let expected: Vec<(String, bool)> = sent.iter().enumerate().rev().map(|(i, id)| (id.clone(), i <= 2)).collect();
        assert_eq!(seen, expected, "{backend:?}: every message once, newest first, read up to the receipt");

        let highlights = ids(&bob, "only=highlight&limit=2").await;
        assert_eq!(highlights, vec![sent[6].clone(), sent[4].clone()], "{backend:?}: keyword messages only");
        server.stop().await;
    }
}

#[tokio::test]
async fn own_message_reads_only_its_thread() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let carol = server.register("carol").await;
        carol.join(&room).await;

        let root = send(&alice, &room, "m.room.message", text("root")).await;
        send(&alice, &room, "m.room.message", in_thread(&root, "in the thread")).await;
        send(&alice, &room, "m.room.message", text("main one")).await;
        send(&carol, &room, "m.room.message", text("main two")).await;
        let filter = encode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
        let sync = bob.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (3, 0), "{backend:?}: before bob replies: {sync}");

        // Bob answers in the main timeline: the main timeline is read, the thread is not.
        let reply = send(&bob, &room, "m.room.message", text("reply")).await;
        let sync = bob.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (0, 0), "{backend:?}: main read by the reply: {sync}");
        let thread = &sync["rooms"]["join"][&room]["unread_thread_notifications"][&root];
        assert_eq!(thread["notification_count"], 1, "{backend:?}: the thread stays unread: {sync}");
        assert_eq!(counts(&bob.sync("").await, &room), (1, 0), "{backend:?}: one unread in total");

        // Messages after the reply count again; a reply in the thread reads the thread.
        send(&alice, &room, "m.room.message", text("after the reply")).await;
        send(&bob, &room, "m.room.message", in_thread(&root, "thread reply")).await;
        let sync = bob.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (1, 0), "{backend:?}: the newer main message: {sync}");
        assert!(sync["rooms"]["join"][&room].get("unread_thread_notifications").is_none(), "{backend:?}: {sync}");

        // The reply concerns nobody else's counts, and bob's own messages never count for him.
        // Carol's own message read the main timeline before it, not the thread.
        assert_eq!(counts(&carol.sync("").await, &room), (4, 0), "{backend:?}: carol's counts");
        let (entries, _) = notifications(&bob, "").await;
        assert!(entries.iter().all(|(id, _)| *id != reply), "{backend:?}: own message listed: {entries:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn pruning_removes_read_and_old_actions() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| config.push.prune_interval_secs = 1).await;
        let FiveMembers { room, alice, bob, carol, dave, erin } = five_members(&server).await;
        let first = send(&alice, &room, "m.room.message", text("pizza first")).await;
        let second = send(&alice, &room, "m.room.message", text("second")).await;
        let third = send(&alice, &room, "m.room.message", text("third")).await;

        // Everyone but erin reads up to the second message: nothing goes yet.
        for member in [&alice, &bob, &carol, &dave] {
            receipt(member, &room, &second, json!({})).await;
        }
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(ids(&erin, "").await, vec![third.clone(), second.clone(), first.clone()], "{backend:?}: kept");
        assert_eq!(ids(&bob, "").await.len(), 3, "{backend:?}: bob's kept while erin has not read");

        // Once erin reads too, the rows up to the second message go for everyone.
        receipt(&erin, &room, &second, json!({})).await;
        let mut remaining = Vec::new();
        for _ in 0..50 {
            remaining = ids(&bob, "").await;
            if remaining.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(remaining, vec![third.clone()], "{backend:?}: bob's read rows pruned");
        assert_eq!(ids(&erin, "").await, vec![third.clone()], "{backend:?}: erin's read rows pruned");
        assert_eq!(counts(&erin.sync("").await, &room), (1, 0), "{backend:?}: the unread one still counts");
        server.stop().await;

        // Rows older than the retention go, read or not.
        let server = TestServer::start_with(&backend, |config| {
            config.push.prune_interval_secs = 1;
            config.push.action_retention_secs = 1;
        })
        .await;
        let FiveMembers { room, alice, erin, .. } = five_members(&server).await;
        send(&alice, &room, "m.room.message", text("soon too old")).await;
        assert_eq!(counts(&erin.sync("").await, &room), (1, 0), "{backend:?}: counted at first");
        let mut remaining = vec![String::new()];
        for _ in 0..50 {
            remaining = ids(&erin, "").await;
            if remaining.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(remaining.is_empty(), "{backend:?}: old rows pruned: {remaining:?}");
        assert_eq!(counts(&erin.sync("").await, &room), (0, 0), "{backend:?}: nothing counts after pruning");
        server.stop().await;
    }
}
