//! Room upgrades: the new room takes over the old room's settings, bans and
//! local aliases, names its predecessor, and the old room gets a tombstone
//! and restricted power levels.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

async fn state(client: &Client, room_id: &str, kind: &str) -> Value {
    let (status, body) = client.get(&format!("/_matrix/client/v3/rooms/{}/state/{kind}", encode(room_id))).await;
    assert_eq!(status, StatusCode::OK, "state {kind} of {room_id}: {body}");
    body
}

#[tokio::test]
async fn upgrade_moves_settings_bans_and_aliases() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let old = alice
            .create_room(json!({
                "preset": "public_chat", "name": "Team", "topic": "Weekly sync",
                "room_alias_name": "team", "room_version": "11",
            }))
            .await;
        bob.join(&old).await;
        carol.join(&old).await;
        let ban_path = format!("/_matrix/client/v3/rooms/{}/ban", encode(&old));
        let (status, body) = alice.post(&ban_path, json!({ "user_id": carol.user_id, "reason": "spam" })).await;
        assert_eq!(status, StatusCode::OK, "ban: {body}");

        let upgrade_path = format!("/_matrix/client/v3/rooms/{}/upgrade", encode(&old));
        let response = bob.post(&upgrade_path, json!({ "new_version": "12" })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let response = alice.post(&upgrade_path, json!({ "new_version": "99" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
        assert_error(&alice.post(&upgrade_path, json!({})).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");

        let (status, body) = alice.post(&upgrade_path, json!({ "new_version": "12" })).await;
        assert_eq!(status, StatusCode::OK, "upgrade: {body}");
        let new = body["replacement_room"].as_str().expect("replacement_room").to_owned();
        assert_ne!(new, old);

        // The new room.
        let create = state(&alice, &new, "m.room.create").await;
        assert_eq!(create["room_version"], "12");
        assert_eq!(create["predecessor"]["room_id"], old.as_str());
        assert_eq!(state(&alice, &new, "m.room.name").await["name"], "Team");
        assert_eq!(state(&alice, &new, "m.room.topic").await["topic"], "Weekly sync");
        assert_eq!(state(&alice, &new, "m.room.join_rules").await["join_rule"], "public");
        let carol_member = state(&alice, &new, &format!("m.room.member/{}", encode(&carol.user_id))).await;
        assert_eq!(carol_member["membership"], "ban");
        assert_eq!(carol_member["reason"], "spam");
        let (status, resolved) =
            alice.get(&format!("/_matrix/client/v3/directory/room/{}", encode("#team:localhost"))).await;
        assert_eq!(status, StatusCode::OK, "{resolved}");
        assert_eq!(resolved["room_id"], new.as_str());

        // The old room.
        let tombstone = state(&alice, &old, "m.room.tombstone").await;
        assert_eq!(tombstone["replacement_room"], new.as_str());
        let levels = state(&alice, &old, "m.room.power_levels").await;
        assert_eq!(levels["events_default"], 50);
        assert_eq!(levels["invite"], 50);
        assert_eq!(levels["users"][&alice.user_id], 100, "the old room's users stay: {levels}");
        assert!(state(&alice, &old, "m.room.canonical_alias").await.get("alias").is_none());
        let (status, _) = bob
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", encode(&old)),
                json!({ "msgtype": "m.text", "body": "still here?" }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "members can no longer speak in the old room");

        // Members follow the tombstone; the banned user cannot.
        bob.join(&new).await;
        bob.send_text(&new, "moved").await;
        let response = carol.post(&format!("/_matrix/client/v3/join/{}", encode(&new)), json!({})).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
}
