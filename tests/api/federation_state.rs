//! Received PDUs beyond the simple case: previous events that are unknown
//! and fetched from the sending server, forks resolved with state
//! resolution, redactions from another server, and soft-failed events.
//!
//! The other server, `c.lattice.test`, is simulated by the test: a TLS
//! stand-in on 127.0.0.1 that publishes a signing key the test holds, signs
//! the PDUs the test builds, and answers `/get_missing_events`,
//! `/state_ids` and `/event` with the events the test stored in it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use lattice::federation::auth::authorization_header;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId, UserId, signatures::Ed25519KeyPair};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::{Client, TestCa, TestServer, backends, encode, timeline};

const C: &str = "c.lattice.test";

/// The events the simulated server has and serves.
#[derive(Default)]
struct Known {
    events: HashMap<String, Value>,
    /// The state before an event, as event ids, for `/state_ids`.
    state_before: HashMap<String, Vec<String>>,
}

struct Sim {
    key: Ed25519KeyPair,
    known: Mutex<Known>,
    /// Whether `/get_missing_events` returns events (else an empty list).
    serve_missing: AtomicBool,
    _stop: watch::Sender<bool>,
}

async fn key_document(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let public = STANDARD_NO_PAD.encode(sim.key.public_key());
    let mut document: CanonicalJsonObject = serde_json::from_value(json!({
        "server_name": C,
        "valid_until_ts": lattice::storage::now_ms() + 86_400_000,
        "verify_keys": { format!("ed25519:{}", sim.key.version()): { "key": public } },
        "old_verify_keys": {},
    }))
    .unwrap();
    ruma::signatures::sign_json(C, &sim.key, &mut document).unwrap();
    Json(serde_json::to_value(document).unwrap())
}

async fn missing_events(
    State(sim): State<Arc<Sim>>,
    Path(_room): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    if !sim.serve_missing.load(Ordering::SeqCst) {
        return Json(json!({ "events": [] }));
    }
    let known = sim.known.lock().unwrap();
    let earliest: Vec<&str> = body["earliest_events"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let mut pending: Vec<String> = body["latest_events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|id| known.events.get(id.as_str().unwrap()))
        .flat_map(|event| event["prev_events"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()))
        .collect();
    let mut found = Vec::new();
    while let Some(id) = pending.pop() {
        if earliest.contains(&id.as_str()) {
            continue;
        }
        if let Some(event) = known.events.get(&id) {
            pending.extend(event["prev_events"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()));
            found.push(event.clone());
        }
    }
    found.sort_by_key(|event| event["depth"].as_i64());
    Json(json!({ "events": found }))
}

async fn state_ids(
    State(sim): State<Arc<Sim>>,
    Path(_room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let known = sim.known.lock().unwrap();
    let ids = known.state_before.get(&query["event_id"]).cloned().unwrap_or_default();
    Json(json!({ "pdu_ids": ids, "auth_chain_ids": [] }))
}

async fn event(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Json<Value> {
    let known = sim.known.lock().unwrap();
    let pdus: Vec<Value> = known.events.get(&id).cloned().into_iter().collect();
    Json(json!({ "origin": C, "origin_server_ts": 1, "pdus": pdus }))
}

/// Starts the stand-in for `c.lattice.test` and returns it with its address.
async fn start_sim(ca: &TestCa) -> (Arc<Sim>, std::net::SocketAddr) {
    let (certificate, key) = ca.issue(C);
    let tls = lattice::federation::tls::server_config(&certificate, &key).expect("stand-in TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = watch::channel(false);
    let sim = Arc::new(Sim {
        key: Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "c1".into()).unwrap(),
        known: Mutex::default(),
        serve_missing: AtomicBool::new(true),
        _stop: stop,
    });
    let app = Router::new()
        .route("/_matrix/key/v2/server", get(key_document))
        .route("/_matrix/federation/v1/get_missing_events/{room}", post(missing_events))
        .route("/_matrix/federation/v1/state_ids/{room}", get(state_ids))
        .route("/_matrix/federation/v1/event/{id}", get(event))
        .with_state(sim.clone());
    tokio::spawn(lattice::api::federation::listener::serve_tls(listener, Arc::new(tls), app, stopped));
    (sim, addr)
}

/// One server `a` that reaches the stand-in for `c`, with a public room of alice's.
struct Setup {
    ca: TestCa,
    sim: Arc<Sim>,
    a: TestServer,
    alice: Client,
    room: ruma::OwnedRoomId,
    carol: ruma::OwnedUserId,
}

async fn setup(backend: &crate::harness::Backend) -> Setup {
    setup_version(backend, None).await
}

/// Like [`setup`], with the room in `version` instead of the default version.
async fn setup_version(backend: &crate::harness::Backend, version: Option<&str>) -> Setup {
    let ca = TestCa::new();
    let (sim, addr) = start_sim(&ca).await;
    let mut servers = TestServer::start_federated(backend, &ca, &["a.lattice.test"], |config| {
        config.federation.host_overrides.insert(C.into(), addr.to_string());
    })
    .await;
    let a = servers.pop().expect("server a");
    let alice = a.register("alice").await;
    let mut request = json!({ "preset": "public_chat" });
    if let Some(version) = version {
        request["room_version"] = json!(version);
    }
    let room = RoomId::parse(alice.create_room(request).await).unwrap();
    let carol = UserId::parse(format!("@carol:{C}")).unwrap();
    Setup { ca, sim, a, alice, room, carol }
}

impl Setup {
    async fn state(&self) -> Arc<lattice::rooms::state::RoomState> {
        self.a.homeserver.services().rooms.state(&self.room).await.expect("room state")
    }

    /// Builds and signs a PDU of `c` on top of `prev`, with the auth events
    /// that a's current state gives, and stores it in the stand-in.
    async fn pdu(
        &self,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[String],
        depth: i64,
        ts: i64,
    ) -> (String, Value) {
        let state = self.state().await;
        let raw = serde_json::value::to_raw_value(&content).unwrap();
        let auth_types = ruma::state_res::auth_types_for_event(
            &kind.into(),
            &self.carol,
            state_key,
            &raw,
            &state.rules.authorization,
        )
        .unwrap();
        let create = state.create_event().unwrap().event_id.to_string();
        let mut auth: Vec<String> = auth_types
            .iter()
            .filter_map(|(kind, key)| state.get(kind, key).map(|pdu| pdu.event_id.to_string()))
            .filter(|id| !(state.rules.authorization.room_create_event_id_as_room_id && *id == create))
            .collect();
        auth.sort();
        let mut value = json!({
            "auth_events": auth,
            "content": content,
            "depth": depth,
            "origin_server_ts": ts,
            "prev_events": prev,
            "room_id": self.room,
            "sender": self.carol,
            "type": kind,
        });
        if let Some(key) = state_key {
            value["state_key"] = json!(key);
        }
        if kind == "m.room.redaction" && !state.rules.redaction.content_field_redacts {
            value["redacts"] = value["content"]["redacts"].clone();
        }
        let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap();
        ruma::signatures::hash_and_sign_event(C, &self.sim.key, &mut object, &state.rules.redaction).expect("sign");
        let id = format!("${}", ruma::signatures::reference_hash(&object, &state.rules).unwrap());
        let value = serde_json::to_value(&object).unwrap();
        self.sim.known.lock().unwrap().events.insert(id.clone(), value.clone());
        (id, value)
    }

    async fn message(&self, body: &str, prev: &[String], depth: i64) -> (String, Value) {
        self.pdu("m.room.message", None, json!({ "msgtype": "m.text", "body": body }), prev, depth, now()).await
    }

    /// Sends a transaction from `c` to `a` and returns the per-PDU results.
    async fn send(&self, txn: &str, pdus: Vec<Value>) -> Value {
        let path = format!("/_matrix/federation/v1/send/{txn}");
        let body = json!({ "origin": C, "origin_server_ts": now(), "pdus": pdus });
        let content = CanonicalJsonValue::try_from(body.clone()).unwrap();
        let header = authorization_header(&self.sim.key, C, &self.a.server_name, "PUT", &path, Some(content)).unwrap();
        let response = self
            .ca
            .client(&[&self.a])
            .put(format!("{}{path}", self.a.federation_base()))
            .header("Authorization", header)
            .json(&body)
            .send()
            .await
            .expect("transaction sent");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("JSON")["pdus"].clone()
    }

    /// Sends a federation request signed by `c` to `a` and returns the
    /// status and JSON body.
    async fn federation_request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let content = body.as_ref().map(|body| CanonicalJsonValue::try_from(body.clone()).unwrap());
        let header = authorization_header(&self.sim.key, C, &self.a.server_name, method, path, content).unwrap();
        let url = format!("{}{path}", self.a.federation_base());
        let mut request =
            self.ca.client(&[&self.a]).request(method.parse().unwrap(), url).header("Authorization", header);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// Returns the event of the `make_{membership}` template that `a`
    /// returns for carol, with a new timestamp.
    async fn template(&self, membership: &str) -> Value {
        let room = encode(self.room.as_str());
        let mut path = format!("/_matrix/federation/v1/make_{membership}/{room}/{}", encode(self.carol.as_str()));
        if membership == "join" {
            path = format!("{path}?ver={}", self.state().await.version);
        }
        let (status, template) = self.federation_request("GET", &path, None).await;
        assert_eq!(status, 200, "make_{membership}: {template}");
        let mut event = template["event"].clone();
        event["origin_server_ts"] = json!(now());
        event
    }

    /// Hashes and signs an event as `c`, and returns its event id and PDU.
    async fn sign(&self, event: Value) -> (String, Value) {
        let rules = self.state().await.rules.clone();
        let mut object: CanonicalJsonObject = serde_json::from_value(event).unwrap();
        ruma::signatures::hash_and_sign_event(C, &self.sim.key, &mut object, &rules.redaction).expect("sign");
        let id = format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap());
        (id, serde_json::to_value(&object).unwrap())
    }

    /// Carol of `c` joins alice's public room; returns the join's id.
    async fn join_carol(&self) -> String {
        let state = self.state().await;
        let prev: Vec<String> = state.extremities.iter().map(|id| id.to_string()).collect();
        let (join, pdu) = self
            .pdu(
                "m.room.member",
                Some(self.carol.as_str()),
                json!({ "membership": "join" }),
                &prev,
                state.depth + 1,
                now(),
            )
            .await;
        let results = self.send("join", vec![pdu]).await;
        assert_eq!(results[&join], json!({}), "{results}");
        assert!(self.state().await.is_joined(&self.carol));
        join
    }

    async fn depth(&self) -> i64 {
        self.state().await.depth
    }
}

fn now() -> i64 {
    lattice::storage::now_ms()
}

fn bodies(sync: &Value, room: &RoomId) -> Vec<String> {
    timeline(sync, room.as_str())
        .iter()
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn missing_prev_events_fetched_from_origin() {
    for backend in backends() {
        let s = setup(&backend).await;
        let join = s.join_carol().await;
        let since = s.alice.sync("").await["next_batch"].as_str().unwrap().to_owned();
        let depth = s.depth().await;
        let (one, _) = s.message("one", std::slice::from_ref(&join), depth + 1).await;
        let (two, _) = s.message("two", std::slice::from_ref(&one), depth + 2).await;
        let (three, pdu) = s.message("three", std::slice::from_ref(&two), depth + 3).await;

        // Only the newest arrives, so a requests the two before it from c.
        let results = s.send("t1", vec![pdu]).await;
        assert_eq!(results[&three], json!({}), "{results}");
        let sync = s.alice.sync(&format!("since={since}")).await;
        assert_eq!(bodies(&sync, &s.room), ["one", "two", "three"], "{sync}");
        assert_eq!(s.state().await.extremities, [ruma::OwnedEventId::try_from(three).unwrap()]);
    }
}

#[tokio::test]
async fn gap_filled_from_state_at_missing_event() {
    for backend in backends() {
        let s = setup(&backend).await;
        s.sim.serve_missing.store(false, Ordering::SeqCst);
        let join = s.join_carol().await;
        let state_ids: Vec<String> = s.state().await.state.values().map(|pdu| pdu.event_id.to_string()).collect();
        let since = s.alice.sync("").await["next_batch"].as_str().unwrap().to_owned();
        let depth = s.depth().await;
        let (one, _) = s.message("one", std::slice::from_ref(&join), depth + 1).await;
        let (two, _) = s.message("two", std::slice::from_ref(&one), depth + 2).await;
        let (three, pdu) = s.message("three", std::slice::from_ref(&two), depth + 3).await;
        s.sim.known.lock().unwrap().state_before.insert(two.clone(), state_ids);

        // get_missing_events brings nothing, so a takes the state at "two"
        // and "two" itself as outliers: "three" is accepted and shown, the
        // outlier is not.
        let results = s.send("t1", vec![pdu]).await;
        assert_eq!(results[&three], json!({}), "{results}");
        let sync = s.alice.sync(&format!("since={since}")).await;
        assert_eq!(bodies(&sync, &s.room), ["three"], "{sync}");

        // The outlier "two" is served over federation: carol was joined in
        // the state after it, so her server may read it.
        let (status, body) =
            s.federation_request("GET", &format!("/_matrix/federation/v1/event/{}", encode(&two)), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pdus"][0]["content"]["body"], "two", "{body}");
        assert_eq!(body["pdus"][0], s.sim.known.lock().unwrap().events[&two], "the PDU as c signed it");

        // "three" is a forward extremity beside the join, and alice's next
        // event builds on both.
        let mut extremities: Vec<String> = s.state().await.extremities.iter().map(|id| id.to_string()).collect();
        extremities.sort();
        let mut expected = vec![join.clone(), three.clone()];
        expected.sort();
        assert_eq!(extremities, expected);
        let next = s.alice.send_text(s.room.as_str(), "after the gap").await;
        let stored = lattice::storage::events::get(&s.a.homeserver.services().db.pool, &next).await.unwrap().unwrap();
        let mut prev: Vec<String> = stored.pdu.prev_events.iter().map(|id| id.to_string()).collect();
        prev.sort();
        assert_eq!(prev, expected);

        // Carol redacts "two", which a holds only as an outlier: a then
        // serves it redacted.
        let depth = s.depth().await;
        let (redaction, pdu) = s
            .pdu("m.room.redaction", None, json!({ "redacts": two }), std::slice::from_ref(&next), depth + 1, now())
            .await;
        assert_eq!(s.send("t2", vec![pdu]).await[&redaction], json!({}));
        let (status, body) =
            s.federation_request("GET", &format!("/_matrix/federation/v1/event/{}", encode(&two)), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pdus"][0]["content"], json!({}), "{body}");
    }
}

#[tokio::test]
async fn remote_redaction_redacts_for_local_clients() {
    for backend in backends() {
        let s = setup(&backend).await;
        let join = s.join_carol().await;
        let alice_message = s.alice.send_text(s.room.as_str(), "alice's words").await;
        let depth = s.depth().await;
        let extremities: Vec<String> = s.state().await.extremities.iter().map(|id| id.to_string()).collect();
        assert_ne!(extremities, [join.clone()]);
        let (secret, message) = s.message("carol's secret", &extremities, depth + 1).await;
        let (redaction, redaction_pdu) = s
            .pdu(
                "m.room.redaction",
                None,
                json!({ "redacts": secret, "reason": "oops" }),
                std::slice::from_ref(&secret),
                depth + 2,
                now(),
            )
            .await;
        // Carol (power level 0, another server) may not redact alice's event:
        // the redaction is accepted but does not apply.
        let (foreign, foreign_pdu) = s
            .pdu(
                "m.room.redaction",
                None,
                json!({ "redacts": alice_message }),
                std::slice::from_ref(&redaction),
                depth + 3,
                now(),
            )
            .await;
        let results = s.send("t1", vec![message, redaction_pdu, foreign_pdu]).await;
        assert_eq!(results, json!({ &secret: {}, &redaction: {}, &foreign: {} }));

        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(s.room.as_str()), encode(&secret));
        let (status, event) = s.alice.get(&path).await;
        assert_eq!(status, 200, "{event}");
        assert_eq!(event["content"], json!({}), "{event}");
        assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction.as_str(), "{event}");

        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(s.room.as_str()), encode(&alice_message));
        let (_, event) = s.alice.get(&path).await;
        assert_eq!(event["content"]["body"], "alice's words", "{event}");
        assert!(event["unsigned"].get("redacted_because").is_none(), "{event}");
    }
}

#[tokio::test]
async fn redaction_before_target_applied_on_arrival() {
    for backend in backends() {
        // Room version 10 carries `redacts` at the top level of the PDU, 11
        // and later in the content.
        for version in ["10", "12"] {
            let s = setup_version(&backend, Some(version)).await;
            let join = s.join_carol().await;
            let since = s.alice.sync("").await["next_batch"].as_str().unwrap().to_owned();
            let depth = s.depth().await;

            // Carol's server builds a message and a change of her display
            // name on one branch, and their redactions on another.
            let (secret, message) = s.message("carol's secret", std::slice::from_ref(&join), depth + 1).await;
            let renamed = json!({ "membership": "join", "displayname": "Carol's secret name" });
            let (rename, rename_pdu) = s
                .pdu("m.room.member", Some(s.carol.as_str()), renamed, std::slice::from_ref(&secret), depth + 2, now())
                .await;
            let (redact_message, redact_message_pdu) = s
                .pdu(
                    "m.room.redaction",
                    None,
                    json!({ "redacts": secret, "reason": "oops" }),
                    std::slice::from_ref(&join),
                    depth + 1,
                    now(),
                )
                .await;
            let (redact_rename, redact_rename_pdu) = s
                .pdu(
                    "m.room.redaction",
                    None,
                    json!({ "redacts": rename }),
                    std::slice::from_ref(&redact_message),
                    depth + 2,
                    now(),
                )
                .await;

            // The redactions arrive first: their targets are unknown here.
            let results = s.send("t1", vec![redact_message_pdu, redact_rename_pdu]).await;
            assert_eq!(results, json!({ &redact_message: {}, &redact_rename: {} }), "room version {version}");
            let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(s.room.as_str()), encode(&secret));
            let (status, _) = s.alice.get(&path).await;
            assert_eq!(status, 404, "room version {version}: the message has not arrived yet");

            // The targets arrive: both are stored redacted.
            let results = s.send("t2", vec![message, rename_pdu]).await;
            assert_eq!(results, json!({ &secret: {}, &rename: {} }), "room version {version}");
            let (status, event) = s.alice.get(&path).await;
            assert_eq!(status, 200, "room version {version}: {event}");
            assert_eq!(event["content"], json!({}), "room version {version}: {event}");
            assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redact_message.as_str(), "{event}");

            let member_path = format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                encode(s.room.as_str()),
                encode(s.carol.as_str())
            );
            let (status, member) = s.alice.get(&member_path).await;
            assert_eq!(status, 200, "room version {version}: {member}");
            assert_eq!(member, json!({ "membership": "join" }), "room version {version}");

            // Clients never see the content of either target.
            let sync = s.alice.sync(&format!("since={since}")).await;
            let events = timeline(&sync, s.room.as_str());
            let find_event = |id: &str| events.iter().find(|e| e["event_id"] == id).cloned();
            let message_event = find_event(&secret).expect("the message is in the timeline");
            assert_eq!(message_event["content"], json!({}), "room version {version}: {sync}");
            let rename_event = find_event(&rename).expect("the member event is in the timeline");
            assert_eq!(rename_event["content"], json!({ "membership": "join" }), "room version {version}: {sync}");
            assert!(!sync.to_string().contains("carol's secret"), "room version {version}: {sync}");
            assert!(!sync.to_string().contains("Carol's secret name"), "room version {version}: {sync}");
            let messages_path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", encode(s.room.as_str()));
            let (_, messages) = s.alice.get(&messages_path).await;
            assert!(!messages.to_string().contains("secret"), "room version {version}: {messages}");

            // The redactions were consumed: a restart loads the redacted state.
            let pool = s.a.homeserver.services().db.pool.clone();
            for target in [&secret, &rename] {
                let pending = lattice::storage::redactions::of_target(&pool, target).await.unwrap();
                assert!(pending.is_empty(), "room version {version}: {pending:?}");
            }
            let a = s.a.restart().await;
            let alice = crate::harness::Client::new(&a.base, s.alice.token.clone());
            let (_, member) = alice.get(&member_path).await;
            assert_eq!(member, json!({ "membership": "join" }), "room version {version} after a restart");
            a.stop().await;
        }
    }
}

#[tokio::test]
async fn redaction_held_back_until_target_arrives() {
    for backend in backends() {
        let s = setup(&backend).await;
        s.join_carol().await;
        let alice_message = s.alice.send_text(s.room.as_str(), "alice's words").await;
        let since = s.alice.sync("").await["next_batch"].as_str().unwrap().to_owned();
        let depth = s.depth().await;
        let prev = [alice_message.clone()];
        let (secret, message) = s.message("carol's secret", &prev, depth + 1).await;
        let (redaction, redaction_pdu) =
            s.pdu("m.room.redaction", None, json!({ "redacts": secret }), &prev, depth + 1, now()).await;
        // Carol (power level 0, another server) may not redact alice's message.
        let (foreign, foreign_pdu) = s
            .pdu(
                "m.room.redaction",
                None,
                json!({ "redacts": alice_message }),
                std::slice::from_ref(&redaction),
                depth + 2,
                now(),
            )
            .await;
        let results = s.send("t1", vec![redaction_pdu, foreign_pdu]).await;
        assert_eq!(results, json!({ &redaction: {}, &foreign: {} }), "{backend:?}");

        // Neither redaction reaches alice's client: one waits for its target,
        // the other does not apply.
        let room = encode(s.room.as_str());
        let sync = s.alice.sync(&format!("since={since}")).await.to_string();
        assert!(!sync.contains(&redaction), "{backend:?}: {sync}");
        assert!(!sync.contains(&foreign), "{backend:?}: {sync}");
        let messages_path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
        let (status, messages) = s.alice.get(&messages_path).await;
        assert_eq!(status, 200, "{backend:?}: {messages}");
        assert!(!messages.to_string().contains(&redaction), "{backend:?}: {messages}");
        assert!(!messages.to_string().contains(&foreign), "{backend:?}: {messages}");
        let context_path = format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=10", encode(&alice_message));
        let (status, context) = s.alice.get(&context_path).await;
        assert_eq!(status, 200, "{backend:?}: {context}");
        assert!(!context.to_string().contains(&redaction), "{backend:?}: {context}");
        for id in [&redaction, &foreign] {
            let response = s.alice.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", encode(id))).await;
            crate::harness::assert_error(&response, reqwest::StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }

        // The target arrives: it is redacted, and the redaction shows.
        let results = s.send("t2", vec![message]).await;
        assert_eq!(results, json!({ &secret: {} }), "{backend:?}");
        let (_, messages) = s.alice.get(&messages_path).await;
        let chunk = messages["chunk"].as_array().unwrap();
        let target = chunk.iter().find(|e| e["event_id"] == secret.as_str()).expect("the target in /messages");
        assert_eq!(target["content"], json!({}), "{backend:?}: {target}");
        assert_eq!(target["unsigned"]["redacted_because"]["event_id"], redaction.as_str(), "{backend:?}: {target}");
        assert!(chunk.iter().any(|e| e["event_id"] == redaction.as_str()), "{backend:?}: {messages}");
        assert!(!messages.to_string().contains(&foreign), "{backend:?}: {messages}");
        let (status, shown) =
            s.alice.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", encode(&redaction))).await;
        assert_eq!(status, 200, "{backend:?}: {shown}");
        assert_eq!(shown["content"]["redacts"], secret.as_str(), "{backend:?}: {shown}");
        let (_, words) =
            s.alice.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", encode(&alice_message))).await;
        assert_eq!(words["content"]["body"], "alice's words", "{backend:?}: {words}");
    }
}

#[tokio::test]
async fn v1_send_join_and_send_leave() {
    for backend in backends() {
        let s = setup(&backend).await;
        let member_path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            encode(s.room.as_str()),
            encode(s.carol.as_str())
        );

        // A join template turned into a leave is not a join: the spec's
        // error JSON, not the v1 array.
        let mut not_join = s.template("join").await;
        not_join["content"]["membership"] = json!("leave");
        let (not_join_id, not_join) = s.sign(not_join).await;
        let path = format!("/_matrix/federation/v1/send_join/{}/{}", encode(s.room.as_str()), encode(&not_join_id));
        let (status, body) = s.federation_request("PUT", &path, Some(not_join)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errcode"], "M_BAD_JSON", "{body}");
        assert!(body["error"].as_str().unwrap().contains("membership"), "{body}");

        // Carol joins through the v1 endpoint, which returns [200, {state, auth_chain}].
        let (join_id, join) = s.sign(s.template("join").await).await;
        let path = format!("/_matrix/federation/v1/send_join/{}/{}", encode(s.room.as_str()), encode(&join_id));
        let (status, body) = s.federation_request("PUT", &path, Some(join)).await;
        assert_eq!(status, 200, "{body}");
        let pair = body.as_array().expect("a two-element array");
        assert_eq!(pair.len(), 2, "{body}");
        assert_eq!(pair[0], 200, "{body}");
        let answer = pair[1].as_object().expect("an object");
        let mut keys: Vec<&str> = answer.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["auth_chain", "state"], "{body}");
        let state = answer["state"].as_array().unwrap();
        assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{body}");
        assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == s.alice.user_id.as_str()));
        assert!(state.iter().all(|e| e["state_key"] != s.carol.as_str()), "the state before the join: {body}");
        assert!(!answer["auth_chain"].as_array().unwrap().is_empty(), "{body}");
        let (status, member) = s.alice.get(&member_path).await;
        assert_eq!(status, 200, "{member}");
        assert_eq!(member["membership"], "join", "{member}");

        // Carol leaves through the v1 endpoint, which returns [200, {}].
        let (leave_id, leave) = s.sign(s.template("leave").await).await;
        let path = format!("/_matrix/federation/v1/send_leave/{}/{}", encode(s.room.as_str()), encode(&leave_id));
        let (status, body) = s.federation_request("PUT", &path, Some(leave)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!([200, {}]));
        let (_, member) = s.alice.get(&member_path).await;
        assert_eq!(member["membership"], "leave", "{member}");

        // A room this server does not know gets 404.
        let unknown_room =
            format!("/_matrix/federation/v1/send_leave/{}/{}", encode("!nowhere:c.lattice.test"), encode(&leave_id));
        let (status, body) = s.federation_request("PUT", &unknown_room, Some(json!({}))).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");
    }
}

#[tokio::test]
async fn event_failing_current_state_soft_failed() {
    for backend in backends() {
        let s = setup(&backend).await;
        s.join_carol().await;
        let depth = s.depth().await;
        let before_ban: Vec<String> = s.state().await.extremities.iter().map(|id| id.to_string()).collect();
        let (hello, pdu) = s.message("hello", &before_ban, depth + 1).await;
        assert_eq!(s.send("t1", vec![pdu]).await[&hello], json!({}));

        // Alice bans carol; carol's server then sends an event built before
        // it learnt of the ban. It passes against the state before it but
        // not against the current state: accepted, stored, never shown.
        let (late, pdu) = s.message("sent while banned", std::slice::from_ref(&hello), depth + 2).await;
        let since = s.alice.sync("").await["next_batch"].as_str().unwrap().to_owned();
        let (status, body) = s
            .alice
            .post(
                &format!("/_matrix/client/v3/rooms/{}/ban", encode(s.room.as_str())),
                json!({ "user_id": s.carol, "reason": "spam" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let extremities = s.state().await.extremities.clone();
        assert_eq!(s.send("t2", vec![pdu]).await[&late], json!({}));

        let sync = s.alice.sync(&format!("since={since}")).await;
        let events = timeline(&sync, s.room.as_str());
        assert!(events.iter().any(|e| e["content"]["membership"] == "ban"), "{sync}");
        assert!(events.iter().all(|e| e["event_id"] != late.as_str()), "{sync}");
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", encode(s.room.as_str()));
        let (_, messages) = s.alice.get(&path).await;
        assert!(messages["chunk"].as_array().unwrap().iter().all(|e| e["event_id"] != late.as_str()), "{messages}");
        assert_eq!(s.state().await.extremities, extremities, "a soft-failed event is not built upon");
    }
}

#[tokio::test]
async fn power_level_fork_resolved() {
    for backend in backends() {
        let s = setup(&backend).await;
        s.join_carol().await;
        let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", encode(s.room.as_str()));
        let (_, mut levels) = s.alice.get(&levels_path).await;
        levels["users"][s.carol.as_str()] = json!(100);
        let (status, body) = s.alice.put(&levels_path, levels.clone()).await;
        assert_eq!(status, 200, "{body}");

        // Both change the power levels on top of the same event: carol's
        // change reaches a after alice's.
        let fork: Vec<String> = s.state().await.extremities.iter().map(|id| id.to_string()).collect();
        let depth = s.depth().await;
        let mut carols = levels.clone();
        carols["events_default"] = json!(10);
        let (carol_levels, pdu) =
            s.pdu("m.room.power_levels", Some(""), carols, &fork, depth + 1, now() + 60_000).await;
        let mut alices = levels.clone();
        alices["ban"] = json!(75);
        let (status, body) = s.alice.put(&levels_path, alices).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.send("t1", vec![pdu]).await[&carol_levels], json!({}));

        // Both are forward extremities, and the resolved state contains carol's
        // event: alice's comes first in the resolution's power ordering
        // (greater power, or the same and an earlier timestamp), so carol's,
        // which is allowed on top of it, replaces it.
        assert_eq!(s.state().await.extremities.len(), 2);
        let (_, resolved) = s.alice.get(&levels_path).await;
        assert_eq!(resolved["events_default"], 10, "{resolved}");
        assert_eq!(resolved.get("ban").and_then(Value::as_i64).unwrap_or(50), 50, "{resolved}");
        let (_, full) = s.alice.get(&format!("/_matrix/client/v3/rooms/{}/state", encode(s.room.as_str()))).await;
        let in_full = full.as_array().unwrap().iter().find(|e| e["type"] == "m.room.power_levels").unwrap();
        assert_eq!(in_full["event_id"], carol_levels.as_str(), "{full}");

        // The next local event builds on both forks and keeps the resolved state.
        let next = s.alice.send_text(s.room.as_str(), "after the fork").await;
        let stored = lattice::storage::events::get(&s.a.homeserver.services().db.pool, &next).await.unwrap().unwrap();
        assert_eq!(stored.pdu.prev_events.len(), 2);
        let (_, after) = s.alice.get(&levels_path).await;
        assert_eq!(after["events_default"], 10, "{after}");
    }
}

/// Reads the state of a room as a client of one server sees it: `(type, state_key, event_id)`, sorted.
async fn state_ids_of(client: &Client, room: &str) -> Vec<(String, String, String)> {
    let (status, state) = client.get(&format!("/_matrix/client/v3/rooms/{}/state", encode(room))).await;
    assert_eq!(status, 200, "{state}");
    let mut ids: Vec<(String, String, String)> = state
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap_or_default().to_owned();
            (field("type"), field("state_key"), field("event_id"))
        })
        .collect();
    ids.sort();
    ids
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn power_level_fork_same_on_both_servers() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers = TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |config| {
            config.federation.sender_retry_initial_ms = 100;
        })
        .await;
        let b = servers.pop().expect("server b");
        let a = servers.pop().expect("server a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;
        let room = alice.create_room(json!({ "preset": "public_chat" })).await;
        let (status, body) =
            bob.post(&format!("/_matrix/client/v3/join/{}?server_name=a.lattice.test", encode(&room)), json!({})).await;
        assert_eq!(status, 200, "{body}");
        let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", encode(&room));
        let (_, mut levels) = alice.get(&levels_path).await;
        levels["users"][bob.user_id.as_str()] = json!(100);
        let (status, body) = alice.put(&levels_path, levels.clone()).await;
        assert_eq!(status, 200, "{body}");
        eventually("bob's power level on b", async || {
            bob.get(&levels_path).await.1["users"][bob.user_id.as_str()] == 100
        })
        .await;
        let base = alice.get(&levels_path).await.1;
        let base_id =
            state_ids_of(&alice, &room).await.into_iter().find(|(t, _, _)| t == "m.room.power_levels").unwrap().2;

        // Both change the power levels at the same moment, each on its own server.
        let mut alices = base.clone();
        alices["ban"] = json!(75);
        let mut bobs = base.clone();
        bobs["events_default"] = json!(10);
        let (from_a, from_b) = tokio::join!(alice.put(&levels_path, alices), bob.put(&levels_path, bobs));
        assert_eq!(from_a.0, 200, "{}", from_a.1);
        assert_eq!(from_b.0, 200, "{}", from_b.1);
        let (a_event, b_event) = (from_a.1["event_id"].as_str().unwrap(), from_b.1["event_id"].as_str().unwrap());

        // Each server receives the other's event; both then hold the same state.
        let has = |server: &TestServer, id: &str| {
            let pool = server.homeserver.services().db.pool.clone();
            let id = id.to_owned();
            async move { lattice::storage::events::get(&pool, &id).await.unwrap() }
        };
        eventually("both events on both servers", async || {
            has(&a, b_event).await.is_some() && has(&b, a_event).await.is_some()
        })
        .await;
        let on_a = state_ids_of(&alice, &room).await;
        let on_b = state_ids_of(&bob, &room).await;
        assert_eq!(on_a, on_b);
        let (_, levels_a) = alice.get(&levels_path).await;
        let (_, levels_b) = bob.get(&levels_path).await;
        assert_eq!(levels_a, levels_b);

        // When both were built on the same event (the usual case), the fork
        // was resolved: alice, the creator, outranks bob, so her change comes
        // first in the power ordering and bob's, allowed on top of it, wins.
        let a_pdu = has(&a, a_event).await.unwrap();
        let b_pdu = has(&a, b_event).await.unwrap();
        if a_pdu.pdu.prev_events == b_pdu.pdu.prev_events {
            assert_eq!(a_pdu.pdu.prev_events.len(), 1);
            assert_eq!(levels_a["events_default"], 10, "{levels_a}");
            assert_eq!(levels_a.get("ban").and_then(Value::as_i64).unwrap_or(50), 50, "{levels_a}");
            let power = on_a.iter().find(|(t, _, _)| t == "m.room.power_levels").unwrap();
            assert_eq!(power.2, b_event);
            assert_ne!(power.2, base_id);
        }
    }
}
