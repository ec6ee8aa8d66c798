//! Profiles: display names and avatars, and how a change reaches the member
//! events of the user's rooms.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{TestServer, assert_error, backends, encode, timeline};

fn profile_path(user_id: &str, field: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{field}", encode(user_id))
}

#[tokio::test]
async fn displayname_set_and_get() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let path = profile_path(&alice.user_id, "displayname");

        let (status, body) = alice.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["displayname"], "alice", "{backend:?}: a new account is named after its localpart");

        let (status, body) = alice.put(&path, json!({ "displayname": "Alice Liddell" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({}), "{backend:?}: put returns an empty object");

        let (status, body) = bob.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["displayname"], "Alice Liddell", "{backend:?}: other users read the new name");
        let (status, body) =
            server.client().get(&format!("/_matrix/client/v3/profile/{}", encode(&alice.user_id))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["displayname"], "Alice Liddell", "{backend:?}: the full profile has the name");

        let response = alice.put(&path, json!({ "displayname": "x".repeat(257) })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let (_, body) = alice.get(&path).await;
        assert_eq!(body["displayname"], "Alice Liddell", "{backend:?}: a rejected name changes nothing");
        server.stop().await;
    }
}

#[tokio::test]
async fn avatar_url_requires_mxc() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = profile_path(&alice.user_id, "avatar_url");

        let response = alice.get(&path).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let (status, body) = alice.put(&path, json!({ "avatar_url": "mxc://localhost/abcdef" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, body) = alice.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["avatar_url"], "mxc://localhost/abcdef", "{backend:?}: stored avatar");

        let response = alice.put(&path, json!({ "avatar_url": "https://example.org/cat.png" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        let (_, body) = alice.get(&path).await;
        assert_eq!(body["avatar_url"], "mxc://localhost/abcdef", "{backend:?}: a rejected avatar changes nothing");

        let (status, body) =
            server.client().get(&format!("/_matrix/client/v3/profile/{}", encode(&alice.user_id))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["avatar_url"], "mxc://localhost/abcdef", "{backend:?}: the full profile has the avatar");
        server.stop().await;
    }
}

#[tokio::test]
async fn other_users_profile_forbidden() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let response = bob.put(&profile_path(&alice.user_id, "displayname"), json!({ "displayname": "Mallory" })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response =
            bob.put(&profile_path(&alice.user_id, "avatar_url"), json!({ "avatar_url": "mxc://localhost/evil" })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        let (_, body) = alice.get(&profile_path(&alice.user_id, "displayname")).await;
        assert_eq!(body["displayname"], "alice", "{backend:?}: alice's name is unchanged");
        let response = alice.get(&profile_path(&alice.user_id, "avatar_url")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let response =
            server.client().put(&profile_path(&alice.user_id, "displayname"), json!({ "displayname": "x" })).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_and_invalid_users() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let response = alice.get(&profile_path(&server.user_id("nobody"), "displayname")).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = alice.get(&format!("/_matrix/client/v3/profile/{}", encode(&server.user_id("nobody")))).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let response = alice.get(&profile_path("not-a-user-id", "displayname")).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn displayname_updates_member_event() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = bob.create_room(json!({ "preset": "public_chat" })).await;
        alice.join(&room).await;
        let since = bob.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        let (status, body) =
            alice.put(&profile_path(&alice.user_id, "displayname"), json!({ "displayname": "Alice Liddell" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, body) = alice
            .put(&profile_path(&alice.user_id, "avatar_url"), json!({ "avatar_url": "mxc://localhost/alice" }))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let (status, members) = bob.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", encode(&room))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {members}");
        let entry = &members["joined"][&alice.user_id];
        assert_eq!(entry["display_name"], "Alice Liddell", "{backend:?}: joined_members has the new name: {members}");
        assert_eq!(entry["avatar_url"], "mxc://localhost/alice", "{backend:?}: joined_members has the new avatar");

        let state_path =
            format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(&room), encode(&alice.user_id));
        let (status, content) = bob.get(&state_path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {content}");
        assert_eq!(content["displayname"], "Alice Liddell", "{backend:?}: member state has the new name");
        assert_eq!(content["membership"], "join", "{backend:?}: alice is still joined");

        let next = bob.sync(&format!("since={since}&timeout=5000")).await;
        let events = timeline(&next, &room);
        let member_events: Vec<_> = events
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
            .collect();
        assert!(
            member_events.iter().any(|e| e["content"]["displayname"] == "Alice Liddell"),
            "{backend:?}: bob's sync has alice's renamed member event: {events:?}"
        );
        assert!(
            member_events.iter().all(|e| e["content"]["membership"] == "join"),
            "{backend:?}: the rewritten member events keep membership join: {member_events:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn displayname_cleared() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = profile_path(&alice.user_id, "displayname");
        let (status, body) = alice.put(&path, json!({ "displayname": null })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let response = alice.get(&path).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}
