//! Filters: creating and reading them, and using a filter id with `/sync`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode, timeline};

fn filter_path(user_id: &str) -> String {
    format!("/_matrix/client/v3/user/{}/filter", encode(user_id))
}

async fn create_filter(client: &Client, filter: Value) -> String {
    let (status, body) = client.post(&filter_path(&client.user_id), filter).await;
    assert_eq!(status, StatusCode::OK, "create filter: {body}");
    body["filter_id"].as_str().expect("filter_id is a string").to_owned()
}

#[tokio::test]
async fn filter_create_and_get() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let definition = json!({
            "room": {
                "timeline": { "limit": 2, "types": ["m.room.message"] },
                "state": { "lazy_load_members": true },
            },
            "presence": { "not_types": ["*"] },
        });

        let first = create_filter(&alice, definition.clone()).await;
        let second = create_filter(&alice, json!({})).await;
        assert_ne!(first, second, "{backend:?}: each filter gets its own id");

        let (status, body) = alice.get(&format!("{}/{}", filter_path(&alice.user_id), first)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["room"]["timeline"]["limit"], 2, "{backend:?}: timeline limit round-trips: {body}");
        assert_eq!(body["room"]["timeline"]["types"], json!(["m.room.message"]), "{backend:?}: types round-trip");
        assert_eq!(body["room"]["state"]["lazy_load_members"], true, "{backend:?}: lazy_load_members round-trips");
        assert_eq!(body["presence"]["not_types"], json!(["*"]), "{backend:?}: presence filter round-trips");
        server.stop().await;
    }
}

#[tokio::test]
async fn filter_id_limits_sync_timeline() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        let mut sent = Vec::new();
        for n in 0..5 {
            sent.push(alice.send_text(&room, &format!("message {n}")).await);
        }
        let filter_id = create_filter(&alice, json!({ "room": { "timeline": { "limit": 2 } } })).await;

        let sync = alice.sync(&format!("filter={filter_id}")).await;
        let events = timeline(&sync, &room);
        let ids: Vec<&Value> = events.iter().map(|e| &e["event_id"]).collect();
        assert_eq!(ids, vec![&json!(sent[3]), &json!(sent[4])], "{backend:?}: the two newest messages");
        assert_eq!(
            sync["rooms"]["join"][&room]["timeline"]["limited"], true,
            "{backend:?}: the timeline is marked limited"
        );

        let inline = encode(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
        let sync = alice.sync(&format!("filter={inline}")).await;
        let events = timeline(&sync, &room);
        assert_eq!(events.len(), 1, "{backend:?}: an inline filter works too");
        assert_eq!(events[0]["event_id"], sent[4], "{backend:?}: the newest message");
        server.stop().await;
    }
}

#[tokio::test]
async fn filter_types_apply_to_sync() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let room = alice.create_room(json!({})).await;
        alice.send_text(&room, "hello").await;
        let filter_id =
            create_filter(&alice, json!({ "room": { "timeline": { "types": ["m.room.message"], "limit": 50 } } }))
                .await;

        let sync = alice.sync(&format!("filter={filter_id}")).await;
        let events = timeline(&sync, &room);
        assert!(!events.is_empty(), "{backend:?}: the message passes the filter");
        assert!(
            events.iter().all(|e| e["type"] == "m.room.message"),
            "{backend:?}: only messages in the timeline: {events:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn other_users_filter_forbidden() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let filter_id = create_filter(&alice, json!({ "room": { "timeline": { "limit": 1 } } })).await;

        let response = bob.get(&format!("{}/{}", filter_path(&alice.user_id), filter_id)).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response = bob.post(&filter_path(&alice.user_id), json!({})).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // Bob's own filter namespace does not contain alice's filter.
        let response = bob.get(&format!("/_matrix/client/v3/sync?filter={filter_id}")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_filter_not_found() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        for filter_id in ["12345", "not-a-number"] {
            let response = alice.get(&format!("{}/{}", filter_path(&alice.user_id), filter_id)).await;
            assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
        let response = alice.get("/_matrix/client/v3/sync?filter=12345").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn invalid_filter_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let invalid = [
            json!({ "room": { "timeline": { "limit": "ten" } } }),
            json!({ "room": { "rooms": "!notalist:localhost" } }),
            json!({ "event_format": "xml" }),
        ];
        for filter in invalid {
            let response = alice.post(&filter_path(&alice.user_id), filter.clone()).await;
            assert_eq!(response.0, StatusCode::BAD_REQUEST, "{backend:?}: {filter}: {}", response.1);
            assert_eq!(response.1["errcode"], "M_BAD_JSON", "{backend:?}: {filter}: {}", response.1);
        }
        let (status, body) = alice.get(&format!("{}/0", filter_path(&alice.user_id))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend:?}: rejected filters were not stored: {body}");

        let inline = encode(r#"{"room": {"timeline": {"limit": "ten"}}}"#);
        let response = alice.get(&format!("/_matrix/client/v3/sync?filter={inline}")).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        server.stop().await;
    }
}
