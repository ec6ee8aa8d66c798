//! Room creation: presets, initial state, power level overrides, aliases,
//! room versions, direct-message invites, and the shape of the created events.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

/// Fetches the content of a state event, failing the test unless it exists.
async fn state_content(client: &Client, room_id: &str, kind: &str, state_key: &str) -> Value {
    let (status, body) =
        client.get(&format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", encode(room_id), encode(state_key))).await;
    assert_eq!(status, StatusCode::OK, "state {kind}/{state_key:?} of {room_id}: {body}");
    body
}

/// Fetches the full state of a room through `GET /state`.
async fn all_state(client: &Client, room_id: &str) -> Vec<Value> {
    let (status, body) = client.get(&format!("/_matrix/client/v3/rooms/{}/state", encode(room_id))).await;
    assert_eq!(status, StatusCode::OK, "state of {room_id}: {body}");
    body.as_array().expect("state is an array").clone()
}

async fn joined_rooms(client: &Client) -> Vec<Value> {
    let (status, body) = client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(status, StatusCode::OK, "joined_rooms: {body}");
    body["joined_rooms"].as_array().expect("joined_rooms array").clone()
}

#[tokio::test]
async fn presets_set_join_rules_and_visibility() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        // preset, expected join_rule, expected guest_access (None when the preset may leave it unset)
        let cases = [
            ("private_chat", "invite", Some("can_join")),
            ("trusted_private_chat", "invite", Some("can_join")),
            ("public_chat", "public", None),
        ];
        for (preset, join_rule, guest_access) in cases {
            let room = alice.create_room(json!({ "preset": preset })).await;

            let rules = state_content(&alice, &room, "m.room.join_rules", "").await;
            assert_eq!(rules["join_rule"], join_rule, "{backend:?} {preset}: join_rule");

            let history = state_content(&alice, &room, "m.room.history_visibility", "").await;
            assert_eq!(history["history_visibility"], "shared", "{backend:?} {preset}: history_visibility");

            let guest =
                alice.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.guest_access", encode(&room))).await;
            match guest_access {
                Some(expected) => {
                    assert_eq!(guest.0, StatusCode::OK, "{backend:?} {preset}: guest_access exists: {}", guest.1);
                    assert_eq!(guest.1["guest_access"], expected, "{backend:?} {preset}: guest_access");
                }
                // public_chat: guest access is `forbidden`, which an absent event also means.
                None => assert!(
                    guest.0 == StatusCode::NOT_FOUND || guest.1["guest_access"] == "forbidden",
                    "{backend:?} {preset}: guest_access must be forbidden or absent: {} {}",
                    guest.0,
                    guest.1
                ),
            }
        }

        // Without a preset, the visibility decides.
        let public = alice.create_room(json!({ "visibility": "public" })).await;
        let rules = state_content(&alice, &public, "m.room.join_rules", "").await;
        assert_eq!(rules["join_rule"], "public", "{backend:?}: public visibility implies public_chat");
        let private = alice.create_room(json!({})).await;
        let rules = state_content(&alice, &private, "m.room.join_rules", "").await;
        assert_eq!(rules["join_rule"], "invite", "{backend:?}: default preset is private_chat");

        let unknown = alice.post("/_matrix/client/v3/createRoom", json!({ "preset": "party" })).await;
        assert_eq!(unknown.0, StatusCode::BAD_REQUEST, "{backend:?}: unknown preset: {}", unknown.1);
        server.stop().await;
    }
}

#[tokio::test]
async fn trusted_private_chat_levels() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;

        // Room version 11: the creator and the invitees share level 100.
        let room = alice
            .create_room(json!({ "preset": "trusted_private_chat", "room_version": "11", "invite": [bob.user_id] }))
            .await;
        let levels = state_content(&alice, &room, "m.room.power_levels", "").await;
        assert_eq!(levels["users"][&alice.user_id], 100, "{backend:?}: creator level in v11: {levels}");
        assert_eq!(levels["users"][&bob.user_id], 100, "{backend:?}: invitee level in v11: {levels}");

        let private = alice
            .create_room(json!({ "preset": "private_chat", "room_version": "11", "invite": [carol.user_id] }))
            .await;
        let levels = state_content(&alice, &private, "m.room.power_levels", "").await;
        assert!(
            levels["users"].get(&carol.user_id).is_none(),
            "{backend:?}: private_chat invitee has no level: {levels}"
        );

        // Room version 12: creators outrank every level, so invitees become additional creators.
        let room = alice
            .create_room(json!({ "preset": "trusted_private_chat", "room_version": "12", "invite": [bob.user_id] }))
            .await;
        let create = state_content(&alice, &room, "m.room.create", "").await;
        let additional = create["additional_creators"].as_array().cloned().unwrap_or_default();
        assert!(
            additional.contains(&json!(bob.user_id)),
            "{backend:?}: v12 invitee is an additional creator: {create}"
        );
        let levels = state_content(&alice, &room, "m.room.power_levels", "").await;
        assert!(levels["users"].get(&alice.user_id).is_none(), "{backend:?}: v12 creator is not in users: {levels}");
        assert!(
            levels["users"].get(&bob.user_id).is_none(),
            "{backend:?}: v12 additional creator is not in users: {levels}"
        );

        // As a creator, the invitee may change power levels once joined.
        bob.join(&room).await;
        let (status, body) = bob
            .put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", encode(&room)),
                json!({ "users": { carol.user_id.clone(): 50 } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: additional creator sets power levels: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn name_topic_and_initial_state() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let room = alice
            .create_room(json!({
                "name": "Planning",
                "topic": "Quarterly goals",
                "initial_state": [
                    { "type": "m.room.history_visibility", "content": { "history_visibility": "joined" } },
                    { "type": "m.room.name", "content": { "name": "Overridden by name" } },
                    { "type": "org.example.settings", "state_key": "colour", "content": { "value": "blue" } },
                ],
            }))
            .await;

        let name = state_content(&alice, &room, "m.room.name", "").await;
        assert_eq!(name["name"], "Planning", "{backend:?}: name wins over initial_state");
        let topic = state_content(&alice, &room, "m.room.topic", "").await;
        assert_eq!(topic["topic"], "Quarterly goals", "{backend:?}: topic");
        let history = state_content(&alice, &room, "m.room.history_visibility", "").await;
        assert_eq!(history["history_visibility"], "joined", "{backend:?}: initial_state wins over the preset");
        let custom = state_content(&alice, &room, "org.example.settings", "colour").await;
        assert_eq!(custom["value"], "blue", "{backend:?}: custom initial state with a state key");

        // The preset event that initial_state replaced is not sent at all.
        let state = all_state(&alice, &room).await;
        let visibility_events = state.iter().filter(|e| e["type"] == "m.room.history_visibility").count();
        assert_eq!(visibility_events, 1, "{backend:?}: one history_visibility state event");

        let too_long = alice.post("/_matrix/client/v3/createRoom", json!({ "name": "n".repeat(256) })).await;
        assert_eq!(too_long.0, StatusCode::BAD_REQUEST, "{backend:?}: name over 255 bytes: {}", too_long.1);
        server.stop().await;
    }
}

#[tokio::test]
async fn power_level_content_override() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let room = alice
            .create_room(json!({
                "room_version": "11",
                "power_level_content_override": {
                    "events_default": 20,
                    "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 30 },
                },
            }))
            .await;
        let levels = state_content(&alice, &room, "m.room.power_levels", "").await;
        assert_eq!(levels["events_default"], 20, "{backend:?}: overridden events_default");
        assert_eq!(levels["users"][&bob.user_id], 30, "{backend:?}: overridden users");
        assert_eq!(levels["users"][&alice.user_id], 100, "{backend:?}: creator kept in users");
        assert_eq!(levels["state_default"], 50, "{backend:?}: keys not overridden keep their default");
        assert_eq!(levels["ban"], 50, "{backend:?}: ban default");
        server.stop().await;
    }
}

#[tokio::test]
async fn room_alias_name() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let alias = format!("#lobby:{}", server.server_name);

        let room = alice.create_room(json!({ "room_alias_name": "lobby", "preset": "public_chat" })).await;
        let (status, resolved) = alice.get(&format!("/_matrix/client/v3/directory/room/{}", encode(&alias))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: alias resolves: {resolved}");
        assert_eq!(resolved["room_id"], room, "{backend:?}: alias points at the new room");
        let canonical = state_content(&alice, &room, "m.room.canonical_alias", "").await;
        assert_eq!(canonical["alias"], alias, "{backend:?}: canonical alias event");

        let before = joined_rooms(&alice).await;
        let taken = alice.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": "lobby" })).await;
        assert_error(&taken, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
        let after = joined_rooms(&alice).await;
        assert_eq!(before, after, "{backend:?}: a rejected createRoom leaves no room behind");

        let invalid = alice.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": "bad:name" })).await;
        assert_eq!(invalid.0, StatusCode::BAD_REQUEST, "{backend:?}: alias localpart with a colon: {}", invalid.1);
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}: invalid alias leaves no room behind");
        server.stop().await;
    }
}

#[tokio::test]
async fn room_versions() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let room = alice.create_room(json!({ "room_version": "11" })).await;
        let create = state_content(&alice, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], "11", "{backend:?}: requested version");
        assert!(create.get("creator").is_none(), "{backend:?}: v11 create event has no creator key: {create}");
        let older = alice.create_room(json!({ "room_version": "10" })).await;
        let create = state_content(&alice, &older, "m.room.create", "").await;
        assert_eq!(create["room_version"], "10", "{backend:?}: version 10");
        assert_eq!(create["creator"], alice.user_id, "{backend:?}: v10 create event names the creator");
        assert!(
            room.ends_with(&format!(":{}", server.server_name)),
            "{backend:?}: v11 room id has a server name: {room}"
        );

        let before = joined_rooms(&alice).await;
        for version in ["999", "1"] {
            let response = alice.post("/_matrix/client/v3/createRoom", json!({ "room_version": version })).await;
            assert_error(&response, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
        }
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}: no room for an unsupported version");

        let (status, capabilities) = alice.get("/_matrix/client/v3/capabilities").await;
        assert_eq!(status, StatusCode::OK, "capabilities: {capabilities}");
        let default = capabilities["capabilities"]["m.room_versions"]["default"].as_str().expect("default version");
        let room = alice.create_room(json!({})).await;
        let create = state_content(&alice, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], default, "{backend:?}: rooms use the advertised default version");
        server.stop().await;
    }
}

#[tokio::test]
async fn events_are_signed_pdus() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;

        let room = alice.create_room(json!({ "room_version": "12", "name": "Hashes" })).await;
        let state = all_state(&alice, &room).await;
        assert!(state.len() >= 5, "{backend:?}: initial state events: {state:?}");
        for event in &state {
            let id = event["event_id"].as_str().expect("event_id");
            assert!(id.starts_with('$'), "{backend:?}: event id {id} starts with $");
            // Room versions 4 and later: `$` and an unpadded URL-safe base64 SHA-256 (43 characters).
            assert_eq!(id.len(), 44, "{backend:?}: event id {id} is a reference hash");
            assert!(
                id[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{backend:?}: event id {id} is URL-safe base64"
            );
            assert_eq!(event["room_id"], room, "{backend:?}: event {id} names the room");
        }

        let create = state.iter().find(|e| e["type"] == "m.room.create").expect("create event in state");
        let create_id = create["event_id"].as_str().expect("create event id");
        assert_eq!(room, format!("!{}", &create_id[1..]), "{backend:?}: v12 room id derives from the create event");
        assert_eq!(create["sender"], alice.user_id, "{backend:?}: creator sends the create event");
        assert!(create["content"].get("creator").is_none(), "{backend:?}: v12 create event has no creator key");

        let message_id = alice.send_text(&room, "hello").await;
        assert!(message_id.starts_with('$') && message_id.len() == 44, "{backend:?}: message event id {message_id}");
        server.stop().await;
    }
}

#[tokio::test]
async fn direct_invites_and_invalid_invitees() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let room = alice.create_room(json!({ "invite": [bob.user_id], "is_direct": true })).await;
        let member = state_content(&alice, &room, "m.room.member", &bob.user_id).await;
        assert_eq!(member["membership"], "invite", "{backend:?}: bob is invited");
        assert_eq!(member["is_direct"], true, "{backend:?}: invite carries is_direct");

        let sync = bob.sync("").await;
        let invite_state =
            sync["rooms"]["invite"][&room]["invite_state"]["events"].as_array().expect("invite_state in bob's sync");
        let own = invite_state
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            .expect("bob's member event in invite_state");
        assert_eq!(own["content"]["is_direct"], true, "{backend:?}: invite_state shows is_direct");
        assert_eq!(own["sender"], alice.user_id, "{backend:?}: alice sent the invite");

        let plain = alice.create_room(json!({ "invite": [bob.user_id] })).await;
        let member = state_content(&alice, &plain, "m.room.member", &bob.user_id).await;
        assert!(member.get("is_direct").is_none(), "{backend:?}: no is_direct unless asked: {member}");

        let before = joined_rooms(&alice).await;
        for invitee in ["not-a-user-id", "@", "bob"] {
            let response = alice.post("/_matrix/client/v3/createRoom", json!({ "invite": [invitee] })).await;
            assert_eq!(response.0, StatusCode::BAD_REQUEST, "{backend:?}: invitee {invitee:?}: {}", response.1);
            assert!(
                response.1["errcode"].is_string(),
                "{backend:?}: invitee {invitee:?} has an errcode: {}",
                response.1
            );
        }
        let own = alice.post("/_matrix/client/v3/createRoom", json!({ "invite": [alice.user_id] })).await;
        assert_eq!(own.0, StatusCode::BAD_REQUEST, "{backend:?}: inviting the creator: {}", own.1);
        let member_state = alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({ "initial_state": [{ "type": "m.room.member", "state_key": bob.user_id, "content": { "membership": "join" } }] }),
            )
            .await;
        assert_eq!(
            member_state.0,
            StatusCode::BAD_REQUEST,
            "{backend:?}: member event in initial_state: {}",
            member_state.1
        );
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}: invalid invitees create no room");
        server.stop().await;
    }
}
