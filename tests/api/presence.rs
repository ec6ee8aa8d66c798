//! Presence: setting and reading a status, who may see it, and its delivery
//! through `/sync`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error, backends, encode};

fn presence_path(user_id: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", encode(user_id))
}

fn presence_of<'a>(sync: &'a Value, user_id: &str) -> Option<&'a Value> {
    sync["presence"]["events"].as_array()?.iter().rev().find(|e| e["sender"] == user_id)
}

#[tokio::test]
async fn presence_set_and_get() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = presence_path(&alice.user_id);

        let (status, body) = alice.put(&path, json!({ "presence": "unavailable", "status_msg": "at lunch" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body, json!({}), "{backend:?}: put returns an empty object");

        let (status, body) = alice.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["presence"], "unavailable", "{backend:?}: presence");
        assert_eq!(body["status_msg"], "at lunch", "{backend:?}: status_msg");
        assert_eq!(body["currently_active"], false, "{backend:?}: unavailable is not currently active");
        assert!(body["last_active_ago"].as_i64().is_some_and(|ms| ms >= 0), "{backend:?}: last_active_ago: {body}");

        let (status, body) = alice.put(&path, json!({ "presence": "online" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, body) = alice.get(&path).await;
        assert_eq!(body["presence"], "online", "{backend:?}: presence online");
        assert_eq!(body["currently_active"], true, "{backend:?}: online is currently active");
        assert!(body.get("status_msg").is_none(), "{backend:?}: a put without status_msg clears it: {body}");

        let (status, body) = alice.put(&path, json!({ "presence": "online", "status_msg": "in a call" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (status, body) = alice.put(&path, json!({ "presence": "online", "status_msg": "" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let (_, body) = alice.get(&path).await;
        assert!(body.get("status_msg").is_none(), "{backend:?}: an empty status_msg clears it: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn presence_visible_to_room_members() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;

        let path = presence_path(&alice.user_id);
        let (status, body) = alice.put(&path, json!({ "presence": "online", "status_msg": "working" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let (status, body) = bob.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: bob shares a room with alice: {body}");
        assert_eq!(body["presence"], "online", "{backend:?}: bob sees alice online");
        assert_eq!(body["status_msg"], "working", "{backend:?}: bob sees alice's status_msg");

        let response = carol.get(&path).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn presence_reaches_sync() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let bob_since = bob.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();
        let carol_since = carol.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        let (status, body) =
            alice.put(&presence_path(&alice.user_id), json!({ "presence": "unavailable", "status_msg": "brb" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let next = bob.sync(&format!("since={bob_since}&timeout=5000")).await;
        let event = presence_of(&next, &alice.user_id).expect("alice's presence in bob's sync");
        assert_eq!(event["type"], "m.presence", "{backend:?}: event type");
        assert_eq!(event["content"]["presence"], "unavailable", "{backend:?}: presence in sync");
        assert_eq!(event["content"]["status_msg"], "brb", "{backend:?}: status_msg in sync");

        let next = carol.sync(&format!("since={carol_since}&timeout=0")).await;
        assert!(
            presence_of(&next, &alice.user_id).is_none(),
            "{backend:?}: carol shares no room with alice: {}",
            next["presence"]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn presence_invalid_value_rejected() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let path = presence_path(&alice.user_id);
        let (status, body) = alice.put(&path, json!({ "presence": "online", "status_msg": "here" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let (status, body) = alice.put(&path, json!({ "presence": "busy" })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend:?}: unknown presence value: {body}");
        assert!(
            body["errcode"] == "M_INVALID_PARAM" || body["errcode"] == "M_BAD_JSON",
            "{backend:?}: errcode: {body}"
        );
        let (status, body) = alice.put(&path, json!({ "status_msg": "no state" })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backend:?}: missing presence: {body}");
        assert_eq!(body["errcode"], "M_BAD_JSON", "{backend:?}: errcode: {body}");

        let (_, body) = alice.get(&path).await;
        assert_eq!(body["presence"], "online", "{backend:?}: rejected puts change nothing");
        assert_eq!(body["status_msg"], "here", "{backend:?}: rejected puts keep status_msg");
        server.stop().await;
    }
}

#[tokio::test]
async fn presence_of_others_not_settable() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let (status, body) = alice.put(&presence_path(&alice.user_id), json!({ "presence": "online" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        let response = bob.put(&presence_path(&alice.user_id), json!({ "presence": "offline" })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, body) = alice.get(&presence_path(&alice.user_id)).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        assert_eq!(body["presence"], "online", "{backend:?}: bob's rejected put changed nothing");
        server.stop().await;
    }
}
