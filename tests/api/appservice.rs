//! Application services: registration files, as_token authentication and
//! identity assertion, exclusive namespaces, transactions pushed to an
//! in-test application service (order, retries, restarts), user and alias
//! queries, ping, third-party lookups, and rate-limit exemption.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode as AxumStatus, Uri},
    response::IntoResponse,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Client, TestServer, assert_error, backends, encode};

const AS_TOKEN: &str = "bridge-as-token";
const HS_TOKEN: &str = "bridge-hs-token";

/// One request that the homeserver made to the application service.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    authorization: String,
    body: Value,
}

/// What the in-test application service does, and what it received.
#[derive(Default)]
struct Bridge {
    requests: Mutex<Vec<Recorded>>,
    /// Number of transactions that get HTTP 500 before the next one succeeds.
    failures_left: AtomicUsize,
    /// Whether every transaction gets HTTP 500.
    down: AtomicBool,
    /// The homeserver's base URL, for creating users and aliases on a query.
    homeserver: Mutex<Option<String>>,
    /// Users that the bridge creates when asked about them.
    known_users: Mutex<HashSet<String>>,
}

impl Bridge {
    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn transactions(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path.starts_with("/_matrix/app/v1/transactions/")).collect()
    }

    fn homeserver_client(&self, user_id: Option<&str>) -> (Client, String) {
        let base = self.homeserver.lock().unwrap().clone().expect("homeserver URL set");
        let query = user_id.map(|u| format!("?user_id={}", encode(u))).unwrap_or_default();
        (Client::new(&base, Some(AS_TOKEN.to_owned())), query)
    }
}

/// Starts the in-test application service on an ephemeral loopback port.
async fn start_bridge() -> (Arc<Bridge>, SocketAddr) {
    let bridge = Arc::new(Bridge::default());
    let state = bridge.clone();
    let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let bridge = state.clone();
        async move { handle(bridge, method, uri, headers, body).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the bridge");
    let addr = listener.local_addr().expect("bridge address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (bridge, addr)
}

async fn handle(bridge: Arc<Bridge>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy().into_owned();
    let recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_owned(),
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    bridge.requests.lock().unwrap().push(recorded);
    let ok = |body: Value| (AxumStatus::OK, axum::Json(body));
    let not_found = || (AxumStatus::NOT_FOUND, axum::Json(json!({ "errcode": "M_NOT_FOUND", "error": "unknown" })));

    if path.starts_with("/_matrix/app/v1/transactions/") {
        if bridge.down.load(Ordering::SeqCst) {
            return (AxumStatus::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": "down" })));
        }
        if bridge.failures_left.load(Ordering::SeqCst) > 0 {
            bridge.failures_left.fetch_sub(1, Ordering::SeqCst);
            return (AxumStatus::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": "try again" })));
        }
        return ok(json!({}));
    }
    if let Some(user_id) = path.strip_prefix("/_matrix/app/v1/users/") {
        if !bridge.known_users.lock().unwrap().contains(user_id) {
            return not_found();
        }
        let localpart = user_id.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
        let (client, _) = bridge.homeserver_client(None);
        let (status, body) = client
            .post(
                "/_matrix/client/v3/register",
                json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "bridge registers {user_id}: {body}");
        return ok(json!({}));
    }
    if let Some(alias) = path.strip_prefix("/_matrix/app/v1/rooms/") {
        if !alias.starts_with("#_bridge_room") {
            return not_found();
        }
        let localpart = alias.trim_start_matches('#').split(':').next().unwrap_or_default().to_owned();
        let (client, _) = bridge.homeserver_client(None);
        let (status, body) = client
            .post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": localpart, "preset": "public_chat" }))
            .await;
        assert_eq!(status, StatusCode::OK, "bridge creates {alias}: {body}");
        return ok(json!({}));
    }
    match path.as_str() {
        "/_matrix/app/v1/ping" => ok(json!({})),
        "/_matrix/app/v1/thirdparty/protocol/irc" => ok(json!({
            "user_fields": ["network", "nickname"],
            "location_fields": ["network", "channel"],
            "icon": "mxc://example.org/irc",
            "field_types": {},
            "instances": [{ "desc": "Libera", "network_id": "libera", "fields": {} }],
        })),
        "/_matrix/app/v1/thirdparty/location/irc" => ok(json!([{
            "alias": "#_bridge_room_irc:localhost",
            "protocol": "irc",
            "fields": { "network": "libera", "channel": "#matrix" },
        }])),
        "/_matrix/app/v1/thirdparty/user" => ok(json!([{
            "userid": "@_bridge_nick:localhost",
            "protocol": "irc",
            "fields": { "nickname": "nick" },
        }])),
        _ => not_found(),
    }
}

fn registration_yaml(id: &str, url: &str, extra: &str) -> String {
    format!(
        r##"id: "{id}"
url: "{url}"
as_token: "{AS_TOKEN}"
hs_token: "{HS_TOKEN}"
sender_localpart: "_bridge_bot"
rate_limited: false
receive_ephemeral: true
protocols: ["irc"]
namespaces:
  users:
    - exclusive: true
      regex: "@_bridge_.*"
  aliases:
    - exclusive: true
      regex: "#_bridge_.*"
  rooms: []
{extra}"##
    )
}

/// A homeserver with the bridge registered, its registration file, and the bridge.
struct Setup {
    server: TestServer,
    bridge: Arc<Bridge>,
    registration: std::path::PathBuf,
    _files: tempfile::TempDir,
}

async fn setup(backend: &Backend) -> Setup {
    setup_with(backend, |_| {}).await
}

async fn setup_with(backend: &Backend, configure: impl FnOnce(&mut lattice::Config)) -> Setup {
    let (bridge, addr) = start_bridge().await;
    let files = tempfile::tempdir().expect("temporary directory");
    let registration = files.path().join("bridge.yaml");
    std::fs::write(&registration, registration_yaml("bridge", &format!("http://{addr}"), "")).unwrap();
    let path = registration.clone();
    let server = TestServer::start_with(backend, move |config| {
        config.appservice.registrations = vec![path];
        configure(config);
    })
    .await;
    *bridge.homeserver.lock().unwrap() = Some(server.base.clone());
    Setup { server, bridge, registration, _files: files }
}

/// Returns a client that authenticates with the as_token, so it acts as the sender.
fn appservice_client(server: &TestServer) -> Client {
    Client::new(&server.base, Some(AS_TOKEN.to_owned()))
}

fn as_user(path: &str, user_id: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}user_id={}", encode(user_id))
}

async fn register_ghost(server: &TestServer, localpart: &str) -> String {
    let (status, body) = appservice_client(server)
        .post(
            "/_matrix/client/v3/register",
            json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "register {localpart}: {body}");
    assert_eq!(body["user_id"], server.user_id(localpart));
    assert!(body.get("access_token").is_none(), "inhibit_login returns no token: {body}");
    server.user_id(localpart)
}

/// Polls the bridge until `done` holds, for at most 30 seconds, which leaves room for a loaded CI machine.
async fn wait_until(bridge: &Bridge, what: &str, done: impl Fn(&[Recorded]) -> bool) -> Vec<Recorded> {
    for _ in 0..600 {
        let requests = bridge.requests();
        if done(&requests) {
            return requests;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; the bridge received: {:#?}", bridge.requests());
}

/// Returns the bodies of `m.room.message` events in the transactions, in the order received.
fn message_bodies(transactions: &[Recorded]) -> Vec<String> {
    let mut seen_txns = HashSet::new();
    let mut bodies = Vec::new();
    for txn in transactions {
        // A retried transaction repeats its events; count each transaction once.
        if !seen_txns.insert(txn.path.clone()) {
            continue;
        }
        for event in txn.body["events"].as_array().into_iter().flatten() {
            if event["type"] == "m.room.message" {
                bodies.push(event["content"]["body"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    bodies
}

fn txn_id(recorded: &Recorded) -> i64 {
    recorded.path.rsplit('/').next().unwrap().parse().expect("numeric transaction id")
}

/// Creates a room of `human` with the ghost joined through identity assertion.
async fn room_with_ghost(server: &TestServer, human: &Client, ghost: &str) -> String {
    let room_id = human.create_room(json!({ "preset": "public_chat" })).await;
    let bridge = appservice_client(server);
    let (status, body) =
        bridge.post(&as_user(&format!("/_matrix/client/v3/join/{}", encode(&room_id)), ghost), json!({})).await;
    assert_eq!(status, StatusCode::OK, "ghost joins: {body}");
    room_id
}

#[tokio::test]
async fn identity_assertion_and_registration() {
    for backend in backends() {
        let Setup { server, .. } = setup(&backend).await;
        let bridge = appservice_client(&server);

        let (status, body) = bridge.get("/_matrix/client/v3/account/whoami").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], server.user_id("_bridge_bot"), "the as_token acts as the sender");

        let ghost = register_ghost(&server, "_bridge_alice").await;
        let (status, body) = bridge.get(&as_user("/_matrix/client/v3/account/whoami", &ghost)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], ghost);

        // The deprecated access_token query parameter works too.
        let anonymous = server.client();
        let path = format!("/_matrix/client/v3/account/whoami?access_token={AS_TOKEN}&user_id={}", encode(&ghost));
        let (status, body) = anonymous.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], ghost);

        // A namespace user that was never registered cannot be used.
        let response = bridge.get(&as_user("/_matrix/client/v3/account/whoami", "@_bridge_nobody:localhost")).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A user outside the namespaces cannot be used.
        server.register("carol").await;
        let response = bridge.get(&as_user("/_matrix/client/v3/account/whoami", &server.user_id("carol"))).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_EXCLUSIVE");

        // m.login.application_service logs a ghost in without a password.
        let (status, body) = bridge
            .post(
                "/_matrix/client/v3/login",
                json!({ "type": "m.login.application_service", "identifier": { "type": "m.id.user", "user": "_bridge_alice" } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["user_id"], ghost);
        let ghost_client = Client::new(&server.base, body["access_token"].as_str().map(str::to_owned));
        let (_, whoami) = ghost_client.get("/_matrix/client/v3/account/whoami").await;
        assert_eq!(whoami["user_id"], ghost);
        assert_eq!(whoami["device_id"], body["device_id"]);

        let (_, flows) = anonymous.get("/_matrix/client/v3/login").await;
        assert!(
            flows["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.application_service"),
            "{flows}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn ts_parameter_sets_event_time() {
    for backend in backends() {
        let Setup { server, .. } = setup(&backend).await;
        let ghost = register_ghost(&server, "_bridge_alice").await;
        let human = server.register("bob").await;
        let room_id = room_with_ghost(&server, &human, &ghost).await;
        let bridge = appservice_client(&server);

        let path = as_user(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1?ts=1500000000000", encode(&room_id)),
            &ghost,
        );
        let (status, body) = bridge.put(&path, json!({ "msgtype": "m.text", "body": "from the past" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let event_path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            encode(&room_id),
            encode(body["event_id"].as_str().unwrap())
        );
        let (_, event) = human.get(&event_path).await;
        assert_eq!(event["origin_server_ts"], 1_500_000_000_000u64);

        // Members may change their own member event, so the state path needs no extra power.
        let state_path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}?ts=1500000000001",
            encode(&room_id),
            encode(&ghost)
        );
        let path = as_user(&state_path, &ghost);
        let (status, body) = bridge.put(&path, json!({ "membership": "join", "displayname": "Alice (remote)" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let event_path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            encode(&room_id),
            encode(body["event_id"].as_str().unwrap())
        );
        let (_, event) = human.get(&event_path).await;
        assert_eq!(event["origin_server_ts"], 1_500_000_000_001u64);

        let path = as_user(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t2?ts=yesterday", encode(&room_id)),
            &ghost,
        );
        let response = bridge.put(&path, json!({ "msgtype": "m.text", "body": "bad time" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        // A normal user's ts is ignored.
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/h1?ts=1500000000000", encode(&room_id));
        let (status, body) = human.put(&path, json!({ "msgtype": "m.text", "body": "now" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let event_path = format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            encode(&room_id),
            encode(body["event_id"].as_str().unwrap())
        );
        let (_, event) = human.get(&event_path).await;
        assert!(event["origin_server_ts"].as_u64().unwrap() > 1_600_000_000_000, "{event}");
        server.stop().await;
    }
}

#[tokio::test]
async fn exclusive_namespaces_reject_others() {
    for backend in backends() {
        let Setup { server, .. } = setup(&backend).await;
        let anonymous = server.client();

        let response = anonymous
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": "_bridge_mallory", "password": "correct horse", "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
        let response = anonymous.get("/_matrix/client/v3/register/available?username=_bridge_mallory").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");

        // The application service cannot register outside its namespaces.
        let response = appservice_client(&server)
            .post("/_matrix/client/v3/register", json!({ "type": "m.login.application_service", "username": "dave" }))
            .await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");

        // m.login.application_service needs the as_token.
        let body = json!({ "type": "m.login.application_service", "username": "_bridge_eve" });
        let response = anonymous.post("/_matrix/client/v3/register", body.clone()).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        let wrong = Client::new(&server.base, Some("not-the-as-token".into()));
        let response = wrong.post("/_matrix/client/v3/register", body).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

        // Aliases in the exclusive namespace belong to the application service.
        let human = server.register("frank").await;
        let response =
            human.post("/_matrix/client/v3/createRoom", json!({ "room_alias_name": "_bridge_room_frank" })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
        let room_id = human.create_room(json!({})).await;
        let alias = "#_bridge_room_x:localhost";
        let path = format!("/_matrix/client/v3/directory/room/{}", encode(alias));
        let response = human.put(&path, json!({ "room_id": room_id })).await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
        let (status, body) = appservice_client(&server).put(&path, json!({ "room_id": room_id })).await;
        assert_eq!(status, StatusCode::OK, "the application service sets its alias: {body}");
        server.stop().await;
    }
}

#[tokio::test]
async fn transactions_carry_interesting_events_in_order() {
    for backend in backends() {
        let Setup { server, bridge, .. } = setup(&backend).await;
        let ghost = register_ghost(&server, "_bridge_alice").await;
        let human = server.register("bob").await;
        let room_id = room_with_ghost(&server, &human, &ghost).await;
        let unrelated = human.create_room(json!({})).await;

        human.send_text(&unrelated, "not for the bridge").await;
        for body in ["one", "two", "three"] {
            human.send_text(&room_id, body).await;
        }
        let (status, _) = human
            .put(
                &format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(&room_id), encode(&human.user_id)),
                json!({ "typing": true, "timeout": 30000 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let requests = wait_until(&bridge, "three messages and a typing notification", |requests| {
            let txns: Vec<Recorded> =
                requests.iter().filter(|r| r.path.starts_with("/_matrix/app/v1/transactions/")).cloned().collect();
            message_bodies(&txns).len() >= 3
                && txns
                    .iter()
                    .any(|t| t.body["ephemeral"].as_array().is_some_and(|e| e.iter().any(|e| e["type"] == "m.typing")))
        })
        .await;
        let transactions: Vec<Recorded> =
            requests.into_iter().filter(|r| r.path.starts_with("/_matrix/app/v1/transactions/")).collect();

        assert_eq!(
            message_bodies(&transactions),
            ["one", "two", "three"],
            "messages in stream order, unrelated room left out"
        );
        for txn in &transactions {
            assert_eq!(txn.method, "PUT");
            assert_eq!(txn.authorization, format!("Bearer {HS_TOKEN}"));
            for event in txn.body["events"].as_array().unwrap() {
                assert_eq!(event["room_id"], room_id, "only the ghost's room: {event}");
                assert!(event["event_id"].as_str().is_some_and(|id| id.starts_with('$')));
            }
        }
        let ids: Vec<i64> = transactions.iter().map(txn_id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "transaction ids increase: {ids:?}");

        let join = transactions
            .iter()
            .flat_map(|t| t.body["events"].as_array().unwrap().clone())
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == ghost)
            .expect("the ghost's join is delivered");
        assert_eq!(join["content"]["membership"], "join");

        let typing = transactions
            .iter()
            .flat_map(|t| t.body["ephemeral"].as_array().cloned().unwrap_or_default())
            .find(|e| e["type"] == "m.typing")
            .unwrap();
        assert_eq!(typing["room_id"], room_id);
        assert_eq!(typing["content"]["user_ids"], json!([human.user_id]));
        server.stop().await;
    }
}

#[tokio::test]
async fn failed_transaction_is_retried_with_same_id() {
    for backend in backends() {
        let Setup { server, bridge, .. } = setup(&backend).await;
        let ghost = register_ghost(&server, "_bridge_alice").await;
        let human = server.register("bob").await;
        let room_id = room_with_ghost(&server, &human, &ghost).await;
        wait_until(&bridge, "the join", |_| !bridge.transactions().is_empty()).await;

        bridge.failures_left.store(2, Ordering::SeqCst);
        human.send_text(&room_id, "retried").await;
        wait_until(&bridge, "three attempts", |_| {
            bridge.transactions().iter().filter(|t| message_bodies(std::slice::from_ref(t)) == ["retried"]).count() >= 3
        })
        .await;
        let attempts: Vec<Recorded> = bridge
            .transactions()
            .into_iter()
            .filter(|t| message_bodies(std::slice::from_ref(t)) == ["retried"])
            .collect();
        assert_eq!(attempts.len(), 3, "two failures and one success");
        assert!(attempts.iter().all(|a| a.path == attempts[0].path), "same transaction id on every attempt");
        assert!(attempts.iter().all(|a| a.body == attempts[0].body), "same body on every attempt");

        human.send_text(&room_id, "after").await;
        let transactions = wait_until(&bridge, "the next message", |_| {
            message_bodies(&bridge.transactions()).contains(&"after".to_owned())
        })
        .await;
        let next = transactions
            .iter()
            .find(|t| message_bodies(std::slice::from_ref(t)) == ["after"])
            .expect("a transaction with the next message");
        assert_eq!(txn_id(next), txn_id(&attempts[0]) + 1, "the next transaction takes the next id");
        assert_eq!(message_bodies(&bridge.transactions()).iter().filter(|b| *b == "retried").count(), 1);
        server.stop().await;
    }
}

#[tokio::test]
async fn pending_transaction_survives_restart() {
    for backend in backends() {
        // The data directory outlives the first server, which removes its own when it stops.
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_path_buf();
        let setup = setup_with(&backend, move |config| config.data_dir = data_dir).await;
        let (server, bridge) = (setup.server, setup.bridge.clone());
        let ghost = register_ghost(&server, "_bridge_alice").await;
        let human = server.register("bob").await;
        let room_id = room_with_ghost(&server, &human, &ghost).await;
        wait_until(&bridge, "the join", |_| !bridge.transactions().is_empty()).await;

        bridge.down.store(true, Ordering::SeqCst);
        human.send_text(&room_id, "while down").await;
        wait_until(&bridge, "a failed attempt", |_| {
            message_bodies(&bridge.transactions()).contains(&"while down".into())
        })
        .await;
        let first = bridge
            .transactions()
            .into_iter()
            .find(|t| message_bodies(std::slice::from_ref(t)) == ["while down"])
            .unwrap();

        let services = server.homeserver.services().clone();
        let (data_dir, database_url) = (services.config.data_dir.clone(), services.config.database.url.clone());
        drop(services);
        let database = server.stop().await;

        bridge.down.store(false, Ordering::SeqCst);
        bridge.requests.lock().unwrap().clear();
        let path = setup.registration.clone();
        let mut restarted = TestServer::start_with(&backend, move |config| {
            config.data_dir = data_dir;
            config.database.url = database_url;
            config.appservice.registrations = vec![path];
        })
        .await;
        restarted.adopt_database(database);
        let transactions = wait_until(&bridge, "the resent transaction", |_| {
            message_bodies(&bridge.transactions()).contains(&"while down".into())
        })
        .await;
        let resent = transactions.iter().find(|t| message_bodies(std::slice::from_ref(t)) == ["while down"]).unwrap();
        assert_eq!(resent.path, first.path, "same transaction id after the restart");
        assert_eq!(resent.body, first.body, "same body after the restart");
        restarted.stop().await;
    }
}

#[tokio::test]
async fn down_appservice_does_not_delay_sends() {
    for backend in backends() {
        let Setup { server, bridge, .. } = setup(&backend).await;
        let ghost = register_ghost(&server, "_bridge_alice").await;
        let human = server.register("bob").await;
        let room_id = room_with_ghost(&server, &human, &ghost).await;
        bridge.down.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        for index in 0..20 {
            human.send_text(&room_id, &format!("message {index}")).await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "20 sends took {elapsed:?} with the bridge down");
        let sync = human.sync("timeout=0").await;
        let events = crate::harness::timeline(&sync, &room_id);
        assert_eq!(events.last().unwrap()["content"]["body"], "message 19");
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_user_and_alias_are_queried() {
    for backend in backends() {
        let Setup { server, bridge, .. } = setup(&backend).await;
        bridge.known_users.lock().unwrap().insert("@_bridge_carol:localhost".into());
        let human = server.register("bob").await;

        let (status, body) =
            human.get(&format!("/_matrix/client/v3/profile/{}", encode("@_bridge_carol:localhost"))).await;
        assert_eq!(status, StatusCode::OK, "the bridge created the user on the query: {body}");
        assert_eq!(body["displayname"], "_bridge_carol");
        let query = bridge.requests().into_iter().find(|r| r.path.starts_with("/_matrix/app/v1/users/")).unwrap();
        assert_eq!(query.method, "GET");
        assert_eq!(query.path, "/_matrix/app/v1/users/@_bridge_carol:localhost");
        assert_eq!(query.authorization, format!("Bearer {HS_TOKEN}"));

        let response = human.get(&format!("/_matrix/client/v3/profile/{}", encode("@_bridge_nobody:localhost"))).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // Users outside every namespace are not asked about.
        let before = bridge.requests().len();
        let response = human.get(&format!("/_matrix/client/v3/profile/{}", encode("@stranger:localhost"))).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert_eq!(bridge.requests().len(), before);

        let alias = "#_bridge_room_general:localhost";
        let (status, body) = human.get(&format!("/_matrix/client/v3/directory/room/{}", encode(alias))).await;
        assert_eq!(status, StatusCode::OK, "the bridge created the alias on the query: {body}");
        assert!(body["room_id"].as_str().is_some_and(|id| id.starts_with('!')), "{body}");
        assert!(
            bridge.requests().iter().any(|r| r.method == "GET" && r.path == format!("/_matrix/app/v1/rooms/{alias}"))
        );

        let (status, joined) = human.post(&format!("/_matrix/client/v3/join/{}", encode(alias)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{joined}");
        assert_eq!(joined["room_id"], body["room_id"]);

        let response =
            human.get(&format!("/_matrix/client/v3/directory/room/{}", encode("#_bridge_other:localhost"))).await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn ping_reaches_the_appservice() {
    for backend in backends() {
        let Setup { server, bridge, .. } = setup(&backend).await;
        let bridge_client = appservice_client(&server);
        let (status, body) =
            bridge_client.post("/_matrix/client/v1/appservice/bridge/ping", json!({ "transaction_id": "meow" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["duration_ms"].as_u64().is_some_and(|ms| ms >= 1), "{body}");
        let ping = bridge.requests().into_iter().find(|r| r.path == "/_matrix/app/v1/ping").unwrap();
        assert_eq!(ping.method, "POST");
        assert_eq!(ping.body, json!({ "transaction_id": "meow" }));
        assert_eq!(ping.authorization, format!("Bearer {HS_TOKEN}"));

        let response = bridge_client.post("/_matrix/client/v1/appservice/other/ping", json!({})).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let human = server.register("bob").await;
        let response = human.post("/_matrix/client/v1/appservice/bridge/ping", json!({})).await;
        assert_error(&response, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        server.stop().await;
    }
}

#[tokio::test]
async fn ping_reports_unreachable_appservice() {
    for backend in backends() {
        // A port that was just free: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let files = tempfile::tempdir().unwrap();
        let path = files.path().join("down.yaml");
        std::fs::write(&path, registration_yaml("down", &format!("http://{closed}"), "")).unwrap();
        let server = TestServer::start_with(&backend, move |config| config.appservice.registrations = vec![path]).await;
        let response = appservice_client(&server).post("/_matrix/client/v1/appservice/down/ping", json!({})).await;
        assert_error(&response, StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED");
        server.stop().await;
    }
}

#[tokio::test]
async fn thirdparty_lookups_are_forwarded() {
    for backend in backends() {
        let Setup { server, bridge, .. } = setup(&backend).await;
        let human = server.register("bob").await;

        let (status, body) = human.get("/_matrix/client/v3/thirdparty/protocols").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["irc"]["instances"][0]["network_id"], "libera");
        assert_eq!(body["irc"]["user_fields"], json!(["network", "nickname"]));

        let (status, body) = human.get("/_matrix/client/v3/thirdparty/protocol/irc").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["location_fields"], json!(["network", "channel"]));
        let response = human.get("/_matrix/client/v3/thirdparty/protocol/xmpp").await;
        assert_error(&response, StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let (status, body) =
            human.get("/_matrix/client/v3/thirdparty/location/irc?network=libera&channel=%23matrix").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body[0]["alias"], "#_bridge_room_irc:localhost");
        let forwarded =
            bridge.requests().into_iter().find(|r| r.path == "/_matrix/app/v1/thirdparty/location/irc").unwrap();
        assert_eq!(forwarded.query, "network=libera&channel=%23matrix");

        let (status, body) = human.get("/_matrix/client/v3/thirdparty/user?userid=%40_bridge_nick%3Alocalhost").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body[0]["fields"]["nickname"], "nick");
        let response = human.get("/_matrix/client/v3/thirdparty/location").await;
        assert_error(&response, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
        server.stop().await;
    }
}

#[tokio::test]
async fn appservice_users_skip_rate_limits() {
    for backend in backends() {
        let Setup { server, .. } = setup_with(&backend, |config| {
            config.rate_limits.enabled = true;
            config.rate_limits.per_second = 0.01;
            config.rate_limits.burst = 3;
        })
        .await;
        let ghost = register_ghost(&server, "_bridge_alice").await;
        let human = server.register("bob").await;
        let room_id = room_with_ghost(&server, &human, &ghost).await;
        let bridge = appservice_client(&server);
        for index in 0..10 {
            let path =
                as_user(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t{index}", encode(&room_id)), &ghost);
            let (status, body) = bridge.put(&path, json!({ "msgtype": "m.text", "body": "bridged" })).await;
            assert_eq!(status, StatusCode::OK, "ghost send {index}: {body}");
        }
        let mut limited = None;
        for index in 0..10 {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/h{index}", encode(&room_id));
            let response = human.put(&path, json!({ "msgtype": "m.text", "body": "typed" })).await;
            if response.0 != StatusCode::OK {
                limited = Some(response);
                break;
            }
        }
        let limited = limited.expect("a human hits the rate limit");
        assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
        server.stop().await;
    }
}

/// Returns a default configuration with a data directory and registration files.
fn config_with_registrations(data_dir: &std::path::Path, registrations: Vec<std::path::PathBuf>) -> lattice::Config {
    lattice::Config {
        data_dir: data_dir.to_path_buf(),
        appservice: lattice::config::AppServiceConfig { registrations },
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_registration_stops_start() {
    let files = tempfile::tempdir().unwrap();
    let cases = [
        (
            "missing.yaml",
            registration_yaml("a", "http://127.0.0.1:9", "").replace("hs_token: \"bridge-hs-token\"\n", ""),
            "hs_token",
        ),
        (
            "regex.yaml",
            registration_yaml("a", "http://127.0.0.1:9", "").replace("\"@_bridge_.*\"", "\"@_bridge_(\""),
            "namespaces.users[0].regex",
        ),
        ("url.yaml", registration_yaml("a", "ftp://127.0.0.1:9", ""), "url"),
        ("yaml.yaml", "id: [unclosed".to_owned(), "yaml.yaml"),
    ];
    for (name, text, expected) in cases {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = config_with_registrations(data.path(), vec![path.clone()]);
        let err = lattice::Homeserver::new(config).await.err().expect("start fails").to_string();
        assert!(err.contains(&path.display().to_string()), "{name}: error names the file: {err}");
        assert!(err.contains(expected), "{name}: error names {expected}: {err}");
    }

    let missing = files.path().join("absent.yaml");
    let data = tempfile::tempdir().unwrap();
    let config = config_with_registrations(data.path(), vec![missing.clone()]);
    let err = lattice::Homeserver::new(config).await.err().expect("start fails").to_string();
    assert!(err.contains("absent.yaml"), "{err}");
    assert!(err.contains("could not read"), "{err}");
}

#[tokio::test]
async fn conflicting_registrations_stop_start() {
    let files = tempfile::tempdir().unwrap();
    let first = files.path().join("first.yaml");
    std::fs::write(&first, registration_yaml("first", "http://127.0.0.1:9", "")).unwrap();
    let second = files.path().join("second.yaml");
    let other_tokens = registration_yaml("second", "http://127.0.0.1:9", "")
        .replace(AS_TOKEN, "second-as")
        .replace(HS_TOKEN, "second-hs")
        .replace("_bridge_bot", "_second_bot");
    std::fs::write(&second, other_tokens).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = config_with_registrations(data.path(), vec![first, second]);
    let err = lattice::Homeserver::new(config).await.err().expect("start fails").to_string();
    assert!(err.contains("@_bridge_.*"), "{err}");
    assert!(err.contains("exclusively"), "{err}");

    let same_id = files.path().join("same_id.yaml");
    std::fs::write(
        &same_id,
        registration_yaml("first", "http://127.0.0.1:9", "")
            .replace(AS_TOKEN, "x")
            .replace("@_bridge_", "@_other_")
            .replace("#_bridge_", "#_other_")
            .replace("_bridge_bot", "_other_bot"),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = config_with_registrations(data.path(), vec![files.path().join("first.yaml"), same_id]);
    let err = lattice::Homeserver::new(config).await.err().expect("start fails").to_string();
    assert!(err.contains("field id"), "{err}");
}

/// Sends `count` messages as `user_id` through the application service and returns the statuses.
async fn ghost_sends(server: &TestServer, room_id: &str, user_id: &str, count: usize) -> Vec<(StatusCode, Value)> {
    let bridge = appservice_client(server);
    let mut responses = Vec::new();
    for index in 0..count {
        let path =
            as_user(&format!("/_matrix/client/v3/rooms/{}/send/m.room.message/g{index}", encode(room_id)), user_id);
        responses.push(bridge.put(&path, json!({ "msgtype": "m.text", "body": "bridged" })).await);
    }
    responses
}

#[tokio::test]
async fn appservice_users_skip_daily_limit() {
    for backend in backends() {
        for limit_appservice_users in [false, true] {
            let Setup { server, .. } = setup_with(&backend, move |config| {
                config.policy.name = "professional".into();
                config.policy.daily_message_limit = 2;
                config.policy.limit_appservice_users = limit_appservice_users;
            })
            .await;
            let ghost = register_ghost(&server, "_bridge_alice").await;
            let human = server.register("bob").await;
            let room_id = room_with_ghost(&server, &human, &ghost).await;

            let responses = ghost_sends(&server, &room_id, &ghost, 3).await;
            if limit_appservice_users {
                assert_eq!(responses[1].0, StatusCode::OK, "{}", responses[1].1);
                assert_error(&responses[2], StatusCode::FORBIDDEN, "DEV.LATTICE.LIMIT_EXCEEDED");
            } else {
                for (status, body) in &responses {
                    assert_eq!(*status, StatusCode::OK, "exempt ghost send: {body}");
                }
            }

            for index in 0..2 {
                human.send_text(&room_id, &format!("typed {index}")).await;
            }
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/over", encode(&room_id));
            let response = human.put(&path, json!({ "msgtype": "m.text", "body": "one too many" })).await;
            assert_error(&response, StatusCode::FORBIDDEN, "DEV.LATTICE.LIMIT_EXCEEDED");
            server.stop().await;
        }
    }
}
