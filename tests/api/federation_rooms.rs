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
async fn events_typing_and_receipts_reach_the_other_servers_in_the_room() {
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
