//! The read-only federation endpoints between two Lattice servers over TLS.
//! B reads events, state, auth chains, backfill and missing events of rooms
//! on A, within the history visibility rules. A client of B resolves aliases,
//! profiles and the public room directory of A.

use std::collections::BTreeSet;

use http::Method;
use lattice::storage;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Client, TestCa, TestServer, assert_error, backends, encode};

/// Sends a request signed by `from` to `to`'s federation listener.
async fn signed(
    from: &TestServer,
    to: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let destination = ruma::ServerName::parse(&to.server_name).expect("server name");
    let response = from
        .homeserver
        .services()
        .federation
        .send(&destination, method, path, body.as_ref(), true)
        .await
        .expect("the request reaches the other server");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(from: &TestServer, to: &TestServer, path: &str) -> (StatusCode, Value) {
    signed(from, to, Method::GET, path, None).await
}

/// Reads the PDU of an event as `server` stored it.
async fn stored_pdu(server: &TestServer, event_id: &str) -> Value {
    let event = storage::events::get(&server.homeserver.services().db.pool, event_id)
        .await
        .expect("read the event")
        .expect("the event is stored");
    serde_json::from_str(&event.pdu.json).expect("stored PDU is JSON")
}

/// Lists the ids of the room's current state events through the client API.
async fn current_state_ids(client: &Client, room_id: &str) -> BTreeSet<String> {
    let (status, state) = client.get(&format!("/_matrix/client/v3/rooms/{}/state", encode(room_id))).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    state
        .as_array()
        .expect("state array")
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().expect("array").iter().map(|v| v.as_str().expect("string").to_owned()).collect()
}

fn bodies(pdus: &Value) -> Vec<String> {
    pdus.as_array()
        .expect("pdus")
        .iter()
        .map(|pdu| pdu["content"]["body"].as_str().unwrap_or(pdu["type"].as_str().unwrap_or_default()).to_owned())
        .collect()
}

async fn two_servers(backend: &crate::harness::Backend, ca: &TestCa) -> (TestServer, TestServer) {
    let mut servers = TestServer::start_federated(backend, ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
    let b = servers.pop().expect("b");
    let a = servers.pop().expect("a");
    (a, b)
}

#[tokio::test]
async fn room_history_read_over_federation() {
    for backend in backends() {
        let ca = TestCa::new();
        let (a, b) = two_servers(&backend, &ca).await;
        let alice = a.register("alice").await;
        let room_id = alice
            .create_room(json!({
                "preset": "public_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility", "state_key": "",
                    "content": { "history_visibility": "world_readable" },
                }],
            }))
            .await;
        let mut sent = Vec::new();
        for n in 0..5 {
            sent.push(alice.send_text(&room_id, &format!("m{n}")).await);
        }
        let room = encode(&room_id);
        let last = &sent[4];

        // One event, as a transaction holding the PDU exactly as stored.
        let (status, body) = get(&b, &a, &format!("/_matrix/federation/v1/event/{}", encode(last))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["origin"], "a.lattice.test");
        assert!(body["origin_server_ts"].is_u64());
        assert_eq!(body["pdus"].as_array().expect("pdus").len(), 1);
        assert_eq!(body["pdus"][0], stored_pdu(&a, last).await);
        assert!(body["pdus"][0].get("unsigned").is_none(), "{body}");
        assert!(body["pdus"][0]["signatures"]["a.lattice.test"].is_object());

        // The state before the last message is the room's current state.
        let expected = current_state_ids(&alice, &room_id).await;
        let (status, ids) =
            get(&b, &a, &format!("/_matrix/federation/v1/state_ids/{room}?event_id={}", encode(last))).await;
        assert_eq!(status, StatusCode::OK, "{ids}");
        assert_eq!(strings(&ids["pdu_ids"]), expected);
        let mut create_id = String::new();
        for id in &expected {
            if stored_pdu(&a, id).await["type"] == "m.room.create" {
                create_id = id.clone();
            }
        }
        assert!(!create_id.is_empty(), "a create event in the state");
        let chain_ids = strings(&ids["auth_chain_ids"]);
        assert!(chain_ids.contains(&create_id), "auth chain {chain_ids:?} lacks the create event");

        let (status, state) =
            get(&b, &a, &format!("/_matrix/federation/v1/state/{room}?event_id={}", encode(last))).await;
        assert_eq!(status, StatusCode::OK, "{state}");
        let pdus = state["pdus"].as_array().expect("pdus");
        assert_eq!(pdus.len(), expected.len());
        for id in &expected {
            let stored = stored_pdu(&a, id).await;
            assert!(pdus.contains(&stored), "state lacks {id}");
        }
        let chain = state["auth_chain"].as_array().expect("auth_chain");
        assert_eq!(chain.len(), chain_ids.len());
        assert!(chain.contains(&stored_pdu(&a, &create_id).await));

        // No state changed after the first message, so the state before it is the same.
        let (_, early) =
            get(&b, &a, &format!("/_matrix/federation/v1/state_ids/{room}?event_id={}", encode(&sent[0]))).await;
        assert_eq!(strings(&early["pdu_ids"]), expected);

        // The auth chain of a message: create, power levels, the sender's join, and theirs.
        let (status, auth) = get(&b, &a, &format!("/_matrix/federation/v1/event_auth/{room}/{}", encode(last))).await;
        assert_eq!(status, StatusCode::OK, "{auth}");
        let types: BTreeSet<&str> =
            auth["auth_chain"].as_array().expect("auth_chain").iter().filter_map(|e| e["type"].as_str()).collect();
        assert!(types.contains("m.room.create"), "{types:?}");
        assert!(types.contains("m.room.power_levels"), "{types:?}");
        assert!(types.contains("m.room.member"), "{types:?}");
        assert!(auth["auth_chain"].as_array().expect("chain").contains(&stored_pdu(&a, &create_id).await));

        // Backfill from the newest message: the given event first, then older ones, at most `limit`.
        let (status, backfill) =
            get(&b, &a, &format!("/_matrix/federation/v1/backfill/{room}?v={}&limit=3", encode(last))).await;
        assert_eq!(status, StatusCode::OK, "{backfill}");
        assert_eq!(backfill["origin"], "a.lattice.test");
        assert_eq!(bodies(&backfill["pdus"]), ["m4", "m3", "m2"]);
        assert_eq!(backfill["pdus"][1], stored_pdu(&a, &sent[3]).await);
        // A large limit walks back to where the history became world-readable:
        // the room's first events were sent under the default `shared`
        // visibility, which a server without members does not see.
        let (_, all) =
            get(&b, &a, &format!("/_matrix/federation/v1/backfill/{room}?v={}&limit=100", encode(&sent[1]))).await;
        let all_bodies = bodies(&all["pdus"]);
        assert_eq!(&all_bodies[..2], ["m1", "m0"]);
        assert_eq!(all_bodies.last().map(String::as_str), Some("m.room.history_visibility"));
        assert!(!all_bodies.iter().any(|b| b == "m.room.create"), "{all_bodies:?}");
        let missing_limit = get(&b, &a, &format!("/_matrix/federation/v1/backfill/{room}?v={}", encode(last))).await;
        assert_error(&missing_limit, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");

        // The events between m0 and m4, oldest first.
        let (status, missing) = signed(
            &b,
            &a,
            Method::POST,
            &format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({ "earliest_events": [sent[0]], "latest_events": [last], "limit": 10, "min_depth": 0 })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{missing}");
        assert_eq!(bodies(&missing["events"]), ["m1", "m2", "m3"]);
        assert_eq!(missing["events"][0], stored_pdu(&a, &sent[1]).await);
        let (_, limited) = signed(
            &b,
            &a,
            Method::POST,
            &format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({ "earliest_events": [sent[0]], "latest_events": [last], "limit": 2 })),
        )
        .await;
        assert_eq!(bodies(&limited["events"]), ["m2", "m3"]);
        let empty = signed(
            &b,
            &a,
            Method::POST,
            &format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({ "earliest_events": [], "latest_events": [] })),
        )
        .await;
        assert_error(&empty, StatusCode::BAD_REQUEST, "M_BAD_JSON");
        assert!(empty.1["error"].as_str().unwrap_or_default().contains("latest_events"), "{}", empty.1);

        // Unknown events and rooms.
        let unknown = get(&b, &a, &format!("/_matrix/federation/v1/event/{}", encode("$unknown"))).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let unknown_room = get(
            &b,
            &a,
            &format!("/_matrix/federation/v1/state_ids/{}?event_id={}", encode("!nope:a.lattice.test"), encode(last)),
        )
        .await;
        assert_error(&unknown_room, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Unsigned requests are rejected.
        let response = ca
            .client(&[&a])
            .get(format!("{}/_matrix/federation/v1/event/{}", a.federation_base(), encode(last)))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn outlier_from_join_served_to_members() {
    for backend in backends() {
        let ca = TestCa::new();
        let names = ["a.lattice.test", "b.lattice.test", "c.lattice.test"];
        let mut servers = TestServer::start_federated(&backend, &ca, &names, |_| {}).await;
        let c = servers.pop().expect("c");
        let b = servers.pop().expect("b");
        let a = servers.pop().expect("a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let carol = c.register("carol").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;

        // Alice changes the power levels: the first power levels event leaves
        // the room's state but stays in the auth chain of later events.
        let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", encode(&room_id));
        let (_, state) = alice.get(&format!("/_matrix/client/v3/rooms/{}/state", encode(&room_id))).await;
        let first = state
            .as_array()
            .expect("state array")
            .iter()
            .find(|e| e["type"] == "m.room.power_levels")
            .and_then(|e| e["event_id"].as_str())
            .expect("a power levels event")
            .to_owned();
        let (_, mut levels) = alice.get(&levels_path).await;
        levels["invite"] = json!(0);
        let (status, body) = alice.put(&levels_path, levels).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // Bob's server joins through a and keeps that event as an outlier.
        let (status, body) =
            bob.post(&format!("/_matrix/client/v3/join/{}?via=a.lattice.test", encode(&room_id)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let pool = &b.homeserver.services().db.pool;
        assert!(storage::events::get(pool, &first).await.unwrap().is_none(), "not in b's timeline");
        let outliers = storage::outliers::get_many(pool, std::slice::from_ref(&first)).await.unwrap();
        assert_eq!(outliers.len(), 1, "an outlier on b");

        // A, whose user is joined, reads it from b: the PDU as a signed it.
        let path = format!("/_matrix/federation/v1/event/{}", encode(&first));
        let (status, body) = get(&a, &b, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["origin"], "b.lattice.test");
        assert_eq!(body["pdus"].as_array().expect("pdus").len(), 1, "{body}");
        assert_eq!(body["pdus"][0], stored_pdu(&a, &first).await);
        assert!(body["pdus"][0].get("unsigned").is_none(), "{body}");

        // C has no user in the room, so b does not serve it the event.
        let response = get(&c, &b, &path).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let unknown = format!("/_matrix/federation/v1/event/{}", encode("$unknownEventIdOfTheRightShape"));
        assert_error(&get(&a, &b, &unknown).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Once carol of c has joined, b serves c the event too: under
        // `shared` history, a joined server may read the room's earlier events.
        let (status, body) =
            carol.post(&format!("/_matrix/client/v3/join/{}?via=a.lattice.test", encode(&room_id)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let body = loop {
            let (status, body) = get(&c, &b, &path).await;
            if status == StatusCode::OK {
                break body;
            }
            assert!(std::time::Instant::now() < deadline, "b never learnt of carol's join: {status} {body}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(body["pdus"][0], stored_pdu(&a, &first).await);
    }
}

#[tokio::test]
async fn private_room_hidden_from_server_without_members() {
    for backend in backends() {
        let ca = TestCa::new();
        let (a, b) = two_servers(&backend, &ca).await;
        let alice = a.register("alice").await;
        let room_id = alice.create_room(json!({ "preset": "private_chat" })).await;
        let message = alice.send_text(&room_id, "secret").await;
        let room = encode(&room_id);
        let event = encode(&message);

        for path in [
            format!("/_matrix/federation/v1/event/{event}"),
            format!("/_matrix/federation/v1/state/{room}?event_id={event}"),
            format!("/_matrix/federation/v1/state_ids/{room}?event_id={event}"),
            format!("/_matrix/federation/v1/event_auth/{room}/{event}"),
            format!("/_matrix/federation/v1/backfill/{room}?v={event}&limit=10"),
        ] {
            let response = get(&b, &a, &path).await;
            assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
            assert!(response.1.to_string().contains("b.lattice.test"), "{path}: {}", response.1);
        }
        let missing = signed(
            &b,
            &a,
            Method::POST,
            &format!("/_matrix/federation/v1/get_missing_events/{room}"),
            Some(json!({ "earliest_events": [], "latest_events": [message], "limit": 10 })),
        )
        .await;
        assert_error(&missing, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // Making the history world-readable opens the later events, not the earlier ones.
        let (status, body) = alice
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
                json!({ "history_visibility": "world_readable" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let public = alice.send_text(&room_id, "public").await;
        let (status, body) = get(&b, &a, &format!("/_matrix/federation/v1/event/{}", encode(&public))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["pdus"][0]["content"]["body"], "public");
        let earlier = get(&b, &a, &format!("/_matrix/federation/v1/event/{event}")).await;
        assert_error(&earlier, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, backfill) =
            get(&b, &a, &format!("/_matrix/federation/v1/backfill/{room}?v={}&limit=50", encode(&public))).await;
        assert_eq!(status, StatusCode::OK, "{backfill}");
        let seen = bodies(&backfill["pdus"]);
        assert_eq!(seen.first().map(String::as_str), Some("public"));
        assert!(!seen.iter().any(|b| b == "secret"), "{seen:?}");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn invited_user_server_sees_later_history() {
    for backend in backends() {
        let ca = TestCa::new();
        let (a, b) = two_servers(&backend, &ca).await;
        let alice = a.register("alice").await;
        let room_id = alice
            .create_room(json!({
                "preset": "private_chat",
                "initial_state": [{
                    "type": "m.room.history_visibility", "state_key": "",
                    "content": { "history_visibility": "invited" },
                }],
            }))
            .await;
        let before = alice.send_text(&room_id, "before").await;
        // B countersigns the invite of its user, who must exist there.
        b.register("bob").await;
        let parsed_room = ruma::RoomId::parse(&room_id).expect("room id");
        let alice_id = ruma::UserId::parse(&alice.user_id).expect("user id");
        let bob_id = ruma::UserId::parse("@bob:b.lattice.test").expect("user id");
        a.homeserver
            .services()
            .rooms
            .change_membership(
                &parsed_room,
                &alice_id,
                &bob_id,
                lattice::rooms::membership::MembershipChange::Invite,
                None,
            )
            .await
            .expect("invite bob");
        let after = alice.send_text(&room_id, "after").await;

        let (status, body) = get(&b, &a, &format!("/_matrix/federation/v1/event/{}", encode(&after))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["pdus"][0]["content"]["body"], "after");
        let hidden = get(&b, &a, &format!("/_matrix/federation/v1/event/{}", encode(&before))).await;
        assert_error(&hidden, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, ids) =
            get(&b, &a, &format!("/_matrix/federation/v1/state_ids/{}?event_id={}", encode(&room_id), encode(&after)))
                .await;
        assert_eq!(status, StatusCode::OK, "{ids}");
        assert_eq!(strings(&ids["pdu_ids"]), current_state_ids(&alice, &room_id).await);
        let (status, backfill) =
            get(&b, &a, &format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", encode(&room_id), encode(&after)))
                .await;
        assert_eq!(status, StatusCode::OK, "{backfill}");
        assert_eq!(bodies(&backfill["pdus"]), ["after", "m.room.member"]);

        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn aliases_profiles_and_directory_across_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let (a, b) = two_servers(&backend, &ca).await;
        let alice = a.register("alice").await;
        let (status, body) = alice
            .put(
                &format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id)),
                json!({ "displayname": "Alice A" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = alice
            .put(
                &format!("/_matrix/client/v3/profile/{}/avatar_url", encode(&alice.user_id)),
                json!({ "avatar_url": "mxc://a.lattice.test/face" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let room_id = alice
            .create_room(json!({
                "preset": "public_chat", "visibility": "public", "room_alias_name": "lobby",
                "name": "The Lobby", "topic": "Say hello",
            }))
            .await;
        alice.create_room(json!({ "preset": "public_chat", "visibility": "public", "name": "Garden" })).await;
        let bob = b.register("bob").await;

        // Aliases.
        let (status, body) =
            bob.get(&format!("/_matrix/client/v3/directory/room/{}", encode("#lobby:a.lattice.test"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room_id.as_str());
        assert_eq!(body["servers"], json!(["a.lattice.test"]));
        let unknown =
            bob.get(&format!("/_matrix/client/v3/directory/room/{}", encode("#nowhere:a.lattice.test"))).await;
        assert_error(&unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let unknown_join =
            bob.post(&format!("/_matrix/client/v3/join/{}", encode("#nowhere:a.lattice.test")), json!({})).await;
        assert_error(&unknown_join, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let (status, body) = get(
            &b,
            &a,
            &format!("/_matrix/federation/v1/query/directory?room_alias={}", encode("#lobby:a.lattice.test")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["room_id"], room_id.as_str());
        let missing = get(&b, &a, "/_matrix/federation/v1/query/directory").await;
        assert_error(&missing, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
        let other_type = get(&b, &a, "/_matrix/federation/v1/query/unknown_type?key=value").await;
        assert_error(&other_type, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");

        // Profiles.
        let (status, body) = bob.get(&format!("/_matrix/client/v3/profile/{}", encode(&alice.user_id))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({ "displayname": "Alice A", "avatar_url": "mxc://a.lattice.test/face" }));
        let (status, body) =
            bob.get(&format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({ "displayname": "Alice A" }));
        let (status, body) = get(
            &b,
            &a,
            &format!("/_matrix/federation/v1/query/profile?user_id={}&field=avatar_url", encode(&alice.user_id)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({ "avatar_url": "mxc://a.lattice.test/face" }));
        let bad_field = get(
            &b,
            &a,
            &format!("/_matrix/federation/v1/query/profile?user_id={}&field=email", encode(&alice.user_id)),
        )
        .await;
        assert_error(&bad_field, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let nobody = bob.get(&format!("/_matrix/client/v3/profile/{}", encode("@nobody:a.lattice.test"))).await;
        assert_error(&nobody, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // The public room directory of A, from a client of B.
        let (status, body) = bob.get("/_matrix/client/v3/publicRooms?server=a.lattice.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let names: BTreeSet<&str> =
            body["chunk"].as_array().expect("chunk").iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(names, BTreeSet::from(["The Lobby", "Garden"]));
        assert_eq!(body["total_room_count_estimate"], 2);
        let lobby = body["chunk"].as_array().expect("chunk").iter().find(|r| r["room_id"] == room_id.as_str());
        let lobby = lobby.expect("the lobby is listed");
        assert_eq!(lobby["canonical_alias"], "#lobby:a.lattice.test");
        assert_eq!(lobby["topic"], "Say hello");
        assert_eq!(lobby["num_joined_members"], 1);

        let (status, page) = bob.get("/_matrix/client/v3/publicRooms?server=a.lattice.test&limit=1").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["chunk"].as_array().expect("chunk").len(), 1);
        let next = page["next_batch"].as_str().expect("next_batch").to_owned();
        let (_, rest) =
            bob.get(&format!("/_matrix/client/v3/publicRooms?server=a.lattice.test&limit=1&since={next}")).await;
        assert_eq!(rest["chunk"].as_array().expect("chunk").len(), 1);
        assert_ne!(rest["chunk"][0]["room_id"], page["chunk"][0]["room_id"]);

        let (status, found) = bob
            .post(
                "/_matrix/client/v3/publicRooms",
                json!({ "server": "a.lattice.test", "filter": { "generic_search_term": "lobby" } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["chunk"].as_array().expect("chunk").len(), 1);
        assert_eq!(found["chunk"][0]["room_id"], room_id.as_str());

        let (status, body) = signed(
            &b,
            &a,
            Method::POST,
            "/_matrix/federation/v1/publicRooms",
            Some(json!({ "limit": 5, "filter": { "generic_search_term": "garden" } })),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["chunk"][0]["name"], "Garden");
        assert_eq!(body["chunk"].as_array().expect("chunk").len(), 1);
        a.stop().await;
        b.stop().await;
    }
}
