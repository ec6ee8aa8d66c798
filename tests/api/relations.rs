//! Event relationships: `/relations` with its filters, directions and
//! recursion, `/threads`, and the bundled aggregations (`m.replace`,
//! `m.thread`, `m.reference`) that `/event`, `/messages`, `/context` and
//! limited `/sync` timelines carry.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode, timeline};

fn room_path(version: &str, room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/{version}/rooms/{}/{rest}", encode(room_id))
}

/// Sends an event of `kind` with `content` and returns its id.
async fn send(client: &Client, room_id: &str, kind: &str, content: Value) -> String {
    let txn = lattice::rooms::random_localpart(16);
    let (status, body) = client.put(&room_path("v3", room_id, &format!("send/{kind}/{txn}")), content).await;
    assert_eq!(status, StatusCode::OK, "send {kind}: {body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

fn edit(original: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    })
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                          "m.in_reply_to": { "event_id": root } },
    })
}

fn relation(kind: &str, parent: &str) -> Value {
    json!({ "m.relates_to": { "rel_type": kind, "event_id": parent, "key": "👍" } })
}

async fn event(client: &Client, room_id: &str, event_id: &str) -> Value {
    let (status, body) = client.get(&room_path("v3", room_id, &format!("event/{}", encode(event_id)))).await;
    assert_eq!(status, StatusCode::OK, "event {event_id}: {body}");
    body
}

async fn relations(client: &Client, room_id: &str, rest: &str) -> Value {
    let (status, body) = client.get(&room_path("v1", room_id, &format!("relations/{rest}"))).await;
    assert_eq!(status, StatusCode::OK, "relations/{rest}: {body}");
    body
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk.as_array().expect("chunk").iter().map(|e| e["event_id"].as_str().expect("event_id").to_owned()).collect()
}

/// Distinct `origin_server_ts` values, so that "the most recent edit" is not a tie.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

#[tokio::test]
async fn latest_valid_edit_is_bundled() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let original = alice.send_text(&room, "I like cake").await;

        let first = send(&alice, &room, "m.room.message", edit(&original, "I like chocolate cake")).await;
        next_millisecond().await;
        let second = send(&alice, &room, "m.room.message", edit(&original, "I like lemon cake")).await;
        next_millisecond().await;
        // Newer, but invalid: another sender, and an edit without m.new_content.
        send(&bob, &room, "m.room.message", edit(&original, "bob rewrites it")).await;
        let mut no_new_content = edit(&original, "no new content");
        no_new_content.as_object_mut().expect("object").remove("m.new_content");
        send(&alice, &room, "m.room.message", no_new_content).await;

        let served = event(&alice, &room, &original).await;
        let replace = &served["unsigned"]["m.relations"]["m.replace"];
        assert_eq!(replace["event_id"], second.as_str(), "{served}");
        assert_eq!(replace["content"]["m.new_content"]["body"], "I like lemon cake");
        assert_eq!(replace["sender"], alice.user_id.as_str());
        assert_eq!(served["content"]["body"], "I like cake", "the original content stays");

        // The same bundle in /messages and /context.
        let (status, page) = alice.get(&room_path("v3", &room, "messages?dir=b&limit=50")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let listed = page["chunk"].as_array().expect("chunk").iter().find(|e| e["event_id"] == original.as_str());
        let listed = listed.expect("the original in /messages");
        assert_eq!(listed["unsigned"]["m.relations"]["m.replace"]["event_id"], second.as_str());
        let (status, context) =
            alice.get(&room_path("v3", &room, &format!("context/{}?limit=2", encode(&original)))).await;
        assert_eq!(status, StatusCode::OK, "{context}");
        assert_eq!(context["event"]["unsigned"]["m.relations"]["m.replace"]["event_id"], second.as_str());

        // An edit is not itself edited through the aggregation.
        let edit_of_edit = event(&alice, &room, &second).await;
        assert!(edit_of_edit["unsigned"].get("m.relations").is_none(), "{edit_of_edit}");

        // Redacting the latest edit falls back to the one before it.
        let (status, body) = alice
            .put(&room_path("v3", &room, &format!("redact/{}/r1", encode(&second))), json!({ "reason": "typo" }))
            .await;
        assert_eq!(status, StatusCode::OK, "redact: {body}");
        let served = event(&alice, &room, &original).await;
        assert_eq!(served["unsigned"]["m.relations"]["m.replace"]["event_id"], first.as_str(), "{served}");
    }
}

#[tokio::test]
async fn thread_summary_and_thread_list() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;

        let first_root = alice.send_text(&room, "first topic").await;
        send(&bob, &room, "m.room.message", thread_reply(&first_root, "bob on the first")).await;
        let first_latest = send(&bob, &room, "m.room.message", thread_reply(&first_root, "bob again")).await;
        let second_root = carol.send_text(&room, "second topic").await;
        let second_latest = send(&carol, &room, "m.room.message", thread_reply(&second_root, "carol answers")).await;

        let seen_by_alice = event(&alice, &room, &first_root).await;
        let thread = &seen_by_alice["unsigned"]["m.relations"]["m.thread"];
        assert_eq!(thread["count"], 2, "{seen_by_alice}");
        assert_eq!(thread["latest_event"]["event_id"], first_latest.as_str());
        assert_eq!(thread["latest_event"]["content"]["body"], "bob again");
        assert_eq!(thread["current_user_participated"], true, "alice started the thread");
        let seen_by_carol = event(&carol, &room, &first_root).await;
        assert_eq!(seen_by_carol["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], false);

        // Most recently active first, one per page.
        let (status, page) = alice.get(&room_path("v1", &room, "threads?limit=1")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page["chunk"]), vec![second_root.clone()]);
        assert_eq!(page["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], second_latest);
        let next = page["next_batch"].as_str().expect("next_batch after a full page");
        let (status, page) = alice.get(&room_path("v1", &room, &format!("threads?limit=1&from={next}"))).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page["chunk"]), vec![first_root.clone()]);
        let (status, page) = alice.get(&room_path("v1", &room, &format!("threads?limit=5&from={next}"))).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.get("next_batch").is_none(), "no more threads: {page}");

        // Bob took part only in the first thread.
        let (status, page) = bob.get(&room_path("v1", &room, "threads?include=participated")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page["chunk"]), vec![first_root.clone()]);

        // A thread reply edited: its edit is bundled inside latest_event.
        let fix = send(&carol, &room, "m.room.message", edit(&second_latest, "carol answers, fixed")).await;
        let root = event(&alice, &room, &second_root).await;
        let latest = &root["unsigned"]["m.relations"]["m.thread"]["latest_event"];
        assert_eq!(latest["unsigned"]["m.relations"]["m.replace"]["event_id"], fix.as_str(), "{root}");

        let response = alice.get(&room_path("v1", &room, "threads?include=mine")).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = alice.get(&room_path("v1", &room, "threads?limit=0")).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    }
}

#[tokio::test]
async fn relations_filter_page_and_recurse() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let outsider = server.register("outsider").await;
        let room = alice.create_room(json!({})).await;
        let parent = alice.send_text(&room, "parent").await;

        let mut reactions = Vec::new();
        for _ in 0..5 {
            reactions.push(send(&alice, &room, "m.reaction", relation("m.annotation", &parent)).await);
        }
        let reference = send(&alice, &room, "m.room.message", {
            let mut content = relation("m.reference", &parent);
            content["msgtype"] = json!("m.text");
            content["body"] = json!("see above");
            content
        })
        .await;
        let grandchild = send(&alice, &room, "m.reaction", relation("m.annotation", &reference)).await;

        // Everything directly below the parent, newest first.
        let all = relations(&alice, &room, &encode(&parent)).await;
        let mut expected: Vec<String> = reactions.iter().rev().cloned().collect();
        expected.insert(0, reference.clone());
        assert_eq!(ids(&all["chunk"]), expected);
        assert!(all.get("next_batch").is_none(), "{all}");
        assert!(all.get("recursion_depth").is_none(), "no recursion asked: {all}");

        // Annotations only, two per page, backwards then forwards.
        let path = format!("{}/m.annotation?limit=2", encode(&parent));
        let page = relations(&alice, &room, &path).await;
        assert_eq!(ids(&page["chunk"]), vec![reactions[4].clone(), reactions[3].clone()]);
        let mut collected = ids(&page["chunk"]);
        let mut next = page["next_batch"].as_str().map(str::to_owned);
        while let Some(token) = next {
            let page = relations(&alice, &room, &format!("{path}&from={token}")).await;
            assert_eq!(page["prev_batch"], token.as_str());
            collected.extend(ids(&page["chunk"]));
            next = page["next_batch"].as_str().map(str::to_owned);
        }
        assert_eq!(collected, reactions.iter().rev().cloned().collect::<Vec<_>>());
        let forwards = relations(&alice, &room, &format!("{}/m.annotation?dir=f", encode(&parent))).await;
        assert_eq!(ids(&forwards["chunk"]), reactions);

        // Relation type and event type together.
        let typed = relations(&alice, &room, &format!("{}/m.reference/m.room.message", encode(&parent))).await;
        assert_eq!(ids(&typed["chunk"]), vec![reference.clone()]);
        assert_eq!(typed["chunk"][0]["content"]["body"], "see above");
        let none = relations(&alice, &room, &format!("{}/m.reference/m.reaction", encode(&parent))).await;
        assert_eq!(ids(&none["chunk"]), Vec::<String>::new());

        // Recursion reaches the reaction to the reference.
        let deep = relations(&alice, &room, &format!("{}?recurse=true", encode(&parent))).await;
        assert_eq!(ids(&deep["chunk"])[0], grandchild);
        assert_eq!(deep["chunk"].as_array().expect("chunk").len(), 7);
        assert_eq!(deep["recursion_depth"], 3);

        // The parent bundles its reference.
        let served = event(&alice, &room, &parent).await;
        assert_eq!(served["unsigned"]["m.relations"]["m.reference"], json!({ "chunk": [{ "event_id": reference }] }));

        // Bad requests.
        let response = alice.get(&room_path("v1", &room, &format!("relations/{}?dir=up", encode(&parent)))).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = alice.get(&room_path("v1", &room, "relations/%24missing")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = outsider.get(&room_path("v1", &room, &format!("relations/{}", encode(&parent)))).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn limited_sync_bundles_and_migration_fills() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        let original = alice.send_text(&room, "draft").await;
        let fix = send(&alice, &room, "m.room.message", edit(&original, "final")).await;

        let filter = encode(&json!({ "room": { "timeline": { "limit": 2 } } }).to_string());
        let sync = alice.sync(&format!("filter={filter}")).await;
        assert_eq!(sync["rooms"]["join"][&room]["timeline"]["limited"], true, "{sync}");
        let events = timeline(&sync, &room);
        let listed = events.iter().find(|e| e["event_id"] == original.as_str()).expect("the original in sync");
        assert_eq!(listed["unsigned"]["m.relations"]["m.replace"]["event_id"], fix.as_str(), "{sync}");

        // Events stored before the relations table existed are found once
        // the migration has filled it.
        let server = server
            .restart_with_database(|pool| async move {
                sqlx::query("DELETE FROM event_relations").execute(&pool).await.expect("empty the relations");
                sqlx::query("DELETE FROM schema_migrations WHERE version = 19")
                    .execute(&pool)
                    .await
                    .expect("forget the relations migration");
                sqlx::query("DROP TABLE event_relations").execute(&pool).await.expect("drop the relations table");
            })
            .await;
        let alice = Client::new(&server.base, alice.token.clone());
        let served = event(&alice, &room, &original).await;
        assert_eq!(served["unsigned"]["m.relations"]["m.replace"]["event_id"], fix.as_str(), "{served}");
    }
}
