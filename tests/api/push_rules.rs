//! Push rules: the rule endpoints, evaluation of the rules for new events
//! (a table of cases), unread counts in `/sync` and their clearing by read
//! receipts, and `GET /notifications`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

pub(crate) fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

pub(crate) async fn send(client: &Client, room_id: &str, kind: &str, content: Value) -> String {
    let txn = lattice::rooms::random_localpart(16);
    let (status, body) = client.put(&room_path(room_id, &format!("send/{kind}/{txn}")), content).await;
    assert_eq!(status, StatusCode::OK, "send {kind}: {body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

/// Finds the notification for `event_id` in the user's `/notifications`.
async fn notification_for(client: &Client, event_id: &str) -> Option<Value> {
    let (status, body) = client.get("/_matrix/client/v3/notifications?limit=100").await;
    assert_eq!(status, StatusCode::OK, "notifications: {body}");
    body["notifications"].as_array()?.iter().find(|n| n["event"]["event_id"] == event_id).cloned()
}

pub(crate) fn has_highlight(actions: &Value) -> bool {
    actions.as_array().is_some_and(|list| {
        list.iter().any(|a| a["set_tweak"] == "highlight" && a.get("value").is_none_or(|v| v == true))
    })
}

fn has_sound(actions: &Value) -> bool {
    actions.as_array().is_some_and(|list| list.iter().any(|a| a["set_tweak"] == "sound"))
}

pub(crate) fn counts(sync: &Value, room_id: &str) -> (i64, i64) {
    let unread = &sync["rooms"]["join"][room_id]["unread_notifications"];
    (unread["notification_count"].as_i64().unwrap_or(-1), unread["highlight_count"].as_i64().unwrap_or(-1))
}

pub(crate) async fn put_rule(client: &Client, kind: &str, rule_id: &str, body: Value) {
    let path = format!("/_matrix/client/v3/pushrules/global/{kind}/{}", encode(rule_id));
    let (status, response) = client.put(&path, body).await;
    assert_eq!(status, StatusCode::OK, "put rule {kind}/{rule_id}: {response}");
}

/// What a user's notification for an event looks like.
#[derive(Debug, PartialEq)]
enum Expect {
    Nothing,
    Notify,
    NotifyWithSound,
    Highlight,
}

async fn outcome(client: &Client, event_id: &str) -> Expect {
    match notification_for(client, event_id).await {
        None => Expect::Nothing,
        Some(n) if has_highlight(&n["actions"]) => Expect::Highlight,
        Some(n) if has_sound(&n["actions"]) => Expect::NotifyWithSound,
        Some(_) => Expect::Notify,
    }
}

#[tokio::test]
async fn default_rules_listed() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let bob = server.register("bob").await;

        let (status, body) = bob.get("/_matrix/client/v3/pushrules/").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let overrides: Vec<&str> =
            body["global"]["override"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
        assert_eq!(overrides[0], ".m.rule.master", "{backend:?}: master rule comes first");
        assert!(overrides.contains(&".m.rule.is_user_mention"), "{backend:?}: {overrides:?}");
        assert!(overrides.contains(&".m.rule.is_room_mention"), "{backend:?}: {overrides:?}");
        let underrides: Vec<&str> =
            body["global"]["underride"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
        assert!(underrides.contains(&".m.rule.room_one_to_one"), "{backend:?}: {underrides:?}");
        assert!(underrides.contains(&".m.rule.encrypted"), "{backend:?}: {underrides:?}");

        let sync = bob.sync("").await;
        let rules = sync["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.push_rules")
            .expect("m.push_rules in the initial sync");
        assert_eq!(rules["content"], body, "{backend:?}: sync shows the same rules");
        server.stop().await;
    }
}

#[tokio::test]
async fn rule_endpoints() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let bob = server.register("bob").await;
        let base = "/_matrix/client/v3/pushrules/global";

        put_rule(&bob, "content", "lunch", json!({ "pattern": "lunch", "actions": ["notify"] })).await;
        put_rule(&bob, "content", "coffee", json!({ "pattern": "coffee", "actions": ["notify"] })).await;
        let (status, rule) = bob.get(&format!("{base}/content/lunch")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {rule}");
        assert_eq!(rule["pattern"], "lunch", "{backend:?}");
        assert_eq!(rule["enabled"], true, "{backend:?}");
        assert_eq!(rule["default"], false, "{backend:?}");

        // A new rule without before/after comes first among its kind.
        let (_, global) = bob.get(&format!("{base}/")).await;
        assert_eq!(global["content"][0]["rule_id"], "coffee", "{backend:?}: {global}");
        put_rule(&bob, "content", "tea", json!({ "pattern": "tea", "actions": [] })).await;
        let (status, body) =
            bob.put(&format!("{base}/content/tea?after=lunch"), json!({ "pattern": "tea", "actions": [] })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, global) = bob.get(&format!("{base}/")).await;
        let order: Vec<&str> =
            global["content"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
        assert_eq!(order, ["coffee", "lunch", "tea"], "{backend:?}");

        let (status, body) = bob.put(&format!("{base}/content/lunch/enabled"), json!({ "enabled": false })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, enabled) = bob.get(&format!("{base}/content/lunch/enabled")).await;
        assert_eq!(enabled, json!({ "enabled": false }), "{backend:?}");

        let actions = json!(["notify", { "set_tweak": "sound", "value": "default" }]);
        let (status, body) = bob.put(&format!("{base}/content/lunch/actions"), json!({ "actions": actions })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, got) = bob.get(&format!("{base}/content/lunch/actions")).await;
        assert_eq!(got, json!({ "actions": actions }), "{backend:?}");

        // Server-default rules can be switched off but not deleted.
        let (status, body) =
            bob.put(&format!("{base}/override/.m.rule.master/enabled"), json!({ "enabled": true })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, master) = bob.get(&format!("{base}/override/.m.rule.master")).await;
        assert_eq!(master["enabled"], true, "{backend:?}: {master}");
        assert_eq!(master["default"], true, "{backend:?}: {master}");
        let response = bob.delete(&format!("{base}/override/.m.rule.master"), json!({})).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        let (status, body) = bob.delete(&format!("{base}/content/coffee"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let response = bob.get(&format!("{base}/content/coffee")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Bad input.
        let response = bob.put(&format!("{base}/content/nopattern"), json!({ "actions": [] })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let response = bob.put(&format!("{base}/room/not-a-room"), json!({ "actions": [] })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = bob.put(&format!("{base}/content/.mine"), json!({ "pattern": "x", "actions": [] })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response =
            bob.put(&format!("{base}/content/x?before=missing"), json!({ "pattern": "x", "actions": [] })).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = bob.get(&format!("{base}/sideways/x")).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = bob.get("/_matrix/client/v3/pushrules/device/content/lunch").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        // Clients see changes as m.push_rules account data.
        let sync = bob.sync("").await;
        let rules =
            sync["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules").unwrap();
        assert_eq!(rules["content"]["global"]["content"][0]["rule_id"], "lunch", "{backend:?}: {rules}");
        server.stop().await;
    }
}

#[tokio::test]
async fn evaluation_cases() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| c.policy.name = "open".into()).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let (status, body) = bob
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob.user_id)),
                json!({ "displayname": "Bobby" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        // A group room (three members) and a direct chat (two members).
        let group = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&group).await;
        carol.join(&group).await;
        let direct = alice.create_room(json!({ "preset": "public_chat", "is_direct": true })).await;
        bob.join(&direct).await;
        let muted = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&muted).await;
        carol.join(&muted).await;

        put_rule(
            &bob,
            "content",
            "lunch",
            json!({ "pattern": "lunch", "actions": ["notify", { "set_tweak": "highlight" }] }),
        )
        .await;
        put_rule(
            &bob,
            "override",
            "display-name",
            json!({ "conditions": [{ "kind": "contains_display_name" }], "actions": ["notify", { "set_tweak": "highlight" }] }),
        )
        .await;
        put_rule(&bob, "room", &muted, json!({ "actions": [] })).await;

        let text = |body: &str| json!({ "msgtype": "m.text", "body": body });
        let cases: Vec<(&str, &str, &str, Value, Expect)> = vec![
            ("plain message in a group", &group, "m.room.message", text("hello all"), Expect::Notify),
            ("message in a direct chat", &direct, "m.room.message", text("hello you"), Expect::NotifyWithSound),
            (
                "user mention",
                &group,
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "hi", "m.mentions": { "user_ids": [bob.user_id] } }),
                Expect::Highlight,
            ),
            (
                "mention of another user",
                &group,
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "hi", "m.mentions": { "user_ids": [carol.user_id] } }),
                Expect::Notify,
            ),
            (
                "room mention by the creator",
                &group,
                "m.room.message",
                json!({ "msgtype": "m.text", "body": "all", "m.mentions": { "room": true } }),
                Expect::Highlight,
            ),
            ("keyword", &group, "m.room.message", text("lunch at noon?"), Expect::Highlight),
            ("keyword inside a word", &group, "m.room.message", text("lunchtime"), Expect::Notify),
            ("display name", &group, "m.room.message", text("ask Bobby"), Expect::Highlight),
            ("notice", &group, "m.room.message", json!({ "msgtype": "m.notice", "body": "bot" }), Expect::Nothing),
            ("muted room", &muted, "m.room.message", text("hello muted"), Expect::Nothing),
            (
                "encrypted in a group",
                &group,
                "m.room.encrypted",
                json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" }),
                Expect::Notify,
            ),
            (
                "encrypted in a direct chat",
                &direct,
                "m.room.encrypted",
                json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x" }),
                Expect::NotifyWithSound,
            ),
            (
                "reaction",
                &group,
                "m.reaction",
                json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$x", "key": "+1" } }),
                Expect::Nothing,
            ),
            ("custom event type", &group, "org.example.custom", json!({ "x": 1 }), Expect::Nothing),
        ];
        for (name, room, kind, content, expected) in cases {
            let event_id = send(&alice, room, kind, content).await;
            assert_eq!(outcome(&bob, &event_id).await, expected, "{backend:?}: {name}");
        }

        // Carol has the default rules: the shared evaluation still gives her
        // own mention a highlight and bob's mention a plain notification.
        let to_carol = send(
            &alice,
            &group,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "hi", "m.mentions": { "user_ids": [carol.user_id] } }),
        )
        .await;
        assert_eq!(outcome(&carol, &to_carol).await, Expect::Highlight, "{backend:?}: carol's mention");
        let to_bob = send(
            &alice,
            &group,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "hi", "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
        assert_eq!(outcome(&carol, &to_bob).await, Expect::Notify, "{backend:?}: bob's mention seen by carol");
        let own = send(&carol, &group, "m.room.message", text("mine")).await;
        assert_eq!(outcome(&carol, &own).await, Expect::Nothing, "{backend:?}: own message");

        // The master rule switches everything off.
        let (status, body) = bob
            .put("/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", json!({ "enabled": true }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let event_id = send(
            &alice,
            &group,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "x", "m.mentions": { "user_ids": [bob.user_id] } }),
        )
        .await;
        assert_eq!(outcome(&bob, &event_id).await, Expect::Nothing, "{backend:?}: master rule");

        // An invite notifies its target.
        let dave = server.register("dave").await;
        let (status, body) = alice.post(&room_path(&group, "invite"), json!({ "user_id": dave.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, notifications) = dave.get("/_matrix/client/v3/notifications").await;
        let first = &notifications["notifications"][0];
        assert_eq!(first["event"]["type"], "m.room.member", "{backend:?}: {notifications}");
        assert_eq!(first["event"]["state_key"], dave.user_id, "{backend:?}: {notifications}");
        server.stop().await;
    }
}

#[tokio::test]
async fn sync_counts_cleared_by_receipts() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| c.policy.name = "open".into()).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;

        let first = send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "one" })).await;
        let mention = json!({ "msgtype": "m.text", "body": "two", "m.mentions": { "user_ids": [bob.user_id] } });
        let second = send(&alice, &room, "m.room.message", mention).await;
        let sync = bob.sync("").await;
        assert_eq!(counts(&sync, &room), (2, 1), "{backend:?}: two unread, one highlight");

        // The count of a new event arrives in the same incremental sync as the event.
        let since = sync["next_batch"].as_str().unwrap().to_owned();
        let third = send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "three" })).await;
        let sync = bob.sync(&format!("since={}&timeout=0", encode(&since))).await;
        assert_eq!(counts(&sync, &room), (3, 1), "{backend:?}: the new event is counted");

        let (status, body) =
            bob.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&first))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&bob.sync("").await, &room), (2, 1), "{backend:?}: after reading the first");

        // A private receipt further on clears too.
        let (status, body) =
            bob.post(&room_path(&room, &format!("receipt/m.read.private/{}", encode(&second))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&bob.sync("").await, &room), (1, 0), "{backend:?}: after the private receipt");

        let (status, body) =
            bob.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&third))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&bob.sync("").await, &room), (0, 0), "{backend:?}: all read");

        // Sending a message marks everything before it as read.
        send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "four" })).await;
        assert_eq!(counts(&carol.sync("").await, &room), (4, 0), "{backend:?}: carol has read nothing");
        send(&carol, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "reply" })).await;
        assert_eq!(counts(&carol.sync("").await, &room), (0, 0), "{backend:?}: carol's own message");

        // A redacted message no longer counts.
        let redacted = send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "oops" })).await;
        assert_eq!(counts(&carol.sync("").await, &room), (1, 0), "{backend:?}: before the redaction");
        let (status, body) = alice.put(&room_path(&room, &format!("redact/{}/r1", encode(&redacted))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&carol.sync("").await, &room), (0, 0), "{backend:?}: after the redaction");
        server.stop().await;
    }
}

#[tokio::test]
async fn thread_counts_and_threaded_receipts() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| c.policy.name = "open".into()).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;

        let root = send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "root" })).await;
        let in_thread = |body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
        send(&alice, &room, "m.room.message", in_thread("t1")).await;
        let t2 = send(&alice, &room, "m.room.message", in_thread("t2")).await;
        let reaction = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": t2, "key": "👍" } });
        send(&alice, &room, "m.reaction", reaction).await;
        let main = send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "main" })).await;

        let filter = encode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
        let sync = bob.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (2, 0), "{backend:?}: the root and one main message");
        let threads = &sync["rooms"]["join"][&room]["unread_thread_notifications"];
        assert_eq!(threads[&root]["notification_count"], 2, "{backend:?}: {threads}");
        assert_eq!(threads[&root]["highlight_count"], 0, "{backend:?}: {threads}");
        assert_eq!(counts(&bob.sync("").await, &room), (4, 0), "{backend:?}: without the filter, one total");

        // A receipt in the thread clears only the thread.
        let (status, body) =
            bob.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&t2))), json!({ "thread_id": root })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let sync = bob.sync(&format!("filter={filter}")).await;
        assert_eq!(counts(&sync, &room), (2, 0), "{backend:?}: main timeline unchanged");
        assert!(
            sync["rooms"]["join"][&room].get("unread_thread_notifications").is_none(),
            "{backend:?}: thread read: {sync}"
        );

        // A main-timeline receipt clears the main timeline.
        let (status, body) = bob
            .post(&room_path(&room, &format!("receipt/m.read/{}", encode(&main))), json!({ "thread_id": "main" }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&bob.sync(&format!("filter={filter}")).await, &room), (0, 0), "{backend:?}: main read");

        // An unthreaded receipt clears every thread.
        assert_eq!(counts(&carol.sync("").await, &room), (4, 0), "{backend:?}: carol before reading");
        let (status, body) =
            carol.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&main))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(counts(&carol.sync("").await, &room), (0, 0), "{backend:?}: carol after an unthreaded receipt");
        server.stop().await;
    }
}

#[tokio::test]
async fn notifications_pagination() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |c| c.policy.name = "open".into()).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;

        let mut sent = Vec::new();
        for i in 0..5 {
            let mut content = json!({ "msgtype": "m.text", "body": format!("message {i}") });
            if i % 2 == 0 {
                content["m.mentions"] = json!({ "user_ids": [bob.user_id] });
            }
            sent.push(send(&alice, &room, "m.room.message", content).await);
        }
        let (status, body) =
            bob.post(&room_path(&room, &format!("receipt/m.read/{}", encode(&sent[1]))), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let (status, page) = bob.get("/_matrix/client/v3/notifications?limit=2").await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {page}");
        let ids: Vec<&str> = page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["event"]["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [sent[4].as_str(), sent[3].as_str()], "{backend:?}: newest first");
        let first = &page["notifications"][0];
        assert_eq!(first["room_id"], room, "{backend:?}");
        assert_eq!(first["read"], false, "{backend:?}");
        assert_eq!(first["event"]["content"]["body"], "message 4", "{backend:?}");
        assert!(first["ts"].as_i64().is_some(), "{backend:?}: {first}");

        let token = page["next_token"].as_str().expect("next_token").to_owned();
        let (_, rest) = bob.get(&format!("/_matrix/client/v3/notifications?limit=10&from={}", encode(&token))).await;
        let ids: Vec<&str> = rest["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["event"]["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [sent[2].as_str(), sent[1].as_str(), sent[0].as_str()], "{backend:?}: the rest");
        let read: Vec<bool> =
            rest["notifications"].as_array().unwrap().iter().map(|n| n["read"].as_bool().unwrap()).collect();
        assert_eq!(read, [false, true, true], "{backend:?}: read up to the receipt");
        assert!(rest.get("next_token").is_none(), "{backend:?}: last page: {rest}");

        let (_, highlights) = bob.get("/_matrix/client/v3/notifications?only=highlight").await;
        let ids: Vec<&str> = highlights["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["event"]["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [sent[4].as_str(), sent[2].as_str(), sent[0].as_str()], "{backend:?}: mentions only");

        let response = bob.get("/_matrix/client/v3/notifications?limit=zero").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = bob.get("/_matrix/client/v3/notifications?only=everything").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = bob.get("/_matrix/client/v3/notifications?from=abc").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn professional_limits_keep_notifications() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.policy.name = "professional".into();
            config.policy.daily_message_limit = 1;
            config.policy.weekly_connection_request_limit = 0;
        })
        .await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        // Alice's connection request to bob, accepted by bob.
        let (status, body) = alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({ "invite": [bob.user_id], "is_direct": true, "preset": "trusted_private_chat" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let room = body["room_id"].as_str().unwrap().to_owned();
        bob.join(&room).await;

        // Bob uses up his daily limit; alice's messages still notify him.
        send(&bob, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "hi" })).await;
        let txn = lattice::rooms::random_localpart(16);
        let over = bob
            .put(
                &room_path(&room, &format!("send/m.room.message/{txn}")),
                json!({ "msgtype": "m.text", "body": "again" }),
            )
            .await;
        assert_eq!(over.0, StatusCode::FORBIDDEN, "{backend:?}: bob is at his limit: {}", over.1);
        let event_id = send(&alice, &room, "m.room.message", json!({ "msgtype": "m.text", "body": "hello bob" })).await;
        assert_eq!(outcome(&bob, &event_id).await, Expect::NotifyWithSound, "{backend:?}: bob is notified");
        assert_eq!(counts(&bob.sync("").await, &room), (1, 0), "{backend:?}: bob's unread count");
        server.stop().await;
    }
}
