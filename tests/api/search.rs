//! Server-side search: `POST /search` over room events, by word prefix, in
//! rank or recent order, with room filters, keys, pagination, context,
//! groups and state, and only what the searcher may see.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

async fn search(client: &Client, criteria: Value) -> Value {
    let (status, body) =
        client.post("/_matrix/client/v3/search", json!({ "search_categories": { "room_events": criteria } })).await;
    assert_eq!(status, StatusCode::OK, "search {criteria}: {body}");
    body["search_categories"]["room_events"].clone()
}

fn result_texts(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let content = &r["result"]["content"];
            content["body"].as_str().or(content["name"].as_str()).or(content["topic"].as_str()).unwrap_or("").to_owned()
        })
        .collect()
}

async fn send_state(client: &Client, room_id: &str, kind: &str, content: Value) {
    let (status, body) =
        client.put(&format!("/_matrix/client/v3/rooms/{}/state/{kind}", encode(room_id)), content).await;
    assert_eq!(status, StatusCode::OK, "state {kind}: {body}");
}

#[tokio::test]
async fn search_by_words_in_joined_rooms() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let shared = alice.create_room(json!({ "preset": "public_chat", "name": "Planning room" })).await;
        bob.join(&shared).await;
        let private = alice.create_room(json!({})).await;
        alice.send_text(&shared, "Quarterly planning meeting tomorrow").await;
        bob.send_text(&shared, "Lunch plans?").await;
        alice.send_text(&shared, "The meeting moved to Friday").await;
        alice.send_text(&private, "Meeting notes, private").await;

        // Prefixes match, all words must match, and only joined rooms count.
        let found = search(&bob, json!({ "search_term": "meet", "order_by": "recent" })).await;
        assert_eq!(result_texts(&found), vec!["The meeting moved to Friday", "Quarterly planning meeting tomorrow"]);
        assert_eq!(found["count"], 2);
        assert_eq!(found["highlights"], json!(["meet"]));
        assert_eq!(found["results"][0]["result"]["room_id"], shared.as_str());
        let found = search(&bob, json!({ "search_term": "MEETING moved!" })).await;
        assert_eq!(result_texts(&found), vec!["The meeting moved to Friday"]);
        let found = search(&alice, json!({ "search_term": "meeting", "order_by": "recent" })).await;
        assert_eq!(result_texts(&found).len(), 3, "{found}");
        assert_eq!(result_texts(&found)[0], "Meeting notes, private");

        // Room filter and keys.
        let found = search(&alice, json!({ "search_term": "meeting", "filter": { "rooms": [shared] } })).await;
        assert_eq!(result_texts(&found).len(), 2, "{found}");
        let found = search(&alice, json!({ "search_term": "planning", "keys": ["content.name"] })).await;
        assert_eq!(result_texts(&found), vec!["Planning room"]);
        assert_eq!(found["results"][0]["result"]["type"], "m.room.name");

        // A redacted message is no longer found.
        let lunch = search(&bob, json!({ "search_term": "lunch" })).await;
        let lunch_id = lunch["results"][0]["result"]["event_id"].as_str().expect("event id").to_owned();
        let (status, body) = bob
            .put(&format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", encode(&shared), encode(&lunch_id)), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "redact: {body}");
        let found = search(&bob, json!({ "search_term": "lunch" })).await;
        assert_eq!(result_texts(&found), Vec::<String>::new());
        assert_eq!(found["count"], 0);

        // Bad criteria name the field.
        for (criteria, field) in [
            (json!({ "search_term": "x", "order_by": "best" }), "order_by"),
            (json!({ "search_term": "x", "keys": ["content.url"] }), "keys"),
            (json!({ "search_term": "x", "groupings": { "group_by": [{ "key": "type" }] } }), "group_by"),
        ] {
            let response = alice
                .post("/_matrix/client/v3/search", json!({ "search_categories": { "room_events": criteria } }))
                .await;
            assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
            assert!(response.1["error"].as_str().unwrap_or_default().contains(field), "{}", response.1);
        }
        let response =
            alice.post("/_matrix/client/v3/search", json!({ "search_categories": { "room_events": {} } })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
}

#[tokio::test]
async fn search_respects_history_visibility() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        send_state(&alice, &room, "m.room.history_visibility", json!({ "history_visibility": "joined" })).await;
        alice.send_text(&room, "budget before carol").await;
        carol.join(&room).await;
        alice.send_text(&room, "budget after carol").await;

        let found = search(&carol, json!({ "search_term": "budget" })).await;
        assert_eq!(result_texts(&found), vec!["budget after carol"]);
        let found = search(&alice, json!({ "search_term": "budget" })).await;
        assert_eq!(result_texts(&found).len(), 2, "{found}");
    }
}

#[tokio::test]
async fn search_pages_with_context_groups_and_state() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let (status, body) = alice
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id)),
                json!({ "displayname": "Alice A." }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "displayname: {body}");
        let room = alice.create_room(json!({ "name": "Stock list" })).await;
        for i in 1..=13 {
            alice.send_text(&room, &format!("item {i}")).await;
        }

        let criteria = json!({ "search_term": "item", "order_by": "recent", "filter": { "limit": 5 } });
        let mut texts = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let path = match &next {
                Some(token) => format!("/_matrix/client/v3/search?next_batch={token}"),
                None => "/_matrix/client/v3/search".to_owned(),
            };
            let (status, body) = alice.post(&path, json!({ "search_categories": { "room_events": criteria } })).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let found = &body["search_categories"]["room_events"];
            assert_eq!(found["count"], 13);
            texts.extend(result_texts(found));
            match found["next_batch"].as_str() {
                Some(token) => next = Some(token.to_owned()),
                None => break,
            }
        }
        let expected: Vec<String> = (1..=13).rev().map(|i| format!("item {i}")).collect();
        assert_eq!(texts, expected);

        let found = search(
            &alice,
            json!({
                "search_term": "item 7",
                "event_context": { "before_limit": 1, "after_limit": 2, "include_profile": true },
                "include_state": true,
                "groupings": { "group_by": [{ "key": "room_id" }] },
            }),
        )
        .await;
        assert_eq!(result_texts(&found), vec!["item 7"]);
        let context = &found["results"][0]["context"];
        assert_eq!(context["events_before"][0]["content"]["body"], "item 6", "{context}");
        let after: Vec<&str> = context["events_after"]
            .as_array()
            .expect("events_after")
            .iter()
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        assert_eq!(after, vec!["item 8", "item 9"]);
        assert_eq!(context["profile_info"][&alice.user_id]["displayname"], "Alice A.");
        assert!(context["start"].is_string(), "{context}");
        assert!(context["end"].is_string(), "{context}");
        let event_id = found["results"][0]["result"]["event_id"].clone();
        assert_eq!(found["groups"]["room_id"][&room], json!({ "results": [event_id], "order": 0 }));
        let state = found["state"][&room].as_array().expect("state of the result's room");
        assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Stock list"), "{state:?}");

        // Messages stored before the index existed are found once the
        // migration has filled it.
        let server = server
            .restart_with_database(|pool| async move {
                sqlx::query("DROP TABLE event_search").execute(&pool).await.expect("drop the index");
                sqlx::query("DELETE FROM schema_migrations WHERE version = 20")
                    .execute(&pool)
                    .await
                    .expect("forget the search migration");
            })
            .await;
        let alice = Client::new(&server.base, alice.token.clone());
        let found = search(&alice, json!({ "search_term": "item 12" })).await;
        assert_eq!(result_texts(&found), vec!["item 12"]);
        let found = search(&alice, json!({ "search_term": "stock", "keys": ["content.name"] })).await;
        assert_eq!(result_texts(&found), vec!["Stock list"]);
    }
}

#[tokio::test]
async fn search_index_follows_the_stream_across_restarts() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let mut alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;

        // Redacted at once, most likely before the index reaches it.
        let draft = alice.send_text(&room, "Draft figures, do not share").await;
        let (status, body) = alice
            .put(&format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", encode(&room), encode(&draft)), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "redact: {body}");
        for n in 0..30 {
            alice.send_text(&room, &format!("Budget line {n}")).await;
        }
        let found = search(&alice, json!({ "search_term": "draft" })).await;
        assert_eq!(found["count"], 0, "{found}");
        let found = search(&alice, json!({ "search_term": "budget", "order_by": "recent" })).await;
        assert_eq!(found["count"], 30, "{found}");
        assert_eq!(result_texts(&found)[0], "Budget line 29");

        // Messages sent just before a restart are found once after it.
        alice.send_text(&room, "Forecast for the next quarter").await;
        let server = server.restart().await;
        alice.base = server.base.clone();
        alice.send_text(&room, "Forecast revised").await;
        let found = search(&alice, json!({ "search_term": "forecast", "order_by": "recent" })).await;
        assert_eq!(result_texts(&found), vec!["Forecast revised", "Forecast for the next quarter"]);
        let found = search(&alice, json!({ "search_term": "budget" })).await;
        assert_eq!(found["count"], 30, "{found}");
    }
}
