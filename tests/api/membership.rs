//! Room membership: joining by id and alias, invites, leaving, forgetting,
//! kicks, bans, and the member lists.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestServer, assert_error, backends, encode};

fn room_path(room_id: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", encode(room_id))
}

async fn joined_rooms(client: &Client) -> Vec<Value> {
    let (status, body) = client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(status, StatusCode::OK, "joined_rooms: {body}");
    body["joined_rooms"].as_array().expect("joined_rooms array").clone()
}

async fn member_content(client: &Client, room_id: &str, user_id: &str) -> Value {
    let (status, body) = client.get(&room_path(room_id, &format!("state/m.room.member/{}", encode(user_id)))).await;
    assert_eq!(status, StatusCode::OK, "member event of {user_id}: {body}");
    body
}

/// Lists the state keys of the member events that `/members` returns, sorted.
async fn members(client: &Client, room_id: &str, query: &str) -> Vec<String> {
    let (status, body) = client.get(&room_path(room_id, &format!("members?{query}"))).await;
    assert_eq!(status, StatusCode::OK, "members?{query}: {body}");
    let mut keys: Vec<String> = body["chunk"]
        .as_array()
        .expect("chunk array")
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.room.member", "members returns member events: {e}");
            e["state_key"].as_str().expect("state_key").to_owned()
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn join_by_id_and_alias() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat", "room_alias_name": "town" })).await;
        let alias = format!("#town:{}", server.server_name);

        let (status, body) = bob.post(&format!("/_matrix/client/v3/join/{}", encode(&alias)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: join by alias: {body}");
        assert_eq!(body["room_id"], room, "{backend:?}: join by alias returns the room id");

        let (status, body) = carol.post(&room_path(&room, "join"), json!({ "reason": "hi" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: join by id: {body}");
        assert_eq!(body["room_id"], room, "{backend:?}: join by id returns the room id");
        let member = member_content(&alice, &room, &carol.user_id).await;
        assert_eq!(member["membership"], "join", "{backend:?}: carol joined");
        assert_eq!(member["reason"], "hi", "{backend:?}: join reason");

        assert!(joined_rooms(&bob).await.contains(&json!(room)), "{backend:?}: bob's joined_rooms");
        assert!(joined_rooms(&carol).await.contains(&json!(room)), "{backend:?}: carol's joined_rooms");

        let unknown_alias = bob
            .post(
                &format!("/_matrix/client/v3/join/{}", encode(&format!("#nowhere:{}", server.server_name))),
                json!({}),
            )
            .await;
        assert_error(&unknown_alias, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // An invite-only room cannot be joined without an invite.
        let private = alice.create_room(json!({ "preset": "private_chat" })).await;
        let refused = bob.post(&room_path(&private, "join"), json!({})).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(!joined_rooms(&bob).await.contains(&json!(private)), "{backend:?}: bob not in the private room");
        server.stop().await;
    }
}

#[tokio::test]
async fn invite_with_reason() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "private_chat", "name": "Secret" })).await;

        let (status, body) =
            alice.post(&room_path(&room, "invite"), json!({ "user_id": bob.user_id, "reason": "join us" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: invite: {body}");

        let sync = bob.sync("").await;
        let events = sync["rooms"]["invite"][&room]["invite_state"]["events"].as_array().expect("invite_state events");
        let invite = events
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            .expect("bob's invite in invite_state");
        assert_eq!(invite["content"]["membership"], "invite", "{backend:?}: membership");
        assert_eq!(invite["content"]["reason"], "join us", "{backend:?}: invite reason reaches the invitee");
        assert_eq!(invite["sender"], alice.user_id, "{backend:?}: inviter");
        let name = events.iter().find(|e| e["type"] == "m.room.name").expect("room name in invite_state");
        assert_eq!(name["content"]["name"], "Secret", "{backend:?}: room name in invite_state");

        let again = alice.post(&room_path(&room, "invite"), json!({ "user_id": bob.user_id })).await;
        assert_eq!(again.0, StatusCode::OK, "{backend:?}: re-inviting an invited user: {}", again.1);

        bob.join(&room).await;
        let joined = alice.post(&room_path(&room, "invite"), json!({ "user_id": bob.user_id })).await;
        assert_error(&joined, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn invite_errors() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "private_chat" })).await;

        let nobody = server.user_id("nobody");
        let missing = alice.post(&room_path(&room, "invite"), json!({ "user_id": nobody })).await;
        assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (status, body) = alice.get(&room_path(&room, &format!("state/m.room.member/{}", encode(&nobody)))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{backend:?}: no member event for the unknown user: {body}");

        let invalid = alice.post(&room_path(&room, "invite"), json!({ "user_id": "bob" })).await;
        assert_eq!(invalid.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid user id: {}", invalid.1);

        // Someone outside the room cannot invite into it.
        let outsider = bob.post(&room_path(&room, "invite"), json!({ "user_id": carol.user_id })).await;
        assert_error(&outsider, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let sync = carol.sync("").await;
        assert!(sync["rooms"]["invite"].get(&room).is_none(), "{backend:?}: carol got no invite");
        server.stop().await;
    }
}

#[tokio::test]
async fn leave_and_forget() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let since = bob.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        let early = bob.post(&room_path(&room, "forget"), json!({})).await;
        assert_eq!(early.0, StatusCode::BAD_REQUEST, "{backend:?}: forget while joined: {}", early.1);

        let (status, body) = bob.post(&room_path(&room, "leave"), json!({ "reason": "bye" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: leave: {body}");
        assert!(!joined_rooms(&bob).await.contains(&json!(room)), "{backend:?}: room left joined_rooms");
        let member = member_content(&alice, &room, &bob.user_id).await;
        assert_eq!(member["membership"], "leave", "{backend:?}: leave event");
        assert_eq!(member["reason"], "bye", "{backend:?}: leave reason");

        let incremental = bob.sync(&format!("since={since}")).await;
        assert!(incremental["rooms"]["leave"].get(&room).is_some(), "{backend:?}: left room in leave: {incremental}");
        assert!(incremental["rooms"]["join"].get(&room).is_none(), "{backend:?}: left room not in join");

        let include_leave = encode(r#"{"room":{"include_leave":true}}"#);
        let before_forget = bob.sync(&format!("filter={include_leave}")).await;
        assert!(before_forget["rooms"]["leave"].get(&room).is_some(), "{backend:?}: include_leave lists the room");

        let (status, body) = bob.post(&room_path(&room, "forget"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: forget after leave: {body}");
        let after_forget = bob.sync(&format!("filter={include_leave}")).await;
        assert!(
            after_forget["rooms"]["leave"].get(&room).is_none(),
            "{backend:?}: forgotten room is gone: {after_forget}"
        );

        let never = server.register("carol").await;
        let unknown = never.post(&room_path(&room, "forget"), json!({})).await;
        assert_eq!(unknown.0, StatusCode::NOT_FOUND, "{backend:?}: forget without membership: {}", unknown.1);
        let outsider_leave = never.post(&room_path(&room, "leave"), json!({})).await;
        assert_error(&outsider_leave, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A forgotten room can be joined again.
        bob.join(&room).await;
        assert!(joined_rooms(&bob).await.contains(&json!(room)), "{backend:?}: rejoined after forgetting");
        server.stop().await;
    }
}

#[tokio::test]
async fn kick_with_reason() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        let since = bob.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        let (status, body) =
            alice.post(&room_path(&room, "kick"), json!({ "user_id": bob.user_id, "reason": "spam" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: kick: {body}");
        let (status, event) =
            alice.get(&room_path(&room, &format!("state/m.room.member/{}?format=event", encode(&bob.user_id)))).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: member event: {event}");
        assert_eq!(event["content"]["membership"], "leave", "{backend:?}: kick is a leave");
        assert_eq!(event["content"]["reason"], "spam", "{backend:?}: kick reason");
        assert_eq!(event["sender"], alice.user_id, "{backend:?}: kicked by alice");
        assert!(!joined_rooms(&bob).await.contains(&json!(room)), "{backend:?}: bob is out");
        let sync = bob.sync(&format!("since={}", encode(&since))).await;
        let kick = sync["rooms"]["leave"][&room]["timeline"]["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id))
            .cloned()
            .unwrap_or_else(|| panic!("{backend:?}: the kick in bob's leave section: {sync}"));
        assert_eq!(kick["content"]["reason"], "spam", "{backend:?}: bob sees the kick reason");

        let again = alice.post(&room_path(&room, "kick"), json!({ "user_id": bob.user_id })).await;
        assert_error(&again, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A kick is not a ban: bob may come back.
        bob.join(&room).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn ban_and_unban() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;

        let (status, body) =
            alice.post(&room_path(&room, "ban"), json!({ "user_id": bob.user_id, "reason": "abuse" })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: ban: {body}");
        let member = member_content(&alice, &room, &bob.user_id).await;
        assert_eq!(member["membership"], "ban", "{backend:?}: membership is ban");
        assert_eq!(member["reason"], "abuse", "{backend:?}: ban reason");

        let join = bob.post(&room_path(&room, "join"), json!({})).await;
        assert_error(&join, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(!joined_rooms(&bob).await.contains(&json!(room)), "{backend:?}: banned user stays out");

        let (status, body) = alice.post(&room_path(&room, "unban"), json!({ "user_id": bob.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: unban: {body}");
        let member = member_content(&alice, &room, &bob.user_id).await;
        assert_eq!(member["membership"], "leave", "{backend:?}: unban leaves the user out of the room");

        let not_banned = alice.post(&room_path(&room, "unban"), json!({ "user_id": bob.user_id })).await;
        assert_error(&not_banned, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        bob.join(&room).await;
        assert!(joined_rooms(&bob).await.contains(&json!(room)), "{backend:?}: unbanned user can join");

        // A user who never joined can be banned in advance.
        let carol = server.user_id("carol");
        let (status, body) = alice.post(&room_path(&room, "ban"), json!({ "user_id": carol })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: pre-emptive ban: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn moderation_needs_power() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        bob.join(&room).await;
        carol.join(&room).await;

        let kick = bob.post(&room_path(&room, "kick"), json!({ "user_id": carol.user_id })).await;
        assert_error(&kick, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let ban = bob.post(&room_path(&room, "ban"), json!({ "user_id": carol.user_id })).await;
        assert_error(&ban, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let creator = bob.post(&room_path(&room, "ban"), json!({ "user_id": alice.user_id })).await;
        assert_error(&creator, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        let member = member_content(&alice, &room, &carol.user_id).await;
        assert_eq!(member["membership"], "join", "{backend:?}: carol is still joined");
        let member = member_content(&alice, &room, &alice.user_id).await;
        assert_eq!(member["membership"], "join", "{backend:?}: alice is still joined");
        server.stop().await;
    }
}

#[tokio::test]
async fn members_filters_and_at() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        let before_bob = alice.sync("").await["next_batch"].as_str().expect("next_batch").to_owned();

        bob.join(&room).await;
        dave.join(&room).await;
        let (status, body) = dave.post(&room_path(&room, "leave"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: dave leaves: {body}");
        let (status, body) = alice.post(&room_path(&room, "invite"), json!({ "user_id": carol.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: invite carol: {body}");

        let mut all = vec![alice.user_id.clone(), bob.user_id.clone(), carol.user_id.clone(), dave.user_id.clone()];
        all.sort();
        assert_eq!(members(&alice, &room, "").await, all, "{backend:?}: every member event");

        let mut joined = vec![alice.user_id.clone(), bob.user_id.clone()];
        joined.sort();
        assert_eq!(members(&alice, &room, "membership=join").await, joined, "{backend:?}: membership=join");

        let mut not_joined = vec![carol.user_id.clone(), dave.user_id.clone()];
        not_joined.sort();
        assert_eq!(members(&alice, &room, "not_membership=join").await, not_joined, "{backend:?}: not_membership=join");
        assert_eq!(
            members(&alice, &room, "membership=invite").await,
            vec![carol.user_id.clone()],
            "{backend:?}: invite"
        );
        assert_eq!(members(&alice, &room, "membership=leave").await, vec![dave.user_id.clone()], "{backend:?}: leave");

        let at = members(&alice, &room, &format!("at={}", encode(&before_bob))).await;
        assert_eq!(at, vec![alice.user_id.clone()], "{backend:?}: members at a token before the others joined");

        let invalid = alice.get(&room_path(&room, "members?membership=dancing")).await;
        assert_eq!(invalid.0, StatusCode::BAD_REQUEST, "{backend:?}: invalid membership filter: {}", invalid.1);
        server.stop().await;
    }
}

#[tokio::test]
async fn joined_members_with_display_names() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let (status, body) = bob
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", encode(&bob.user_id)),
                json!({ "displayname": "Bob B." }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: set display name: {body}");

        let carol = server.register("carol").await;
        let room = alice.create_room(json!({ "preset": "public_chat", "invite": [carol.user_id] })).await;
        bob.join(&room).await;

        let (status, body) = alice.get(&room_path(&room, "joined_members")).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: joined_members: {body}");
        let joined = body["joined"].as_object().expect("joined object");
        assert_eq!(joined.len(), 2, "{backend:?}: two joined members: {body}");
        assert_eq!(joined[&bob.user_id]["display_name"], "Bob B.", "{backend:?}: bob's display name");
        assert!(joined.contains_key(&alice.user_id), "{backend:?}: alice listed");
        server.stop().await;
    }
}

#[tokio::test]
async fn member_lists_private_to_outsiders() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let eve = server.register("eve").await;
        let room = alice.create_room(json!({ "preset": "private_chat" })).await;

        let members = eve.get(&room_path(&room, "members")).await;
        assert_error(&members, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let joined = eve.get(&room_path(&room, "joined_members")).await;
        assert_error(&joined, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

/// Sets the join rule `join_rule` (`restricted` or `knock_restricted`) on
/// `room_id`, allowing the members of `allowed`.
async fn restrict(client: &Client, room_id: &str, join_rule: &str, allowed: &str) {
    let content = json!({ "join_rule": join_rule, "allow": [{ "type": "m.room_membership", "room_id": allowed }] });
    let (status, body) = client.put(&room_path(room_id, "state/m.room.join_rules/"), content).await;
    assert_eq!(status, StatusCode::OK, "restricting {room_id}: {body}");
}

#[tokio::test]
async fn restricted_join_through_allowed_room() {
    for backend in backends() {
        for (version, join_rule) in [("10", "restricted"), ("12", "restricted"), ("12", "knock_restricted")] {
            let server = TestServer::start(&backend).await;
            let alice = server.register("alice").await;
            let bob = server.register("bob").await;
            let space = alice.create_room(json!({ "preset": "public_chat", "room_version": version })).await;
            let room = alice.create_room(json!({ "preset": "private_chat", "room_version": version })).await;
            restrict(&alice, &room, join_rule, &space).await;

            // Bob is in none of the allowed rooms.
            let join_path = format!("/_matrix/client/v3/join/{}", encode(&room));
            let response = bob.post(&join_path, json!({})).await;
            assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
            assert!(response.1["error"].as_str().unwrap().contains(&space), "names the allowed room: {}", response.1);

            // Once he is in the allowed room, he may join, authorised by alice,
            // the only member who may invite.
            bob.join(&space).await;
            bob.join(&room).await;
            let member = member_content(&bob, &room, &bob.user_id).await;
            assert_eq!(member["membership"], "join", "room version {version}, {join_rule}: {member}");
            assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str(), "{member}");

            // An invited user joins without an authorising user.
            let carol = server.register("carol").await;
            let (status, body) = alice.post(&room_path(&room, "invite"), json!({ "user_id": carol.user_id })).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            carol.join(&room).await;
            let member = member_content(&carol, &room, &carol.user_id).await;
            assert_eq!(member["membership"], "join", "{member}");
            assert!(member.get("join_authorised_via_users_server").is_none(), "{member}");
        }
    }
}

#[tokio::test]
async fn restricted_join_without_inviter() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let space = alice.create_room(json!({ "preset": "public_chat" })).await;
        // Room version 10: the creator has no power beyond the power levels.
        let room = alice.create_room(json!({ "preset": "private_chat", "room_version": "10" })).await;
        restrict(&alice, &room, "restricted", &space).await;
        let levels_path = room_path(&room, "state/m.room.power_levels/");
        let (_, mut levels) = alice.get(&levels_path).await;
        levels["invite"] = json!(100);
        levels["users"][alice.user_id.as_str()] = json!(50);
        let (status, body) = alice.put(&levels_path, levels).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Bob meets the condition, but no member of the room may invite.
        bob.join(&space).await;
        let response = bob.post(&format!("/_matrix/client/v3/join/{}", encode(&room)), json!({})).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN");
        let member_path = room_path(&room, &format!("state/m.room.member/{}", encode(&bob.user_id)));
        let response = alice.get(&member_path).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
}
