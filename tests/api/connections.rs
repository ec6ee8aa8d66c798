//! The `professional` policy and the connection endpoints: each rule's allowed
//! and rejected paths with their errcodes, that a rejected action leaves
//! nothing behind, and the metrics of a scripted history.

use lattice::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Client, TestServer, assert_error, backends, encode};

const PREFIX: &str = "/_matrix/client/unstable/dev.lattice.connections";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Starts a server with the `professional` policy, a group size of 3, no daily
/// or weekly limits, and then whatever `configure` changes.
async fn start(backend: &Backend, configure: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.policy.name = "professional".into();
        config.policy.pending_message_limit = 1;
        config.policy.max_group_size = 3;
        config.policy.daily_message_limit = 0;
        config.policy.weekly_connection_request_limit = 0;
        configure(config);
    })
    .await
}

/// A connection request the way Element's "Start chat" sends it.
async fn create_dm(from: &Client, to: &Client) -> (StatusCode, Value) {
    from.post(
        "/_matrix/client/v3/createRoom",
        json!({ "invite": [to.user_id], "is_direct": true, "preset": "trusted_private_chat" }),
    )
    .await
}

/// Connects two users: a request from `from`, accepted by `to`. Returns the room id.
async fn connect(from: &Client, to: &Client) -> String {
    let (status, body) = create_dm(from, to).await;
    assert_eq!(status, StatusCode::OK, "connection request: {body}");
    let room_id = body["room_id"].as_str().expect("room_id").to_owned();
    to.join(&room_id).await;
    room_id
}

async fn joined_rooms(client: &Client) -> Vec<String> {
    let (status, body) = client.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(status, StatusCode::OK, "joined_rooms: {body}");
    let mut rooms: Vec<String> =
        body["joined_rooms"].as_array().expect("joined_rooms").iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    rooms.sort();
    rooms
}

async fn send_message(client: &Client, room_id: &str, text: &str) -> (StatusCode, Value) {
    let txn = lattice::rooms::random_localpart(16);
    client
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room_id)),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await
}

async fn invite(client: &Client, room_id: &str, user_id: &str) -> (StatusCode, Value) {
    client.post(&format!("/_matrix/client/v3/rooms/{}/invite", encode(room_id)), json!({ "user_id": user_id })).await
}

async fn pending(client: &Client) -> Value {
    let (status, body) = client.get(&format!("{PREFIX}/requests")).await;
    assert_eq!(status, StatusCode::OK, "pending requests: {body}");
    body
}

async fn connection_ids(client: &Client) -> Vec<String> {
    let (status, body) = client.get(&format!("{PREFIX}/connections")).await;
    assert_eq!(status, StatusCode::OK, "connections: {body}");
    body["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| c["user_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Counts the `m.room.message` events of `sender` visible to `viewer` in a room.
async fn count_messages(viewer: &Client, room_id: &str, sender: &str) -> usize {
    let (status, body) =
        viewer.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", encode(room_id))).await;
    assert_eq!(status, StatusCode::OK, "messages: {body}");
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .count()
}

#[tokio::test]
async fn request_limits_messages_until_accepted() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let (status, body) = create_dm(&alice, &bob).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let room = body["room_id"].as_str().unwrap().to_owned();

        let incoming = pending(&bob).await;
        assert_eq!(incoming["incoming"][0]["user_id"], alice.user_id, "{backend:?}");
        assert_eq!(incoming["incoming"][0]["room_id"], room);
        let outgoing = pending(&alice).await;
        assert_eq!(outgoing["outgoing"][0]["user_id"], bob.user_id);
        assert_eq!(outgoing["incoming"], json!([]));

        alice.send_text(&room, "hello, we met at the conference").await;
        let second = send_message(&alice, &room, "are you there?").await;
        assert_error(&second, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(second.1["error"].as_str().unwrap().contains("not accepted"), "{}", second.1);
        assert_eq!(count_messages(&alice, &room, &alice.user_id).await, 1);

        bob.join(&room).await;
        alice.send_text(&room, "thanks for connecting").await;
        bob.send_text(&room, "likewise").await;

        let (status, list) = alice.get(&format!("{PREFIX}/connections")).await;
        assert_eq!(status, StatusCode::OK);
        let connection = &list["connections"][0];
        assert_eq!(connection["user_id"], bob.user_id);
        assert_eq!(connection["room_id"], room);
        assert!(connection["since"].as_i64().unwrap() > 0, "{list}");
        assert_eq!(connection_ids(&bob).await, vec![alice.user_id.clone()]);
        assert_eq!(pending(&bob).await["incoming"], json!([]));
        server.stop().await;
    }
}

#[tokio::test]
async fn invite_needs_connection() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;

        let group = alice.create_room(json!({ "name": "project" })).await;
        let rejected = invite(&alice, &group, &bob.user_id).await;
        assert_error(&rejected, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(rejected.1["error"].as_str().unwrap().contains("not one of your connections"), "{}", rejected.1);

        let before = joined_rooms(&alice).await;
        let group_create =
            alice.post("/_matrix/client/v3/createRoom", json!({ "invite": [bob.user_id, carol.user_id] })).await;
        assert_error(&group_create, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}: a rejected createRoom left a room");
        let sync = bob.sync("").await;
        let invites = sync["rooms"]["invite"].as_object();
        assert!(invites.is_none_or(|rooms| rooms.is_empty()), "bob got an invite: {sync}");

        // A direct room without is_direct is not a connection request.
        let not_direct = alice.post("/_matrix/client/v3/createRoom", json!({ "invite": [bob.user_id] })).await;
        assert_error(&not_direct, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        connect(&alice, &bob).await;
        let (status, body) = invite(&alice, &group, &bob.user_id).await;
        assert_eq!(status, StatusCode::OK, "inviting a connection: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn group_size_is_limited() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        let eve = server.register("eve").await;
        for other in [&bob, &carol, &dave] {
            connect(&alice, other).await;
        }

        let before = joined_rooms(&alice).await;
        let too_many = alice
            .post("/_matrix/client/v3/createRoom", json!({ "invite": [bob.user_id, carol.user_id, dave.user_id] }))
            .await;
        assert_error(&too_many, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(too_many.1["error"].as_str().unwrap().contains("at most 3"), "{}", too_many.1);
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}: a rejected createRoom left a room");

        let group = alice.create_room(json!({ "preset": "public_chat", "invite": [bob.user_id, carol.user_id] })).await;
        let over = invite(&alice, &group, &dave.user_id).await;
        assert_error(&over, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(over.1["error"].as_str().unwrap().contains("at most 3"), "{}", over.1);

        let join = eve.post(&format!("/_matrix/client/v3/join/{}", encode(&group)), json!({})).await;
        assert_error(&join, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(join.1["error"].as_str().unwrap().contains("at most 3"), "{}", join.1);
        assert!(!joined_rooms(&eve).await.contains(&group));

        // An invited member joining does not grow the group.
        bob.join(&group).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn note_longer_than_300_rejected() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let before = joined_rooms(&alice).await;
        let long =
            alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": bob.user_id, "note": "a".repeat(301) })).await;
        assert_error(&long, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        assert!(long.1["error"].as_str().unwrap().starts_with("note "), "{}", long.1);
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}");
        assert_eq!(pending(&bob).await["incoming"], json!([]));

        let note = "é".repeat(300);
        let (status, body) =
            alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": bob.user_id, "note": note })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(pending(&bob).await["incoming"][0]["note"], note);
        server.stop().await;
    }
}

#[tokio::test]
async fn request_to_unknown_user_not_found() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;

        let before = joined_rooms(&alice).await;
        let response = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": "@nobody:localhost" })).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let message = response.1["error"].as_str().unwrap_or_default();
        assert!(message.contains("@nobody:localhost"), "{backend:?}: the message names the user: {message}");
        assert_eq!(joined_rooms(&alice).await, before, "{backend:?}: no room is left behind");
        let (status, body) = alice.get(&format!("{PREFIX}/requests")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["outgoing"], json!([]), "{backend:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn one_pending_request_per_pair() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let (status, body) = create_dm(&alice, &bob).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let alice_rooms = joined_rooms(&alice).await;
        let bob_rooms = joined_rooms(&bob).await;

        let again = create_dm(&alice, &bob).await;
        assert_error(&again, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(again.1["error"].as_str().unwrap().contains("pending connection request"), "{}", again.1);

        let reverse = create_dm(&bob, &alice).await;
        assert_error(&reverse, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(reverse.1["error"].as_str().unwrap().contains("accept it instead"), "{}", reverse.1);

        assert_eq!(joined_rooms(&alice).await, alice_rooms, "{backend:?}");
        assert_eq!(joined_rooms(&bob).await, bob_rooms);
        assert_eq!(pending(&alice).await["outgoing"].as_array().unwrap().len(), 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn left_requester_withdraws_request() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;

        let (_, body) = create_dm(&alice, &bob).await;
        let room = body["room_id"].as_str().unwrap().to_owned();
        let before = bob.sync("").await;
        assert!(before["rooms"]["invite"][&room].is_object(), "{backend:?}: invite not listed: {before}");
        let since = before["next_batch"].as_str().unwrap().to_owned();
        let (status, body) = alice.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&room)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // The invite is retracted: bob's next sync moves the room from invite to leave.
        let after = bob.sync(&format!("since={since}&timeout=0")).await;
        assert_eq!(after["rooms"]["invite"][&room], Value::Null, "{backend:?}: invite still listed: {after}");
        assert!(after["rooms"]["leave"][&room].is_object(), "{backend:?}: room not under leave: {after}");
        let leave_events = after["rooms"]["leave"][&room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        let own_leave = leave_events
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id)
            .unwrap_or_else(|| panic!("{backend:?}: bob's leave event missing from the leave timeline: {after}"));
        assert_eq!(own_leave["content"]["membership"], "leave", "{backend:?}");
        assert!(
            own_leave["content"]["reason"].as_str().is_some_and(|r| r.contains("withdrew")),
            "{backend:?}: the leave event carries no withdrawal reason: {own_leave}"
        );
        let initial = bob.sync("").await;
        assert_eq!(initial["rooms"]["invite"][&room], Value::Null, "{backend:?}: invite in initial sync: {initial}");

        let join = bob.post(&format!("/_matrix/client/v3/join/{}", encode(&room)), json!({})).await;
        assert_error(&join, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(join.1["error"].as_str().unwrap().contains("withdrew"), "{}", join.1);
        assert!(!joined_rooms(&bob).await.contains(&room), "{backend:?}");
        assert_eq!(pending(&bob).await["incoming"], json!([]));
        assert!(connection_ids(&bob).await.is_empty());

        // The withdrawn request no longer blocks a new one.
        let (status, body) = create_dm(&alice, &bob).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn request_endpoints_round_trip() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;

        // Send and accept.
        let (status, sent) =
            alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": bob.user_id, "note": "hello bob" })).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        let room = sent["room_id"].as_str().unwrap().to_owned();
        let incoming = pending(&bob).await;
        assert_eq!(incoming["incoming"][0]["note"], "hello bob", "{backend:?}");
        assert_eq!(incoming["incoming"][0]["requested_ts"].as_i64().map(|ts| ts > 0), Some(true));

        let not_mine = alice.post(&format!("{PREFIX}/requests/{}/accept", encode(&room)), json!({})).await;
        assert_error(&not_mine, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (status, body) = bob.post(&format!("{PREFIX}/requests/{}/accept", encode(&room)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room);
        assert_eq!(connection_ids(&alice).await, vec![bob.user_id.clone()]);

        // Both sides see the room as a direct chat with the other in `m.direct`.
        let (_, alice_direct) =
            alice.get(&format!("/_matrix/client/v3/user/{}/account_data/m.direct", encode(&alice.user_id))).await;
        assert_eq!(alice_direct, json!({ bob.user_id.clone(): [room.clone()] }), "{backend:?}");
        let (_, bob_direct) =
            bob.get(&format!("/_matrix/client/v3/user/{}/account_data/m.direct", encode(&bob.user_id))).await;
        assert_eq!(bob_direct, json!({ alice.user_id.clone(): [room.clone()] }), "{backend:?}");

        let again = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": bob.user_id })).await;
        assert_error(&again, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // Remove: both sides lose the connection, the room's history stays.
        let (status, body) = bob
            .request(reqwest::Method::DELETE, &format!("{PREFIX}/connections/{}", encode(&alice.user_id)), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(connection_ids(&alice).await.is_empty());
        assert!(connection_ids(&bob).await.is_empty());
        assert!(joined_rooms(&alice).await.contains(&room));
        let removed_again = bob
            .request(reqwest::Method::DELETE, &format!("{PREFIX}/connections/{}", encode(&alice.user_id)), None)
            .await;
        assert_error(&removed_again, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Decline.
        let (_, sent) = carol.post(&format!("{PREFIX}/requests"), json!({ "user_id": alice.user_id })).await;
        let declined_room = sent["room_id"].as_str().unwrap().to_owned();
        let (status, body) =
            alice.post(&format!("{PREFIX}/requests/{}/decline", encode(&declined_room)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(pending(&carol).await["outgoing"], json!([]));
        let late = alice.post(&format!("{PREFIX}/requests/{}/accept", encode(&declined_room)), json!({})).await;
        assert_error(&late, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Withdraw: the invite disappears for the invitee and cannot be accepted.
        let (_, sent) = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": carol.user_id })).await;
        let withdrawn_room = sent["room_id"].as_str().unwrap().to_owned();
        let (status, body) =
            alice.post(&format!("{PREFIX}/requests/{}/withdraw", encode(&withdrawn_room)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(pending(&carol).await["incoming"], json!([]));
        let sync = carol.sync("").await;
        assert_eq!(sync["rooms"]["invite"][&withdrawn_room], Value::Null, "invite still listed: {sync}");
        let accept = carol.post(&format!("{PREFIX}/requests/{}/accept", encode(&withdrawn_room)), json!({})).await;
        assert_error(&accept, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        let own = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": alice.user_id })).await;
        assert_error(&own, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let bad_user = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": "not a user" })).await;
        assert_error(&bad_user, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let anonymous = server.client().get(&format!("{PREFIX}/connections")).await;
        assert_error(&anonymous, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn degree_counts_mutual_connections() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        connect(&alice, &bob).await;
        connect(&bob, &carol).await;

        let degree = |user: String| {
            let alice = alice.clone();
            async move {
                let (status, body) = alice.get(&format!("{PREFIX}/degree/{}", encode(&user))).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body
            }
        };
        let first = degree(bob.user_id.clone()).await;
        assert_eq!(first["degree"], 1, "{backend:?}: {first}");
        let second = degree(carol.user_id.clone()).await;
        assert_eq!(second["degree"], 2, "{second}");
        assert_eq!(second["mutual_connections"], json!([bob.user_id]));
        let third = degree(dave.user_id.clone()).await;
        assert_eq!(third["degree"], 3, "{third}");
        assert_eq!(third["mutual_connections"], json!([]));

        let own = alice.get(&format!("{PREFIX}/degree/{}", encode(&alice.user_id))).await;
        assert_error(&own, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn directory_lists_connections_first() {
    for backend in backends() {
        let server = start(&backend, |c| c.directory.search_all_users = true).await;
        let alice = server.register("alice").await;
        let mut members = Vec::new();
        for localpart in ["member-a", "member-b", "member-c", "member-d", "member-e", "member-f"] {
            members.push(server.register(localpart).await);
        }
        let [a, b, c, d, e, f] = &members[..] else { unreachable!() };
        // b and d are alice's connections; c and e are connections of theirs; a and f are strangers.
        connect(&alice, b).await;
        connect(d, &alice).await;
        connect(b, c).await;
        connect(e, d).await;
        // A pending request does not make a connection.
        let (status, body) = create_dm(&alice, f).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let search = |limit: u64| {
            let alice = alice.clone();
            async move {
                let (status, body) = alice
                    .post(
                        "/_matrix/client/v3/user_directory/search",
                        json!({ "search_term": "member", "limit": limit }),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                body
            }
        };
        let ids = |body: &Value| -> Vec<String> {
            body["results"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect()
        };
        let all = search(10).await;
        let expected: Vec<String> = [b, d, c, e, a, f].iter().map(|u| u.user_id.clone()).collect();
        assert_eq!(ids(&all), expected, "{backend:?}: {all}");
        assert_eq!(all["limited"], false);

        // The limit applies after the ranking, so connections are never cut for strangers.
        let top = search(3).await;
        assert_eq!(ids(&top), expected[..3].to_vec(), "{backend:?}: {top}");
        assert_eq!(top["limited"], true);
        server.stop().await;
    }
}

#[tokio::test]
async fn daily_message_limit_applies() {
    for backend in backends() {
        let server = start(&backend, |c| c.policy.daily_message_limit = 3).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = connect(&alice, &bob).await;
        for text in ["one", "two", "three"] {
            alice.send_text(&room, text).await;
        }

        let over = send_message(&alice, &room, "four").await;
        assert_error(&over, StatusCode::FORBIDDEN, "DEV.LATTICE.LIMIT_EXCEEDED");
        assert_eq!(over.1["limit"], 3, "{backend:?}: {}", over.1);
        let retry = over.1["retry_after_ms"].as_i64().expect("retry_after_ms");
        assert!(retry > 0, "retry_after_ms {retry}");
        assert!(retry <= DAY_MS, "retry_after_ms {retry}");
        assert_eq!(count_messages(&bob, &room, &alice.user_id).await, 3);

        // The limit is per sender: bob still can write.
        bob.send_text(&room, "hi").await;
        server.stop().await;
    }
}

#[tokio::test]
async fn weekly_request_limit_applies() {
    for backend in backends() {
        let server = start(&backend, |c| c.policy.weekly_connection_request_limit = 2).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        for other in [&bob, &carol] {
            let (status, body) = create_dm(&alice, other).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let before = joined_rooms(&alice).await;

        let over = create_dm(&alice, &dave).await;
        assert_error(&over, StatusCode::FORBIDDEN, "DEV.LATTICE.LIMIT_EXCEEDED");
        assert_eq!(over.1["limit"], 2, "{backend:?}: {}", over.1);
        let retry = over.1["retry_after_ms"].as_i64().expect("retry_after_ms");
        assert!(retry > 0, "retry_after_ms {retry}");
        assert!(retry <= 7 * DAY_MS, "retry_after_ms {retry}");
        assert_eq!(joined_rooms(&alice).await, before);
        assert_eq!(pending(&dave).await["incoming"], json!([]));

        let over_endpoint = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": dave.user_id })).await;
        assert_error(&over_endpoint, StatusCode::FORBIDDEN, "DEV.LATTICE.LIMIT_EXCEEDED");
        server.stop().await;
    }
}

#[tokio::test]
async fn metrics_match_scripted_history() {
    for backend in backends() {
        let server = start(&backend, |_| {}).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        let frank = server.register("frank").await;
        let started = lattice::storage::now_ms();

        // Alice's requests: bob accepts, carol declines, dave does not reply.
        let (_, sent) = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": bob.user_id })).await;
        let bob_room = sent["room_id"].as_str().unwrap().to_owned();
        alice.send_text(&bob_room, "hello bob").await;
        bob.join(&bob_room).await;
        bob.send_text(&bob_room, "hi alice").await;

        let (_, sent) = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": carol.user_id })).await;
        let carol_room = sent["room_id"].as_str().unwrap().to_owned();
        carol.post(&format!("{PREFIX}/requests/{}/decline", encode(&carol_room)), json!({})).await;
        let (status, body) = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": dave.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Frank's request to alice, accepted and replied to by alice.
        let (_, sent) = frank.post(&format!("{PREFIX}/requests"), json!({ "user_id": alice.user_id })).await;
        let frank_room = sent["room_id"].as_str().unwrap().to_owned();
        frank.send_text(&frank_room, "hello alice").await;
        alice.post(&format!("{PREFIX}/requests/{}/accept", encode(&frank_room)), json!({})).await;
        alice.send_text(&frank_room, "hello frank").await;
        let finished = lattice::storage::now_ms();

        let (status, metrics) = alice.get(&format!("{PREFIX}/metrics?from={started}&to={}", finished + 1)).await;
        assert_eq!(status, StatusCode::OK, "{metrics}");
        assert_eq!(metrics["requests_sent"], 3, "{backend:?}: {metrics}");
        assert_eq!(metrics["requests_accepted"], 1);
        assert_eq!(metrics["requests_declined"], 1);
        assert_eq!(metrics["requests_pending"], 1);
        assert_eq!(metrics["requests_withdrawn"], 0);
        let rate = metrics["acceptance_rate"].as_f64().expect("acceptance_rate");
        assert!((rate - 1.0 / 3.0).abs() < 1e-9, "acceptance_rate {rate}");
        assert_eq!(metrics["conversations_started"], 1);
        assert_eq!(metrics["conversations_received"], 1);
        assert_eq!(metrics["answered_within_24h"], 1.0);
        assert_eq!(metrics["answered_within_7d"], 1.0);
        let median = metrics["median_first_reply_ms"].as_i64().expect("median_first_reply_ms");
        assert!((0..=finished - started).contains(&median), "median {median}");

        let (_, bob_metrics) = bob.get(&format!("{PREFIX}/metrics")).await;
        assert_eq!(bob_metrics["requests_sent"], 0, "{bob_metrics}");
        assert_eq!(bob_metrics["acceptance_rate"], Value::Null);
        assert_eq!(bob_metrics["conversations_received"], 1);
        assert_eq!(bob_metrics["answered_within_24h"], 1.0);

        let later = finished + DAY_MS;
        let (_, empty) = alice.get(&format!("{PREFIX}/metrics?from={later}&to={}", later + DAY_MS)).await;
        assert_eq!(empty["requests_sent"], 0, "{empty}");
        assert_eq!(empty["conversations_received"], 0);
        assert_eq!(empty["median_first_reply_ms"], Value::Null);

        let backwards = alice.get(&format!("{PREFIX}/metrics?from=10&to=5")).await;
        assert_error(&backwards, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let not_a_number = alice.get(&format!("{PREFIX}/metrics?from=yesterday")).await;
        assert_error(&not_a_number, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn open_policy_allows_any_invite() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let group = alice.create_room(json!({ "name": "open group" })).await;
        let (status, body) = invite(&alice, &group, &bob.user_id).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");

        // The index is kept under every policy.
        connect(&alice, &bob).await;
        assert_eq!(connection_ids(&alice).await, vec![bob.user_id.clone()]);
        server.stop().await;
    }
}

#[tokio::test]
async fn index_rebuilt_at_startup() {
    for backend in backends() {
        let data = tempfile::tempdir().expect("temporary directory");
        let data_dir = data.path().to_path_buf();
        let mut database_url = String::new();
        let server = start(&backend, |c| {
            c.data_dir = data_dir.clone();
            database_url = c.database_url();
        })
        .await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let room = connect(&alice, &bob).await;
        let (status, body) = create_dm(&alice, &carol).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let database = server.stop().await;

        // Empty the index and ask for a rebuild, as after upgrading a database
        // that held rooms before the index existed.
        let db = lattice::storage::Db::open(&database_url, 1).await.expect("open the database");
        sqlx::raw_sql("DELETE FROM connection_rooms; INSERT INTO connection_index_rebuild (requested_ts) VALUES (0)")
            .execute(&db.pool)
            .await
            .expect("reset the index");
        db.close().await;

        let mut server = start(&backend, |c| {
            c.data_dir = data_dir.clone();
            c.database.url = database_url.clone();
        })
        .await;
        server.adopt_database(database);
        let mut alice = alice;
        alice.base = server.base.clone();
        let mut carol = carol;
        carol.base = server.base.clone();
        let (status, list) = alice.get(&format!("{PREFIX}/connections")).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["connections"][0]["user_id"], bob.user_id, "{backend:?}: {list}");
        assert_eq!(list["connections"][0]["room_id"], room);
        assert_eq!(pending(&carol).await["incoming"][0]["user_id"], alice.user_id);
        server.stop().await;
    }
}

/// Reads the `origin_server_ts` of an event as `viewer`.
async fn event_ts(viewer: &Client, room_id: &str, event_id: &str) -> i64 {
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(room_id), encode(event_id));
    let (status, event) = viewer.get(&path).await;
    assert_eq!(status, StatusCode::OK, "event {event_id}: {event}");
    event["origin_server_ts"].as_i64().expect("origin_server_ts")
}

#[tokio::test]
async fn metrics_survive_restart_and_migration() {
    for backend in backends() {
        let data = tempfile::tempdir().expect("temporary directory");
        let data_dir = data.path().to_path_buf();
        let mut database_url = String::new();
        let server = start(&backend, |c| {
            c.data_dir = data_dir.clone();
            database_url = c.database_url();
        })
        .await;
        let mut alice = server.register("alice").await;
        let mut bob = server.register("bob").await;
        let mut carol = server.register("carol").await;
        let mut frank = server.register("frank").await;
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));

        // Frank and bob each send alice a request with a first message. Alice
        // accepts both but replies to neither before the restart. Alice opens
        // a conversation with carol, who replies.
        let (_, sent) = frank.post(&format!("{PREFIX}/requests"), json!({ "user_id": alice.user_id })).await;
        let frank_room = sent["room_id"].as_str().unwrap().to_owned();
        let frank_first = frank.send_text(&frank_room, "hello alice").await;
        alice.post(&format!("{PREFIX}/requests/{}/accept", encode(&frank_room)), json!({})).await;
        pause().await;
        let (_, sent) = bob.post(&format!("{PREFIX}/requests"), json!({ "user_id": alice.user_id })).await;
        let bob_room = sent["room_id"].as_str().unwrap().to_owned();
        let bob_first = bob.send_text(&bob_room, "hello from bob").await;
        alice.post(&format!("{PREFIX}/requests/{}/accept", encode(&bob_room)), json!({})).await;
        let (_, sent) = alice.post(&format!("{PREFIX}/requests"), json!({ "user_id": carol.user_id })).await;
        let carol_room = sent["room_id"].as_str().unwrap().to_owned();
        let alice_first = alice.send_text(&carol_room, "hello carol").await;
        carol.join(&carol_room).await;
        let carol_reply = carol.send_text(&carol_room, "hi alice").await;

        // After a restart, alice replies to frank twice. Only the first reply counts.
        let server = server.restart().await;
        for client in [&mut alice, &mut bob, &mut carol, &mut frank] {
            client.base = server.base.clone();
        }
        pause().await;
        let alice_reply = alice.send_text(&frank_room, "hello frank").await;
        alice.send_text(&frank_room, "how are you?").await;

        let frank_ts = event_ts(&alice, &frank_room, &frank_first).await;
        let bob_ts = event_ts(&alice, &bob_room, &bob_first).await;
        let alice_reply_ts = event_ts(&alice, &frank_room, &alice_reply).await;
        let alice_first_ts = event_ts(&carol, &carol_room, &alice_first).await;
        let carol_reply_ts = event_ts(&carol, &carol_room, &carol_reply).await;

        let to = lattice::storage::now_ms() + DAY_MS;
        let read = |client: &Client, query: String| {
            let client = client.clone();
            async move {
                let (status, metrics) = client.get(&format!("{PREFIX}/metrics{query}")).await;
                assert_eq!(status, StatusCode::OK, "{metrics}");
                metrics
            }
        };
        let check = |alice_all: &Value, alice_late: &Value, carol_all: &Value| {
            assert_eq!(alice_all["conversations_started"], 1, "{backend:?}: {alice_all}");
            assert_eq!(alice_all["conversations_received"], 2, "{alice_all}");
            assert_eq!(alice_all["answered_within_24h"], 0.5, "{alice_all}");
            assert_eq!(alice_all["answered_within_7d"], 0.5, "{alice_all}");
            assert_eq!(alice_all["median_first_reply_ms"], alice_reply_ts - frank_ts, "{alice_all}");
            // From bob's first message on, frank's conversation falls outside the period.
            assert_eq!(alice_late["conversations_started"], 1, "{alice_late}");
            assert_eq!(alice_late["conversations_received"], 1, "{alice_late}");
            assert_eq!(alice_late["answered_within_24h"], 0.0, "{alice_late}");
            assert_eq!(alice_late["median_first_reply_ms"], Value::Null, "{alice_late}");
            assert_eq!(carol_all["conversations_started"], 0, "{carol_all}");
            assert_eq!(carol_all["conversations_received"], 1, "{carol_all}");
            assert_eq!(carol_all["answered_within_24h"], 1.0, "{carol_all}");
            assert_eq!(carol_all["median_first_reply_ms"], carol_reply_ts - alice_first_ts, "{carol_all}");
        };
        let alice_all = read(&alice, format!("?to={to}")).await;
        let alice_late = read(&alice, format!("?from={bob_ts}&to={to}")).await;
        let carol_all = read(&carol, format!("?to={to}")).await;
        check(&alice_all, &alice_late, &carol_all);
        let database = server.stop().await;

        // Drop the metrics tables and undo their migration, as on a database
        // from before it. The migration then fills them from the stored events.
        let db = lattice::storage::Db::open(&database_url, 1).await.expect("open the database");
        sqlx::raw_sql(
            "DROP TABLE conversation_starts; DROP TABLE conversation_senders; \
             DELETE FROM schema_migrations WHERE name = 'conversations'",
        )
        .execute(&db.pool)
        .await
        .expect("undo the conversations migration");
        db.close().await;

        let mut server = start(&backend, |c| {
            c.data_dir = data_dir.clone();
            c.database.url = database_url.clone();
        })
        .await;
        server.adopt_database(database);
        for client in [&mut alice, &mut carol] {
            client.base = server.base.clone();
        }
        let rebuilt = (
            read(&alice, format!("?to={to}")).await,
            read(&alice, format!("?from={bob_ts}&to={to}")).await,
            read(&carol, format!("?to={to}")).await,
        );
        check(&rebuilt.0, &rebuilt.1, &rebuilt.2);
        assert_eq!(rebuilt, (alice_all, alice_late, carol_all), "{backend:?}: metrics differ after the migration");
        server.stop().await;
    }
}
