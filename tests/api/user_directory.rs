//! User directory search: who is visible to whom, the `search_all_users`
//! option and the `limited` flag.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

async fn search(client: &Client, term: &str, limit: Option<u64>) -> Value {
    let mut request = json!({ "search_term": term });
    if let Some(limit) = limit {
        request["limit"] = json!(limit);
    }
    let (status, body) = client.post("/_matrix/client/v3/user_directory/search", request).await;
    assert_eq!(status, StatusCode::OK, "search {term:?}: {body}");
    body
}

fn found(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = body["results"]
        .as_array()
        .expect("results is an array")
        .iter()
        .map(|r| r["user_id"].as_str().expect("user_id is a string").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn directory_sharing_and_public_rooms() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("user-bob").await;
        let carol = server.register("user-carol").await;
        let dave = server.register("user-dave").await;
        let erin = server.register("user-erin").await;
        server.register("user-frank").await;

        // Bob shares a private room with alice.
        let private = alice.create_room(json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
        bob.join(&private).await;
        // Carol sits alone in a room published in the room directory.
        carol.create_room(json!({ "preset": "public_chat", "visibility": "public" })).await;
        // Dave sits alone in a room that anyone may join but is not published.
        dave.create_room(json!({ "preset": "public_chat" })).await;
        // Erin sits in a private room of her own; frank is in no room.
        erin.create_room(json!({ "preset": "private_chat" })).await;

        let body = search(&alice, "user-", Some(50)).await;
        let ids = found(&body);
        assert!(ids.contains(&bob.user_id), "{backend:?}: a user sharing a room is found: {body}");
        assert!(ids.contains(&carol.user_id), "{backend:?}: a user in a published room is found: {body}");
        assert!(ids.contains(&dave.user_id), "{backend:?}: a user in a publicly joinable room is found: {body}");
        assert!(!ids.contains(&erin.user_id), "{backend:?}: a user in a private room is hidden: {body}");
        assert!(!ids.contains(&server.user_id("user-frank")), "{backend:?}: a user in no room is hidden: {body}");
        assert_eq!(body["limited"], false, "{backend:?}: not limited");

        let result = body["results"].as_array().expect("results").iter().find(|r| r["user_id"] == bob.user_id);
        assert_eq!(
            result.map(|r| r["display_name"].clone()),
            Some(json!("user-bob")),
            "{backend:?}: results carry the display name: {body}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_matches_display_name() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
        bob.join(&room).await;
        let (status, body) = bob
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob.user_id)),
                json!({ "displayname": "Robert Tables" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let body = search(&alice, "TABLES", None).await;
        assert_eq!(found(&body), vec![bob.user_id.clone()], "{backend:?}: case-insensitive display name match");
        let body = search(&alice, "nothing-matches-this", None).await;
        assert!(found(&body).is_empty(), "{backend:?}: no match: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_search_all_users() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.directory.search_all_users = true;
        })
        .await;
        let alice = server.register("alice").await;
        let erin = server.register("user-erin").await;
        server.register("user-frank").await;
        erin.create_room(json!({ "preset": "private_chat" })).await;

        let body = search(&alice, "user-", None).await;
        assert_eq!(
            found(&body),
            vec![erin.user_id.clone(), server.user_id("user-frank")],
            "{backend:?}: every local user is found"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_limited_flag() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.directory.search_all_users = true;
        })
        .await;
        let alice = server.register("alice").await;
        for n in 0..4 {
            server.register(&format!("member{n}")).await;
        }

        let body = search(&alice, "member", Some(2)).await;
        assert_eq!(found(&body).len(), 2, "{backend:?}: results honour the limit: {body}");
        assert_eq!(body["limited"], true, "{backend:?}: limited when more users match");

        let body = search(&alice, "member", Some(4)).await;
        assert_eq!(found(&body).len(), 4, "{backend:?}: all four fit: {body}");
        assert_eq!(body["limited"], false, "{backend:?}: not limited when all results fit");
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_hides_deactivated_users() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config| {
            config.directory.search_all_users = true;
        })
        .await;
        let alice = server.register("alice").await;
        let deactivated = server.register("user-gone").await;
        let path = "/_matrix/client/v3/account/deactivate";
        let (_, challenge) = deactivated.post(path, json!({})).await;
        let auth = crate::accounts::password_auth(&deactivated.user_id, "correct horse", &challenge["session"]);
        let (status, body) = deactivated.post(path, json!({ "auth": auth })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let body = search(&alice, "user-gone", None).await;
        assert!(found(&body).is_empty(), "{backend:?}: deactivated users are not found: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_rejects_bad_requests() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let response = alice.post("/_matrix/client/v3/user_directory/search", json!({ "limit": 5 })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let response =
            server.client().post("/_matrix/client/v3/user_directory/search", json!({ "search_term": "a" })).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        server.stop().await;
    }
}
