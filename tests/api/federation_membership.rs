//! Membership across servers: invites in both directions, joins through a
//! resident server, rejecting invites, leaves, kicks and bans, and the
//! professional policy on inbound invites. Two or three Lattice servers
//! federate over TLS on 127.0.0.1; every assertion reads what a user sees
//! in `/sync` or the room state.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestCa, TestServer, assert_error, backends, encode};

const A: &str = "a.lattice.test";
const B: &str = "b.lattice.test";
const C: &str = "c.lattice.test";
const CONNECTIONS: &str = "/_matrix/client/unstable/dev.lattice.connections";

/// Syncs from `since` until `done` holds for a response, and returns that
/// response. Fails the test after 20 seconds.
async fn sync_until(client: &Client, since: Option<&str>, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut token = since.map(str::to_owned);
    loop {
        let query = match &token {
            Some(token) => format!("timeout=500&since={token}"),
            None => "timeout=0".to_owned(),
        };
        let body = client.sync(&query).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last sync: {body}");
        if since.is_some() {
            token = body["next_batch"].as_str().map(str::to_owned);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Returns whether a `/sync` response shows `body` as a message in the joined room.
fn has_message(sync: &Value, room_id: &str, body: &str) -> bool {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["type"] == "m.room.message" && e["content"]["body"] == body))
}

fn invite_state<'a>(sync: &'a Value, room_id: &str) -> Option<&'a Vec<Value>> {
    sync["rooms"]["invite"][room_id]["invite_state"]["events"].as_array()
}

/// Reads the content of a user's member event in the room through `client`'s server.
async fn member(client: &Client, room_id: &str, user_id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(room_id), encode(user_id));
    let (status, body) = client.get(&path).await;
    assert_eq!(status, StatusCode::OK, "member event of {user_id}: {body}");
    body
}

async fn join_path(client: &Client, path: &str) -> (StatusCode, Value) {
    client.post(path, json!({})).await
}

#[tokio::test]
async fn direct_invite_accepted_across_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B], |_| {}).await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;

        let room_id = alice
            .create_room(json!({
                "preset": "trusted_private_chat",
                "is_direct": true,
                "invite": [bob.user_id],
            }))
            .await;

        // Bob's server countersigned the invite and shows it with the room's stripped state.
        let sync = sync_until(&bob, None, "the invite", |s| invite_state(s, &room_id).is_some()).await;
        let events = invite_state(&sync, &room_id).unwrap();
        assert!(events.iter().any(|e| e["type"] == "m.room.create" && e["sender"] == alice.user_id), "{events:?}");
        assert!(events.iter().any(|e| e["type"] == "m.room.join_rules"), "{events:?}");
        // The inviting server sends full PDUs; clients get their stripped form.
        assert!(events.iter().all(|e| e.get("signatures").is_none()), "{events:?}");
        assert!(events.iter().all(|e| e.get("hashes").is_none()), "{events:?}");
        let own = events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id).unwrap();
        assert_eq!(own["content"]["membership"], "invite");
        assert_eq!(own["content"]["is_direct"], true);
        assert_eq!(own["sender"], alice.user_id);
        let inviter = events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id);
        assert_eq!(inviter.unwrap()["content"]["membership"], "join");
        // On a, the invite is part of the room state.
        let invite = member(&alice, &room_id, &bob.user_id).await;
        assert_eq!(invite["membership"], "invite");

        // Bob joins without naming a server: his server goes through the inviter's.
        let (status, body) = join_path(&bob, &format!("/_matrix/client/v3/join/{}", encode(&room_id))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room_id);
        let sync = sync_until(&bob, None, "the joined room", |s| s["rooms"]["join"][&room_id].is_object()).await;
        assert!(sync["rooms"]["invite"][&room_id].is_null(), "the invite is gone once joined");
        assert_eq!(member(&bob, &room_id, &alice.user_id).await["membership"], "join");
        assert_eq!(member(&alice, &room_id, &bob.user_id).await["membership"], "join");

        // Messages both ways.
        alice.send_text(&room_id, "hello bob").await;
        sync_until(&bob, None, "alice's message on b", |s| has_message(s, &room_id, "hello bob")).await;
        bob.send_text(&room_id, "hello alice").await;
        sync_until(&alice, None, "bob's message on a", |s| has_message(s, &room_id, "hello alice")).await;
        let sync = bob.sync("").await;
        let timeline = &sync["rooms"]["join"][&room_id]["timeline"]["events"];
        let bodies: Vec<&str> = timeline
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, vec!["hello bob", "hello alice"], "bob's timeline in order");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn group_room_joined_by_id_and_alias() {
    for backend in backends() {
        for version in ["10", "11", "12"] {
            let ca = TestCa::new();
            let mut servers = TestServer::start_federated(&backend, &ca, &[A, B, C], |_| {}).await;
            let c = servers.pop().expect("server c");
            let b = servers.pop().expect("server b");
            let a = servers.pop().expect("server a");
            let alice = a.register("alice").await;
            let bob = b.register("bob").await;
            let carol = c.register("carol").await;
            let room_id = alice
                .create_room(json!({
                    "preset": "public_chat",
                    "room_alias_name": "lobby",
                    "name": "Lobby",
                    "room_version": version,
                }))
                .await;

            // Without a server to go through, a room unknown here cannot be joined.
            if version == "12" {
                let response = join_path(&bob, &format!("/_matrix/client/v3/join/{}", encode(&room_id))).await;
                assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
            }
            let path = format!("/_matrix/client/v3/join/{}?via={A}", encode(&room_id));
            let (status, body) = join_path(&bob, &path).await;
            assert_eq!(status, StatusCode::OK, "room version {version}: {body}");
            let alias = format!("#lobby:{A}");
            let (status, body) = join_path(&carol, &format!("/_matrix/client/v3/join/{}", encode(&alias))).await;
            assert_eq!(status, StatusCode::OK, "room version {version}: {body}");
            assert_eq!(body["room_id"], room_id);

            // Carol's server has the room's state: the name, and all three members.
            let sync = sync_until(&carol, None, "the room on c", |s| s["rooms"]["join"][&room_id].is_object()).await;
            let section = &sync["rooms"]["join"][&room_id];
            let all: Vec<&Value> = section["state"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .chain(section["timeline"]["events"].as_array().unwrap())
                .collect();
            assert!(all.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Lobby"), "{section}");
            let (status, members) =
                carol.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", encode(&room_id))).await;
            assert_eq!(status, StatusCode::OK, "{members}");
            let mut joined: Vec<&String> = members["joined"].as_object().unwrap().keys().collect();
            joined.sort();
            assert_eq!(joined, vec![&alice.user_id, &bob.user_id, &carol.user_id]);

            // Messages from each server reach the other two. Each waits for the
            // one before it, because a PDU whose previous event has not arrived
            // yet is rejected (missing events are not fetched).
            let clients = [(&alice, "from a"), (&carol, "from c"), (&bob, "from b")];
            for (sender, text) in clients {
                sender.send_text(&room_id, text).await;
                for (reader, _) in clients.iter().filter(|(reader, _)| reader.user_id != sender.user_id) {
                    sync_until(reader, None, text, |s| has_message(s, &room_id, text)).await;
                }
            }
            a.stop().await;
            b.stop().await;
            c.stop().await;
        }
    }
}

#[tokio::test]
async fn invite_rejected_remotely_and_locally() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B], |_| {}).await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let first = alice.create_room(json!({ "preset": "private_chat", "name": "First" })).await;
        let second = alice.create_room(json!({ "preset": "private_chat", "name": "Second" })).await;
        for room_id in [&first, &second] {
            let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(room_id));
            let (status, body) = alice.post(&path, json!({ "user_id": bob.user_id, "reason": "join us" })).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let sync = sync_until(&bob, None, "both invites", |s| {
            invite_state(s, &first).is_some() && invite_state(s, &second).is_some()
        })
        .await;
        let events = invite_state(&sync, &first).unwrap();
        let own = events.iter().find(|e| e["state_key"] == bob.user_id).unwrap();
        assert_eq!(own["content"]["reason"], "join us");
        assert!(events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "First"));
        let since = sync["next_batch"].as_str().unwrap().to_owned();

        // Rejected through a: alice sees bob's leave.
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(&first));
        let (status, body) = bob.post(&path, json!({ "reason": "not now" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let left = member(&alice, &first, &bob.user_id).await;
        assert_eq!(left["membership"], "leave");
        assert_eq!(left["reason"], "not now");
        let sync = sync_until(&bob, Some(&since), "the rejection", |s| s["rooms"]["leave"][&first].is_object()).await;
        assert!(sync["rooms"]["invite"][&first].is_null(), "{sync}");
        let full = bob.sync("").await;
        assert!(full["rooms"]["invite"][&first].is_null(), "the rejected invite is gone: {full}");
        assert!(full["rooms"]["invite"][&second].is_object(), "the other invite stays: {full}");

        // With a down, the invite is still rejected on b.
        a.stop().await;
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(&second));
        let (status, body) = bob.post(&path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let full = bob.sync("").await;
        assert!(full["rooms"]["invite"].as_object().is_none_or(|rooms| rooms.is_empty()), "{full}");
        b.stop().await;
    }
}

#[tokio::test]
async fn leave_kick_and_ban_across_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B], |_| {}).await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        let join = format!("/_matrix/client/v3/join/{}?server_name={A}", encode(&room_id));
        let (status, body) = join_path(&bob, &join).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Bob leaves: a sees it, and bob gets no more messages.
        let since = bob.sync("").await["next_batch"].as_str().unwrap().to_owned();
        let (status, body) = bob.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&room_id)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        sync_until(&bob, Some(&since), "bob's leave", |s| s["rooms"]["leave"][&room_id].is_object()).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while member(&alice, &room_id, &bob.user_id).await["membership"] != "leave" {
            assert!(Instant::now() < deadline, "a never saw bob's leave");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Bob joins again (his server knows the room already), then alice kicks him.
        let (status, body) = join_path(&bob, &join).await;
        assert_eq!(status, StatusCode::OK, "rejoin: {body}");
        assert_eq!(member(&alice, &room_id, &bob.user_id).await["membership"], "join");
        alice.send_text(&room_id, "welcome back").await;
        let sync =
            sync_until(&bob, None, "the message after the rejoin", |s| has_message(s, &room_id, "welcome back")).await;
        let since = sync["next_batch"].as_str().unwrap().to_owned();
        let path = format!("/_matrix/client/v3/rooms/{}/kick", encode(&room_id));
        let (status, body) = alice.post(&path, json!({ "user_id": bob.user_id, "reason": "cleanup" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sync = sync_until(&bob, Some(&since), "the kick", |s| s["rooms"]["leave"][&room_id].is_object()).await;
        let events = sync["rooms"]["leave"][&room_id]["timeline"]["events"].as_array().unwrap();
        let kick = events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id).unwrap();
        assert_eq!(kick["sender"], alice.user_id);
        assert_eq!(kick["content"]["membership"], "leave");
        assert_eq!(kick["content"]["reason"], "cleanup");

        // A kicked user may come back to a public room; a banned one may not.
        let (status, body) = join_path(&bob, &join).await;
        assert_eq!(status, StatusCode::OK, "join after the kick: {body}");
        let since = bob.sync("").await["next_batch"].as_str().unwrap().to_owned();
        let path = format!("/_matrix/client/v3/rooms/{}/ban", encode(&room_id));
        let (status, body) = alice.post(&path, json!({ "user_id": bob.user_id, "reason": "spam" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sync = sync_until(&bob, Some(&since), "the ban", |s| s["rooms"]["leave"][&room_id].is_object()).await;
        let events = sync["rooms"]["leave"][&room_id]["timeline"]["events"].as_array().unwrap();
        let ban = events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id).unwrap();
        assert_eq!(ban["content"]["membership"], "ban");
        let response = join_path(&bob, &join).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert!(response.1["error"].as_str().unwrap().contains(A), "the error names the server: {}", response.1);
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn professional_policy_on_inbound_invites() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B], |config| {
            if config.server_name == B {
                config.policy.name = "professional".into();
            }
        })
        .await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;

        // A group invite from a non-connection: b rejects it, and a stores nothing.
        let room_id = alice.create_room(json!({ "preset": "private_chat", "name": "Group" })).await;
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id));
        let response = alice.post(&path, json!({ "user_id": bob.user_id })).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let message = response.1["error"].as_str().unwrap();
        assert!(message.contains(B), "the error names the server: {message}");
        assert!(message.contains("connections"), "the error gives the reason: {message}");
        let path =
            format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(&room_id), encode(&bob.user_id));
        assert_error(&alice.get(&path).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let sync = bob.sync("").await;
        assert!(sync["rooms"]["invite"].as_object().is_none_or(|rooms| rooms.is_empty()), "{sync}");

        // A 1:1 direct invite is a connection request and gets through.
        let dm = alice
            .create_room(json!({
                "preset": "trusted_private_chat",
                "is_direct": true,
                "invite": [bob.user_id],
                "name": "Hello",
            }))
            .await;
        let sync = sync_until(&bob, None, "the connection request", |s| invite_state(s, &dm).is_some()).await;
        let own = invite_state(&sync, &dm).unwrap().iter().find(|e| e["state_key"] == bob.user_id).unwrap().clone();
        assert_eq!(own["content"]["is_direct"], true);

        // b counts it as bob's pending request; once bob joins, the two are connected.
        let (status, requests) = bob.get(&format!("{CONNECTIONS}/requests")).await;
        assert_eq!(status, StatusCode::OK, "{requests}");
        assert_eq!(requests["incoming"].as_array().map(Vec::len), Some(1), "{requests}");
        assert_eq!(requests["incoming"][0]["user_id"], alice.user_id);
        assert_eq!(requests["incoming"][0]["room_id"], dm);
        let (status, body) = join_path(&bob, &format!("/_matrix/client/v3/join/{}", encode(&dm))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, requests) = bob.get(&format!("{CONNECTIONS}/requests")).await;
        assert_eq!(status, StatusCode::OK, "{requests}");
        assert_eq!(requests["incoming"], json!([]));
        let (status, connections) = bob.get(&format!("{CONNECTIONS}/connections")).await;
        assert_eq!(status, StatusCode::OK, "{connections}");
        assert_eq!(connections["connections"][0]["user_id"], alice.user_id, "{connections}");

        // Now that they are connected, the group invite gets through.
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id));
        let (status, body) = alice.post(&path, json!({ "user_id": bob.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        sync_until(&bob, None, "the group invite", |s| invite_state(s, &room_id).is_some()).await;
        a.stop().await;
        b.stop().await;
    }
}

/// Builds an invite of `invitee` into a room of `inviter` on `server`, signed by that server.
async fn signed_invite(server: &TestServer, room_id: &str, inviter: &str, invitee: &str) -> (Value, String, String) {
    let rooms = &server.homeserver.services().rooms;
    let room = ruma::RoomId::parse(room_id).unwrap();
    let state = rooms.state(&room).await.unwrap();
    let mut auth: Vec<String> = [("m.room.power_levels", ""), ("m.room.join_rules", ""), ("m.room.member", inviter)]
        .iter()
        .filter_map(|(kind, key)| state.get(&(*kind).into(), key).map(|pdu| pdu.event_id.to_string()))
        .collect();
    auth.sort();
    let value = json!({
        "auth_events": auth,
        "content": { "membership": "invite" },
        "depth": state.depth + 1,
        "origin_server_ts": 1_700_000_000_000_i64,
        "prev_events": state.extremities,
        "room_id": room_id,
        "sender": inviter,
        "state_key": invitee,
        "type": "m.room.member",
    });
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(value).unwrap();
    let key = &server.homeserver.services().key;
    ruma::signatures::hash_and_sign_event(&server.server_name, &key.pair, &mut object, &state.rules.redaction).unwrap();
    let event_id = format!("${}", ruma::signatures::reference_hash(&object, &state.rules).unwrap());
    (serde_json::to_value(&object).unwrap(), event_id, state.version.to_string())
}

#[tokio::test]
async fn bad_invites_get_spec_errors() {
    for backend in backends() {
        let ca = TestCa::new();
        // down.lattice.test points at a closed port on 127.0.0.1.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B], |config| {
            config.federation.host_overrides.insert("down.lattice.test".into(), closed_addr.clone());
        })
        .await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        b.register("bob").await;
        let bob_id = b.user_id("bob");
        let room_id = alice.create_room(json!({ "preset": "private_chat" })).await;
        let federation = &a.homeserver.services().federation;
        let b_name = &ruma::ServerName::parse(B).unwrap();
        let send = |event_id: &str, body: Value, version: &str| {
            let path = format!("/_matrix/federation/{version}/invite/{}/{}", encode(&room_id), encode(event_id));
            async move { federation.send_json(b_name, http::Method::PUT, &path, Some(&body), true).await }
        };

        // An invite of a user who is not b's.
        let (event, event_id, version) = signed_invite(&a, &room_id, &alice.user_id, "@zed:c.lattice.test").await;
        let err = send(&event_id, json!({ "room_version": version, "event": event }), "v2").await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("400"), "{text}");
        assert!(text.contains("M_BAD_JSON"), "{text}");
        assert!(text.contains("state_key"), "the error names the field: {text}");

        // A room version b does not support.
        let (event, event_id, _) = signed_invite(&a, &room_id, &alice.user_id, &bob_id).await;
        let body = json!({ "room_version": "9999", "event": event.clone() });
        let text = send(&event_id, body, "v2").await.unwrap_err().to_string();
        assert!(text.contains("400"), "{text}");
        assert!(text.contains("M_INCOMPATIBLE_ROOM_VERSION"), "{text}");

        // An event id that is not the event's.
        let body = json!({ "room_version": version, "event": event.clone() });
        let text = send("$notthisone", body.clone(), "v2").await.unwrap_err().to_string();
        assert!(text.contains("M_BAD_JSON"), "{text}");
        assert!(text.contains("$notthisone"), "the error names the event id: {text}");

        // Version 1 of the endpoint is not served.
        let text = send(&event_id, body.clone(), "v1").await.unwrap_err().to_string();
        assert!(text.contains("404"), "{text}");
        assert!(text.contains("M_UNRECOGNIZED"), "{text}");

        // The valid invite is countersigned by b.
        let answer = send(&event_id, body, "v2").await.expect("invite accepted");
        assert!(answer["event"]["signatures"][B].is_object(), "{answer}");
        assert!(answer["event"]["signatures"][A].is_object(), "{answer}");

        // A user of an unreachable server: the client learns which, and nothing is stored.
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id));
        let response = alice.post(&path, json!({ "user_id": "@zed:down.lattice.test" })).await;
        assert_eq!(response.0, StatusCode::BAD_GATEWAY, "{}", response.1);
        assert!(response.1["error"].as_str().unwrap().contains("down.lattice.test"), "{}", response.1);
        let (status, _) = alice
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                encode(&room_id),
                encode("@zed:down.lattice.test")
            ))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let before = alice.get("/_matrix/client/v3/joined_rooms").await.1["joined_rooms"].clone();
        let response = alice
            .post("/_matrix/client/v3/createRoom", json!({ "invite": ["@zed:down.lattice.test"], "is_direct": true }))
            .await;
        assert_eq!(response.0, StatusCode::BAD_GATEWAY, "{}", response.1);
        assert!(response.1["error"].as_str().unwrap().contains("down.lattice.test"), "{}", response.1);
        let after = alice.get("/_matrix/client/v3/joined_rooms").await.1["joined_rooms"].clone();
        assert_eq!(before, after, "a refused createRoom leaves no room");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn knocks_across_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, C], |_| {}).await;
        let c = servers.pop().expect("server c");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let carol = c.register("carol").await;
        let dave = c.register("dave").await;
        let knock_rule = json!([{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }]);
        let room_id = alice
            .create_room(json!({
                "room_version": "11",
                "room_alias_name": "knockers",
                "name": "Knock room",
                "initial_state": knock_rule,
            }))
            .await;

        // Carol knocks by alias; her server shows the knock with the room's stripped state.
        let alias = format!("#knockers:{A}");
        let (status, body) =
            carol.post(&format!("/_matrix/client/v3/knock/{}", encode(&alias)), json!({ "reason": "let me in" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room_id);
        let sync = sync_until(&carol, None, "the knock", |s| s["rooms"]["knock"][&room_id].is_object()).await;
        let events = sync["rooms"]["knock"][&room_id]["knock_state"]["events"].as_array().unwrap();
        assert!(
            events.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock room"),
            "{events:?}"
        );
        let own = events.iter().find(|e| e["state_key"] == carol.user_id).unwrap();
        assert_eq!(own["content"]["membership"], "knock");
        let knock = member(&alice, &room_id, &carol.user_id).await;
        assert_eq!(knock["membership"], "knock");
        assert_eq!(knock["reason"], "let me in");

        // Alice answers with an invite, and carol joins.
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(&room_id));
        let (status, body) = alice.post(&path, json!({ "user_id": carol.user_id })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sync = sync_until(&carol, None, "the invite", |s| invite_state(s, &room_id).is_some()).await;
        assert!(sync["rooms"]["knock"][&room_id].is_null(), "the knock ended with the invite: {sync}");
        let (status, body) = join_path(&carol, &format!("/_matrix/client/v3/join/{}", encode(&room_id))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(member(&alice, &room_id, &carol.user_id).await["membership"], "join");

        // Dave knocks on a room version 12 room by id and withdraws the knock.
        let other =
            alice.create_room(json!({ "room_version": "12", "name": "Other", "initial_state": knock_rule })).await;
        let path = format!("/_matrix/client/v3/knock/{}?via={A}", encode(&other));
        let (status, body) = dave.post(&path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(member(&alice, &other, &dave.user_id).await["membership"], "knock");
        let (status, body) = dave.post(&format!("/_matrix/client/v3/rooms/{}/leave", encode(&other)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(member(&alice, &other, &dave.user_id).await["membership"], "leave");
        let sync = dave.sync("").await;
        assert!(sync["rooms"]["knock"][&other].is_null(), "{sync}");

        // Room version 6 has no knocks.
        let old = alice.create_room(json!({ "room_version": "6", "preset": "private_chat" })).await;
        let path = format!("/_matrix/client/v3/knock/{}?via={A}", encode(&old));
        let response = dave.post(&path, json!({})).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION");
        a.stop().await;
        c.stop().await;
    }
}

/// Sets a restricted join rule on `room_id` that allows the members of `allowed`.
async fn restrict(client: &Client, room_id: &str, allowed: &str) {
    let content = json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": allowed }] });
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.join_rules/", encode(room_id));
    let (status, body) = client.put(&path, content).await;
    assert_eq!(status, StatusCode::OK, "restricting {room_id}: {body}");
}

/// Returns the servers that signed a user's current member event, as `server` stores it.
async fn member_signers(server: &TestServer, room_id: &str, user_id: &str) -> Vec<String> {
    let room_id = ruma::RoomId::parse(room_id).unwrap();
    let state = server.homeserver.services().rooms.state(&room_id).await.expect("room state");
    let member = state.get(&ruma::events::StateEventType::RoomMember, user_id).expect("a member event");
    let pdu: Value = serde_json::from_str(&member.json).unwrap();
    let mut signers: Vec<String> = pdu["signatures"].as_object().unwrap().keys().cloned().collect();
    signers.sort();
    signers
}

#[tokio::test]
async fn restricted_room_joined_across_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B, C], |_| {}).await;
        let c = servers.pop().expect("server c");
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let carol = c.register("carol").await;
        let space = alice.create_room(json!({ "preset": "public_chat" })).await;
        let room = alice.create_room(json!({ "preset": "private_chat" })).await;
        restrict(&alice, &room, &space).await;
        let join_room = format!("/_matrix/client/v3/join/{}?via={A}", encode(&room));
        let join_space = format!("/_matrix/client/v3/join/{}?via={A}", encode(&space));

        // Carol of c joins first, so that c is in the room when bob joins.
        for path in [&join_space, &join_room] {
            let (status, body) = join_path(&carol, path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }

        // Bob is in none of the allowed rooms, so a rejects the join.
        let response = join_path(&bob, &join_room).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // Once he is in the allowed room, a names alice in the template and
        // signs the join, and both servers store it with both signatures.
        let (status, body) = join_path(&bob, &join_space).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = join_path(&bob, &join_room).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let on_b = member(&bob, &room, &bob.user_id).await;
        assert_eq!(on_b["membership"], "join", "{on_b}");
        assert_eq!(on_b["join_authorised_via_users_server"], alice.user_id.as_str(), "{on_b}");
        assert_eq!(member(&alice, &room, &bob.user_id).await, on_b);
        assert_eq!(member_signers(&b, &room, &bob.user_id).await, [A, B]);
        assert_eq!(member_signers(&a, &room, &bob.user_id).await, [A, B]);

        // A sent the join to c with its signature, so c accepted it too. The
        // client API shows it once c's write has committed.
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", encode(&room), encode(&bob.user_id));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = carol.get(&path).await;
            if status == StatusCode::OK && body["membership"] == "join" {
                break;
            }
            assert!(Instant::now() < deadline, "c never accepted bob's join: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(member(&carol, &room, &bob.user_id).await, on_b);
        assert_eq!(member_signers(&c, &room, &bob.user_id).await, [A, B]);

        // The room works across both servers.
        alice.send_text(&room, "welcome bob").await;
        sync_until(&bob, None, "alice's message on b", |s| has_message(s, &room, "welcome bob")).await;

        // A room whose allowed room a is not in: a cannot check the condition.
        let unknown = alice.create_room(json!({ "preset": "private_chat" })).await;
        restrict(&alice, &unknown, "!elsewhere:b.lattice.test").await;
        let response = join_path(&bob, &format!("/_matrix/client/v3/join/{}?via={A}", encode(&unknown))).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_UNABLE_TO_AUTHORISE_JOIN");

        // A room in which no user of a may invite (room version 10, where
        // the creator has no power beyond the power levels).
        let closed = alice.create_room(json!({ "preset": "private_chat", "room_version": "10" })).await;
        restrict(&alice, &closed, &space).await;
        let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", encode(&closed));
        let (_, mut levels) = alice.get(&levels_path).await;
        levels["invite"] = json!(100);
        levels["users"][alice.user_id.as_str()] = json!(50);
        let (status, body) = alice.put(&levels_path, levels).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let response = join_path(&bob, &format!("/_matrix/client/v3/join/{}?via={A}", encode(&closed))).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN");
        a.stop().await;
        b.stop().await;
        c.stop().await;
    }
}

/// Builds the join of `user` of `joining` to `room_id` from the template of
/// the resident server `resident` (`make_join`), signed by `joining`, and
/// returns it with the `send_join` v2 path for it and `query` (empty for
/// none). Nothing is stored on `joining`.
async fn signed_join(joining: &TestServer, resident: &str, room_id: &str, user: &str, query: &str) -> (Value, String) {
    let services = joining.homeserver.services();
    let resident = ruma::ServerName::parse(resident).unwrap();
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=10&ver=11&ver=12", encode(room_id), encode(user));
    let template =
        services.federation.send_json(&resident, http::Method::GET, &path, None, true).await.expect("make_join");
    let version = ruma::RoomVersionId::try_from(template["room_version"].as_str().unwrap()).unwrap();
    let rules = lattice::rooms::version::rules(&version).expect("a supported version");
    let mut event = template["event"].clone();
    event["origin_server_ts"] = json!(1_700_000_000_000_i64);
    let mut object: ruma::CanonicalJsonObject = serde_json::from_value(event).unwrap();
    ruma::signatures::hash_and_sign_event(&joining.server_name, &services.key.pair, &mut object, &rules.redaction)
        .unwrap();
    let event_id = format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap());
    let mut path = format!("/_matrix/federation/v2/send_join/{}/{}", encode(room_id), encode(&event_id));
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    (serde_json::to_value(&object).unwrap(), path)
}

/// Joins `user` of `joining` through `resident` with [`signed_join`] and
/// returns the join and the `send_join` response.
async fn raw_join(joining: &TestServer, resident: &str, room_id: &str, user: &str, query: &str) -> (Value, Value) {
    let (join, path) = signed_join(joining, resident, room_id, user, query).await;
    let federation = &joining.homeserver.services().federation;
    let resident = ruma::ServerName::parse(resident).unwrap();
    let answer = federation.send_json(&resident, http::Method::PUT, &path, Some(&join), true).await.expect("send_join");
    (join, answer)
}

/// Returns the event id of a PDU of a `send_join` response: its reference
/// hash, since PDUs of room version 4 and later carry no event id.
fn pdu_id(pdu: &Value, version: &str) -> String {
    let rules = lattice::rooms::version::rules(&ruma::RoomVersionId::try_from(version).unwrap()).unwrap();
    let object: ruma::CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
    format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap())
}

/// Returns the events of a `send_join` response's `field` by event id.
fn pdus_by_id(answer: &Value, field: &str, version: &str) -> std::collections::BTreeMap<String, Value> {
    answer[field].as_array().expect(field).iter().map(|pdu| (pdu_id(pdu, version), pdu.clone())).collect()
}

/// Returns the sorted `(type, state_key)` pairs of a `send_join` response's state.
fn state_keys(answer: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = answer["state"]
        .as_array()
        .expect("state")
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect();
    keys.sort();
    keys
}

/// Returns the event id of a user's current member event on `server`.
async fn member_event_id(server: &TestServer, room_id: &str, user_id: &str) -> String {
    let room_id = ruma::RoomId::parse(room_id).unwrap();
    let state = server.homeserver.services().rooms.state(&room_id).await.expect("room state");
    state.get(&ruma::events::StateEventType::RoomMember, user_id).expect("a member event").event_id.to_string()
}

/// Asserts that every auth event of the join and of every event in the
/// response is itself in the response's `state` or `auth_chain`.
#[track_caller]
fn assert_auth_complete(answer: &Value, join: &Value, version: &str) {
    let state = pdus_by_id(answer, "state", version);
    let chain = pdus_by_id(answer, "auth_chain", version);
    for (id, pdu) in state.iter().chain(chain.iter()).chain(std::iter::once((&String::new(), join))) {
        for auth in pdu["auth_events"].as_array().expect("auth_events") {
            let auth = auth.as_str().unwrap();
            let present = state.contains_key(auth) || chain.contains_key(auth);
            assert!(present, "auth event {auth} of {id} is missing from the answer");
        }
    }
}

#[tokio::test]
async fn send_join_omits_members_on_request() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &[A, B, C], |_| {}).await;
        let c = servers.pop().expect("server c");
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let carol = c.register("carol").await;
        let mut locals = Vec::new();
        for name in ["u1", "u2", "u3", "u4", "u5", "u6", "eve"] {
            locals.push(a.register(name).await);
        }
        let (u1, eve) = (&locals[0], &locals[6]);

        // Room version 10, named: members join from a and c, u1 gets power and
        // sets the topic, eve joins and leaves.
        let named = alice.create_room(json!({ "preset": "public_chat", "name": "Hall", "room_version": "10" })).await;
        for user in &locals {
            user.join(&named).await;
        }
        let (status, body) = join_path(&carol, &format!("/_matrix/client/v3/join/{}?via={A}", encode(&named))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", encode(&named));
        let (_, mut levels) = alice.get(&levels_path).await;
        levels["users"][u1.user_id.as_str()] = json!(50);
        assert_eq!(alice.put(&levels_path, levels).await.0, StatusCode::OK);
        let topic_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", encode(&named));
        assert_eq!(u1.put(&topic_path, json!({ "topic": "Notices" })).await.0, StatusCode::OK);
        let leave_path = format!("/_matrix/client/v3/rooms/{}/leave", encode(&named));
        assert_eq!(eve.post(&leave_path, json!({})).await.0, StatusCode::OK);

        // Zed of b joins with omit_members: no member events in the state.
        let zed = b.user_id("zed");
        let (zed_join, reduced) = raw_join(&b, A, &named, &zed, "omit_members=true").await;
        assert_eq!(reduced["members_omitted"], true, "{reduced}");
        assert_eq!(reduced["servers_in_room"], json!([A, C]), "{reduced}");
        assert_eq!(reduced["origin"], A);
        let keys = state_keys(&reduced);
        assert!(keys.iter().all(|(kind, _)| kind != "m.room.member"), "{keys:?}");
        assert_auth_complete(&reduced, &zed_join, "10");

        // Yan of b joins without it: the full state, zed's join included.
        let yan = b.register("yan").await.user_id;
        let (yan_join, full) = raw_join(&b, A, &named, &yan, "").await;
        assert_eq!(full["members_omitted"], false, "{full}");
        assert!(full.get("servers_in_room").is_none(), "{full}");
        let full_keys = state_keys(&full);
        let mut members: Vec<&str> =
            full_keys.iter().filter(|(kind, _)| kind == "m.room.member").map(|(_, key)| key.as_str()).collect();
        members.sort_unstable();
        let mut expected: Vec<&str> = locals.iter().map(|u| u.user_id.as_str()).collect();
        expected.extend([alice.user_id.as_str(), carol.user_id.as_str(), zed.as_str()]);
        expected.sort_unstable();
        assert_eq!(members, expected);
        let others: Vec<(String, String)> =
            full_keys.iter().filter(|(kind, _)| kind != "m.room.member").cloned().collect();
        assert_eq!(keys, others, "the reduced state is the full state without member events");
        assert_auth_complete(&full, &yan_join, "10");

        // The reduced auth chain has the member events that authorise the
        // returned events (alice's and u1's joins), and no other member.
        let chain = pdus_by_id(&reduced, "auth_chain", "10");
        let state = pdus_by_id(&reduced, "state", "10");
        assert!(chain.keys().all(|id| !state.contains_key(id)), "state events are left out of the auth chain");
        assert!(chain.contains_key(&member_event_id(&a, &named, &alice.user_id).await));
        let u1_join = chain.values().find(|e| e["type"] == "m.room.member" && e["state_key"] == u1.user_id);
        assert_eq!(u1_join.expect("u1's join in the auth chain")["content"]["membership"], "join");
        let mut chain_members: Vec<&str> =
            chain.values().filter(|e| e["type"] == "m.room.member").filter_map(|e| e["state_key"].as_str()).collect();
        chain_members.sort_unstable();
        chain_members.dedup();
        let mut authorising = vec![alice.user_id.as_str(), u1.user_id.as_str()];
        authorising.sort_unstable();
        assert_eq!(chain_members, authorising);
        // The full response, by contrast, has every member's event.
        let full_chain = pdus_by_id(&full, "auth_chain", "10");
        assert!(full_chain.len() > chain.len(), "{} vs {}", full_chain.len(), chain.len());

        // An unnamed room of version 12 to which yan is invited: the reduced
        // state keeps yan's invite and the first five members other than yan.
        let unnamed = alice.create_room(json!({ "preset": "public_chat" })).await;
        for user in &locals[..6] {
            user.join(&unnamed).await;
        }
        let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", encode(&unnamed));
        let (status, body) = alice.post(&invite_path, json!({ "user_id": yan })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (yan_join, reduced) = raw_join(&b, A, &unnamed, &yan, "omit_members=true").await;
        assert_eq!(reduced["members_omitted"], true, "{reduced}");
        assert_eq!(reduced["servers_in_room"], json!([A]), "{reduced}");
        let mut members: Vec<(String, String)> = reduced["state"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| {
                (e["state_key"].as_str().unwrap().to_owned(), e["content"]["membership"].as_str().unwrap().to_owned())
            })
            .collect();
        members.sort();
        let mut expected: Vec<(String, String)> = [&alice, &locals[0], &locals[1], &locals[2], &locals[3]]
            .iter()
            .map(|u| (u.user_id.clone(), "join".to_owned()))
            .collect();
        expected.push((yan.clone(), "invite".to_owned()));
        expected.sort();
        assert_eq!(members, expected);
        assert_auth_complete(&reduced, &yan_join, "12");
        let create = reduced["state"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.create");
        assert!(create.is_some(), "the create event is in the state: {reduced}");

        // A value other than true or false names the parameter.
        let answer = raw_join_error(&b, A, &unnamed, &b.user_id("xan"), "omit_members=yes").await;
        assert!(answer.contains("400"), "{answer}");
        assert!(answer.contains("M_INVALID_PARAM"), "{answer}");
        assert!(answer.contains("omit_members"), "{answer}");
        let room_id = ruma::RoomId::parse(&unnamed).unwrap();
        let xan = ruma::UserId::parse(b.user_id("xan")).unwrap();
        let state = a.homeserver.services().rooms.state(&room_id).await.unwrap();
        assert_eq!(state.membership(&xan), None, "a refused join leaves no member event");
        a.stop().await;
        b.stop().await;
        c.stop().await;
    }
}

/// Like [`raw_join`], for a `send_join` that fails: returns the error text.
async fn raw_join_error(joining: &TestServer, resident: &str, room_id: &str, user: &str, query: &str) -> String {
    let (join, path) = signed_join(joining, resident, room_id, user, query).await;
    let federation = &joining.homeserver.services().federation;
    let resident = ruma::ServerName::parse(resident).unwrap();
    let error = federation
        .send_json(&resident, http::Method::PUT, &path, Some(&join), true)
        .await
        .expect_err("send_join fails");
    error.to_string()
}
