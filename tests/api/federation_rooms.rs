//! Rooms across servers: the events, typing notices and public receipts of
//! local users reach the other servers in the room through the federation
//! sender. The other server is a recording receiver on 127.0.0.1 (TLS,
//! certificate from the test CA).
//!
//! Federated joins are not built yet, so the remote member enters the room
//! through the room service directly: the join event is built and signed by
//! the local server, which is enough for the room's list of servers.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::put,
};
use lattice::rooms::builder::EventDraft;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::{TestCa, TestServer, backends, encode};

type Log = Arc<Mutex<Vec<Value>>>;

async fn record(
    State(log): State<Log>,
    Path(_txn): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    log.lock().unwrap().push(body);
    (StatusCode::OK, Json(json!({ "pdus": {} })))
}

/// Starts the stand-in for `recv.lattice.test` and returns its log and address.
async fn start_receiver(ca: &TestCa) -> (Log, std::net::SocketAddr, watch::Sender<bool>) {
    let (certificate, key) = ca.issue("recv.lattice.test");
    let tls = lattice::federation::tls::server_config(&certificate, &key).expect("receiver TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let log = Log::default();
    let app = Router::new().route("/_matrix/federation/v1/send/{txn_id}", put(record)).with_state(log.clone());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(lattice::api::federation::listener::serve_tls(listener, Arc::new(tls), app, stopped));
    (log, addr, stop)
}

fn received(log: &Log, field: &str) -> Vec<Value> {
    log.lock().unwrap().iter().flat_map(|t| t[field].as_array().cloned().unwrap_or_default()).collect()
}

async fn wait_until(log: &Log, what: &str, done: impl Fn(&Log) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(log) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn events_typing_receipts_and_presence_reach_the_other_servers_in_the_room() {
    for backend in backends() {
        let ca = TestCa::new();
        let (log, addr, _stop) = start_receiver(&ca).await;
        let mut servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test"], |config| {
            config.federation.host_overrides.insert("recv.lattice.test".into(), addr.to_string());
            config.federation.sender_retry_initial_ms = 100;
        })
        .await;
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;

        // Nothing leaves while every member is local.
        alice.send_text(&room_id, "only local").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(received(&log, "pdus").is_empty(), "a room with local members only sends nothing");

        let remote = UserId::parse("@bob:recv.lattice.test").unwrap();
        let room = RoomId::parse(&room_id).unwrap();
        let rooms = &a.homeserver.services().rooms;
        let join_id = rooms
            .append(
                &room,
                &remote,
                EventDraft::state("m.room.member", remote.as_str(), json!({"membership": "join"})),
                None,
            )
            .await
            .expect("remote member joins");

        let event_id = alice.send_text(&room_id, "hello across").await;
        wait_until(&log, "the join and the message", |log| received(log, "pdus").len() >= 2).await;
        let pdus = received(&log, "pdus");
        let rules = rooms.state(&room).await.expect("room state").rules.clone();
        let ids: Vec<String> = pdus
            .iter()
            .map(|pdu| {
                let object = serde_json::from_value(pdu.clone()).unwrap();
                format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap())
            })
            .collect();
        assert_eq!(ids, vec![join_id.to_string(), event_id.clone()], "the PDUs in order, by their reference hashes");
        let message = &pdus[1];
        assert_eq!(message["type"], "m.room.message");
        assert_eq!(message["room_id"], room_id);
        assert_eq!(message["sender"], alice.user_id);
        assert_eq!(message["content"]["body"], "hello across");
        assert!(message["signatures"]["a.lattice.test"].is_object(), "signed by the origin: {message}");
        assert!(message["hashes"]["sha256"].is_string(), "carries its content hash");
        assert!(message.get("event_id").is_none(), "the federation format has no event_id");

        // Typing and a public receipt go out as EDUs; a private receipt does not.
        let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&room_id), encode(&alice.user_id));
        let (status, body) = alice.put(&path, json!({ "typing": true, "timeout": 10000 })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let path =
            format!("/_matrix/client/v3/rooms/{}/receipt/m.read.private/{}", encode(&room_id), encode(&event_id));
        let (status, body) = alice.post(&path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&room_id), encode(&event_id));
        let (status, body) = alice.post(&path, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        wait_until(&log, "typing and receipt EDUs", |log| received(log, "edus").len() >= 2).await;
        let edus = received(&log, "edus");
        assert_eq!(edus.len(), 2, "the private receipt stays local: {edus:?}");
        assert_eq!(edus[0]["edu_type"], "m.typing");
        assert_eq!(edus[0]["content"], json!({ "room_id": room_id, "user_id": alice.user_id, "typing": true }));
        assert_eq!(edus[1]["edu_type"], "m.receipt");
        let read = &edus[1]["content"][&room_id]["m.read"][&alice.user_id];
        assert_eq!(read["event_ids"], json!([event_id]));
        assert!(read["data"]["ts"].is_i64(), "{read}");

        // A presence change goes to the servers that share a room with the user.
        let path = format!("/_matrix/client/v3/presence/{}/status", encode(&alice.user_id));
        let (status, body) =
            alice.put(&path, json!({ "presence": "unavailable", "status_msg": "Out for lunch" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        wait_until(&log, "the presence EDU", |log| received(log, "edus").len() >= 3).await;
        let presence = &received(&log, "edus")[2];
        assert_eq!(presence["edu_type"], "m.presence");
        let update = &presence["content"]["push"][0];
        assert_eq!(update["user_id"], alice.user_id);
        assert_eq!(update["presence"], "unavailable");
        assert_eq!(update["status_msg"], "Out for lunch");
        assert_eq!(update["currently_active"], false);
        assert!(update["last_active_ago"].is_i64(), "{update}");

        // The remote member leaves: its server learns of the leave, and then nothing more.
        rooms
            .append(
                &room,
                &remote,
                EventDraft::state("m.room.member", remote.as_str(), json!({"membership": "leave"})),
                None,
            )
            .await
            .expect("remote member leaves");
        wait_until(&log, "the leave", |log| received(log, "pdus").len() >= 3).await;
        assert_eq!(received(&log, "pdus")[2]["content"]["membership"], "leave");
        alice.send_text(&room_id, "after the leave").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(received(&log, "pdus").len(), 3, "a server without members gets no more events");
        a.stop().await;
    }
}

/// Builds a message PDU of `sender` on top of the room's current state on
/// `resident`, signed by `origin` with its real signing key.
async fn signed_message(
    resident: &TestServer,
    origin: &TestServer,
    room: &RoomId,
    sender: &UserId,
    body: &str,
) -> ruma::CanonicalJsonObject {
    signed_chain(resident, origin, room, sender, &[body]).await.pop().expect("one PDU")
}

/// Builds a message PDU of `sender` for each of `bodies`, the first on top
/// of the room's current state on `resident` and each later one on top of
/// the one before, signed by `origin` with its real signing key.
async fn signed_chain(
    resident: &TestServer,
    origin: &TestServer,
    room: &RoomId,
    sender: &UserId,
    bodies: &[&str],
) -> Vec<ruma::CanonicalJsonObject> {
    let state = resident.homeserver.services().rooms.state(room).await.expect("room state");
    let mut auth: Vec<String> =
        [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender.as_str())]
            .iter()
            .filter_map(|(kind, key)| state.get(&(*kind).into(), key).map(|pdu| pdu.event_id.to_string()))
            .collect();
    if state.rules.authorization.room_create_event_id_as_room_id {
        // The room id stands for the create event, which is then not listed.
        let create = state.create_event().unwrap().event_id.to_string();
        auth.retain(|id| *id != create);
    }
    auth.sort();
    let mut prev: Vec<String> = state.extremities.iter().map(|id| id.to_string()).collect();
    let mut depth = state.depth;
    let key = &origin.homeserver.services().key;
    let mut chain = Vec::new();
    for body in bodies {
        depth += 1;
        let value = json!({
            "auth_events": auth,
            "content": { "msgtype": "m.text", "body": body },
            "depth": depth,
            "origin_server_ts": 1_700_000_000_000_i64,
            "prev_events": prev,
            "room_id": room,
            "sender": sender,
            "type": "m.room.message",
        });
        let mut object: ruma::CanonicalJsonObject = serde_json::from_value(value).unwrap();
        ruma::signatures::hash_and_sign_event(&origin.server_name, &key.pair, &mut object, &state.rules.redaction)
            .expect("sign");
        prev = vec![event_id_of(&object, &state.rules)];
        chain.push(object);
    }
    chain
}

fn event_id_of(object: &ruma::CanonicalJsonObject, rules: &ruma::room_version_rules::RoomVersionRules) -> String {
    format!("${}", ruma::signatures::reference_hash(object, rules).unwrap())
}

/// Sends a transaction from `origin` to `destination` over federation, signed with X-Matrix.
async fn send_transaction(
    origin: &TestServer,
    destination: &TestServer,
    txn: &str,
    pdus: Vec<Value>,
    edus: Vec<Value>,
) -> Value {
    let body =
        json!({ "origin": origin.server_name, "origin_server_ts": 1_700_000_000_000_i64, "pdus": pdus, "edus": edus });
    let path = format!("/_matrix/federation/v1/send/{txn}");
    let destination = ruma::ServerName::parse(&destination.server_name).unwrap();
    origin
        .homeserver
        .services()
        .federation
        .send_json(&destination, http::Method::PUT, &path, Some(&body), true)
        .await
        .expect("transaction accepted")
}

#[tokio::test]
async fn remote_join_and_inbound_transactions_reach_local_members() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers =
            TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        let room = RoomId::parse(&room_id).unwrap();
        let bob = UserId::parse("@bob:b.lattice.test").unwrap();
        let rooms = &a.homeserver.services().rooms;
        let (rules, version) = {
            let state = rooms.state(&room).await.unwrap();
            (state.rules.clone(), state.version.to_string())
        };
        let a_name = ruma::ServerName::parse(&a.server_name).unwrap();
        let federation = &b.homeserver.services().federation;

        // make_join: without `ver` the room's version is not acceptable; a
        // user of another server may not be joined by b; then the template.
        let path = format!("/_matrix/federation/v1/make_join/{}/{}", encode(&room_id), encode(bob.as_str()));
        let err = federation.send_json(&a_name, http::Method::GET, &path, None, true).await.expect_err("no ver");
        assert!(err.to_string().contains("M_INCOMPATIBLE_ROOM_VERSION"), "{err}");
        let path =
            format!("/_matrix/federation/v1/make_join/{}/{}?ver={version}", encode(&room_id), encode(&alice.user_id));
        let err = federation.send_json(&a_name, http::Method::GET, &path, None, true).await.expect_err("not b's user");
        assert!(err.to_string().contains("M_FORBIDDEN"), "{err}");
        let path = format!(
            "/_matrix/federation/v1/make_join/{}/{}?ver=1&ver={version}",
            encode(&room_id),
            encode(bob.as_str())
        );
        let template = federation.send_json(&a_name, http::Method::GET, &path, None, true).await.expect("make_join");
        assert_eq!(template["room_version"], version.as_str());
        assert_eq!(template["event"]["type"], "m.room.member");
        assert_eq!(template["event"]["state_key"], bob.as_str());
        assert_eq!(template["event"]["content"]["membership"], "join");

        // send_join: b signs the template; a answers with the room's state and auth chain.
        let mut join: ruma::CanonicalJsonObject = serde_json::from_value(template["event"].clone()).unwrap();
        let key = &b.homeserver.services().key;
        ruma::signatures::hash_and_sign_event(&b.server_name, &key.pair, &mut join, &rules.redaction).expect("sign");
        let join_id = event_id_of(&join, &rules);
        let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode(&room_id), encode(&join_id));
        let body = serde_json::to_value(&join).unwrap();
        let answer =
            federation.send_json(&a_name, http::Method::PUT, &path, Some(&body), true).await.expect("send_join");
        let state = answer["state"].as_array().expect("state");
        let alice_member = state
            .iter()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str())
            .expect("alice's membership in the state");
        assert_eq!(alice_member["content"]["membership"], "join");
        assert!(alice_member["signatures"]["a.lattice.test"].is_object());
        assert!(state.iter().all(|e| e["state_key"] != bob.as_str()), "the state is the one before the join");
        let chain = answer["auth_chain"].as_array().expect("auth_chain");
        assert!(chain.iter().any(|e| e["type"] == "m.room.create"), "the auth chain reaches the create event");
        assert!(rooms.state(&room).await.unwrap().is_joined(&bob), "bob is joined on a");
        let since = alice.sync("").await["next_batch"].as_str().unwrap().to_owned();

        // A valid PDU signed by b.lattice.test, whose key a fetches from b.
        let good = signed_message(&a, &b, &room, &bob, "hello from b").await;
        let good_id = event_id_of(&good, &rules);
        let response = send_transaction(&b, &a, "t1", vec![serde_json::to_value(&good).unwrap()], vec![]).await;
        assert_eq!(response["pdus"][&good_id], json!({}), "{response}");

        // The same transaction again: the PDU is a duplicate, still accepted, stored once.
        let response = send_transaction(&b, &a, "t1", vec![serde_json::to_value(&good).unwrap()], vec![]).await;
        assert_eq!(response["pdus"][&good_id], json!({}), "{response}");

        // The received message counts for alice, a's member, once.
        let unread = &alice.sync("").await["rooms"]["join"][&room_id]["unread_notifications"];
        assert_eq!(unread["notification_count"], 1, "{backend:?}: alice's count of bob's message: {unread}");
        assert_eq!(unread["highlight_count"], 0, "{backend:?}: {unread}");

        // A signature that does not verify: rejected with a reason.
        let mut forged = signed_message(&a, &b, &room, &bob, "forged").await;
        let forged_id = event_id_of(&forged, &rules);
        let signatures = forged.get_mut("signatures").unwrap();
        let mut text = serde_json::to_value(&*signatures).unwrap();
        let key_id = text["b.lattice.test"].as_object().unwrap().keys().next().unwrap().clone();
        text["b.lattice.test"][&key_id] = json!("AAAA".repeat(21) + "AA");
        *signatures = serde_json::from_value(text).unwrap();
        // Content changed after signing: the signatures (over the redacted form)
        // still verify, the content hash does not, so the event is kept redacted.
        let mut tampered = signed_message(&a, &b, &room, &bob, "original words").await;
        let mut content = ruma::CanonicalJsonObject::new();
        content.insert("msgtype".into(), ruma::CanonicalJsonValue::String("m.text".into()));
        content.insert("body".into(), ruma::CanonicalJsonValue::String("altered words".into()));
        tampered.insert("content".into(), ruma::CanonicalJsonValue::Object(content));
        let tampered_id = event_id_of(&tampered, &rules);
        let response = send_transaction(
            &b,
            &a,
            "t2",
            vec![serde_json::to_value(&forged).unwrap(), serde_json::to_value(&tampered).unwrap()],
            vec![],
        )
        .await;
        let error = response["pdus"][&forged_id]["error"].as_str().expect("the forged PDU is rejected");
        assert!(error.contains("signature"), "{error}");
        assert_eq!(response["pdus"][&tampered_id], json!({}), "{response}");

        // A PDU from a user who is not in the room fails the auth checks.
        let carol = UserId::parse("@carol:b.lattice.test").unwrap();
        let intruder = signed_message(&a, &b, &room, &carol, "let me in").await;
        let intruder_id = event_id_of(&intruder, &rules);
        let response = send_transaction(&b, &a, "t3", vec![serde_json::to_value(&intruder).unwrap()], vec![]).await;
        let error = response["pdus"][&intruder_id]["error"].as_str().expect("the intruder's PDU is rejected");
        assert!(error.contains("not allowed"), "{error}");

        // Typing and a receipt of bob arrive as EDUs.
        let edus = vec![
            json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": bob, "typing": true } }),
            json!({ "edu_type": "m.receipt", "content": { &room_id: { "m.read": { bob.as_str(): {
                "event_ids": [good_id], "data": { "ts": 1_700_000_000_000_i64 } } } } } }),
            json!({ "edu_type": "m.presence", "content": { "push": [{ "user_id": bob, "presence": "online",
                "status_msg": "In a meeting", "last_active_ago": 1000, "currently_active": true }] } }),
        ];
        let response = send_transaction(&b, &a, "t4", vec![], edus).await;
        assert_eq!(response["pdus"], json!({}));

        // Alice sees the accepted events in order, with their ids, and bob's typing and receipt.
        let sync = alice.sync(&format!("since={since}")).await;
        let events: Vec<&Value> = crate::harness::timeline(&sync, &room_id).iter().collect();
        let ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![good_id.as_str(), tampered_id.as_str()], "{sync}");
        assert_eq!(events[0]["content"]["body"], "hello from b");
        assert_eq!(events[0]["sender"], bob.as_str());
        assert_eq!(events[1]["content"], json!({}), "the tampered event is redacted");
        let ephemeral = &sync["rooms"]["join"][&room_id]["ephemeral"]["events"];
        let typing = ephemeral.as_array().unwrap().iter().find(|e| e["type"] == "m.typing").expect("typing");
        assert_eq!(typing["content"]["user_ids"], json!([bob]));
        let receipt = ephemeral.as_array().unwrap().iter().find(|e| e["type"] == "m.receipt").expect("receipt");
        assert!(receipt["content"][&good_id]["m.read"][bob.as_str()]["ts"].is_i64(), "{receipt}");

        // Bob's presence is readable here although bob has no account on this server.
        let (status, presence) =
            alice.get(&format!("/_matrix/client/v3/presence/{}/status", encode(bob.as_str()))).await;
        assert_eq!(status, StatusCode::OK, "{presence}");
        assert_eq!(presence["presence"], "online");
        assert_eq!(presence["status_msg"], "In a meeting");

        // A transaction whose origin is not the signing server is refused.
        let body = json!({ "origin": "c.lattice.test", "origin_server_ts": 0, "pdus": [], "edus": [] });
        let destination = ruma::ServerName::parse(&a.server_name).unwrap();
        let err = b
            .homeserver
            .services()
            .federation
            .send_json(&destination, http::Method::PUT, "/_matrix/federation/v1/send/t5", Some(&body), true)
            .await
            .expect_err("a foreign origin is refused");
        assert!(err.to_string().contains("M_FORBIDDEN"), "{err}");
        a.stop().await;
        b.stop().await;
    }
}

/// Joins `user` of server `b` to the room `room_id` of server `a` through
/// `make_join` and `send_join`, signed by `b`.
async fn join_over_federation(a: &TestServer, b: &TestServer, room_id: &str, user: &UserId) {
    let room = RoomId::parse(room_id).unwrap();
    let rules = a.homeserver.services().rooms.state(&room).await.unwrap().rules.clone();
    let a_name = ruma::ServerName::parse(&a.server_name).unwrap();
    let federation = &b.homeserver.services().federation;
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=1", encode(room_id), encode(user.as_str()));
    let versions: String = (1..=12).map(|v| format!("&ver={v}")).collect();
    let template = federation
        .send_json(&a_name, http::Method::GET, &format!("{path}{versions}"), None, true)
        .await
        .expect("make_join");
    let mut join: ruma::CanonicalJsonObject = serde_json::from_value(template["event"].clone()).unwrap();
    let key = &b.homeserver.services().key;
    ruma::signatures::hash_and_sign_event(&b.server_name, &key.pair, &mut join, &rules.redaction).expect("sign");
    let join_id = event_id_of(&join, &rules);
    let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode(room_id), encode(&join_id));
    let body = serde_json::to_value(&join).unwrap();
    federation.send_json(&a_name, http::Method::PUT, &path, Some(&body), true).await.expect("send_join");
}

#[tokio::test]
async fn transaction_pdus_checked_in_order() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers =
            TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        let room = RoomId::parse(&room_id).unwrap();
        let bob = UserId::parse("@bob:b.lattice.test").unwrap();
        join_over_federation(&a, &b, &room_id, &bob).await;
        let rules = a.homeserver.services().rooms.state(&room).await.unwrap().rules.clone();

        // One message is stored before the transaction.
        let stored = signed_message(&a, &b, &room, &bob, "stored before").await;
        let stored_id = event_id_of(&stored, &rules);
        let response = send_transaction(&b, &a, "t1", vec![serde_json::to_value(&stored).unwrap()], vec![]).await;
        assert_eq!(response["pdus"][&stored_id], json!({}), "{backend:?}: {response}");
        let since = alice.sync("").await["next_batch"].as_str().unwrap().to_owned();

        // Five messages, each on top of the one before, mixed with a forged
        // PDU, a PDU that is not an object, the first message again and
        // the message stored before.
        let chain = signed_chain(&a, &b, &room, &bob, &["c1", "c2", "c3", "c4", "c5"]).await;
        let chain_ids: Vec<String> = chain.iter().map(|pdu| event_id_of(pdu, &rules)).collect();
        let mut forged = signed_message(&a, &b, &room, &bob, "forged").await;
        let forged_id = event_id_of(&forged, &rules);
        let mut signatures = serde_json::to_value(&forged["signatures"]).unwrap();
        let key_id = signatures["b.lattice.test"].as_object().unwrap().keys().next().unwrap().clone();
        signatures["b.lattice.test"][&key_id] = json!("AAAA".repeat(21) + "AA");
        forged.insert("signatures".into(), serde_json::from_value(signatures).unwrap());
        let value = |pdu: &ruma::CanonicalJsonObject| serde_json::to_value(pdu).unwrap();
        let pdus = vec![
            value(&chain[0]),
            value(&chain[1]),
            value(&forged),
            json!(42),
            value(&chain[2]),
            value(&chain[0]),
            value(&stored),
            value(&chain[3]),
            value(&chain[4]),
        ];
        let response = send_transaction(&b, &a, "t2", pdus, vec![]).await;
        let results = response["pdus"].as_object().expect("results");
        assert_eq!(results.len(), 7, "{backend:?}: one result per event id: {response}");
        for (id, body) in chain_ids.iter().zip(["c1", "c2", "c3", "c4", "c5"]) {
            assert_eq!(results[id], json!({}), "{backend:?}: {body} is accepted: {response}");
        }
        assert_eq!(results[&stored_id], json!({}), "{backend:?}: a stored PDU is a duplicate: {response}");
        let error = results[&forged_id]["error"].as_str().expect("the forged PDU is rejected");
        assert!(error.contains("signature"), "{backend:?}: {error}");

        // Alice receives each message once, in order, and the last one is the
        // room's forward extremity.
        let sync = alice.sync(&format!("since={since}")).await;
        let timeline = crate::harness::timeline(&sync, &room_id);
        let bodies: Vec<&str> = timeline.iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["c1", "c2", "c3", "c4", "c5"], "{backend:?}: {sync}");
        let ids: Vec<&str> = timeline.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
        assert_eq!(ids, chain_ids, "{backend:?}");
        let unread = &sync["rooms"]["join"][&room_id]["unread_notifications"];
        assert_eq!(unread["notification_count"], 6, "{backend:?}: {unread}");
        let extremities = a.homeserver.services().rooms.state(&room).await.unwrap().extremities.clone();
        assert_eq!(extremities.iter().map(|id| id.to_string()).collect::<Vec<_>>(), [chain_ids[4].clone()]);
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn concurrent_transactions_store_each_pdu_once() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers =
            TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
        let room = RoomId::parse(&room_id).unwrap();
        let bob = UserId::parse("@bob:b.lattice.test").unwrap();
        join_over_federation(&a, &b, &room_id, &bob).await;
        let rules = a.homeserver.services().rooms.state(&room).await.unwrap().rules.clone();
        let since = alice.sync("").await["next_batch"].as_str().unwrap().to_owned();

        // The same 30 messages in two transactions at once, as when a
        // sender retries before its first attempt got a response.
        let bodies: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
        let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let chain = signed_chain(&a, &b, &room, &bob, &bodies).await;
        let pdus: Vec<Value> = chain.iter().map(|pdu| serde_json::to_value(pdu).unwrap()).collect();
        let (first, second) = tokio::join!(
            send_transaction(&b, &a, "t1", pdus.clone(), vec![]),
            send_transaction(&b, &a, "t2", pdus, vec![]),
        );
        for pdu in &chain {
            let id = event_id_of(pdu, &rules);
            assert_eq!(first["pdus"][&id], json!({}), "{backend:?}: {first}");
            assert_eq!(second["pdus"][&id], json!({}), "{backend:?}: {second}");
        }

        let sync =
            alice.sync(&format!("since={since}&filter={}", encode(r#"{"room":{"timeline":{"limit":100}}}"#))).await;
        let timeline = crate::harness::timeline(&sync, &room_id);
        let received: Vec<&str> = timeline.iter().map(|e| e["content"]["body"].as_str().unwrap()).collect();
        assert_eq!(received, bodies, "{backend:?}: each message once, in order");
        a.stop().await;
        b.stop().await;
    }
}
