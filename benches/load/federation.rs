//! The `federation` scenario: inbound `/send` transactions into a room with
//! 50 members from 3 servers, and the delivery of a received PDU to a local
//! member's waiting `/sync`.
//!
//! The release server runs with a TLS federation listener and a test CA. The
//! three remote servers are simulated here: each has a signing key that this
//! process publishes at `/_matrix/key/v2/server` (one TLS listener for all
//! three names), and every PDU is built, hashed and signed here. The server
//! checks them as any received PDU: the request's `X-Matrix` signature, the
//! PDU signatures and hashes, and the authorization rules.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::get};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, room_version_rules::RoomVersionRules,
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};

use super::{Server, User, enc, ms, percentile, start_server_config, wait_ready};

const LOCAL: &str = "bench.lattice.test";
/// The second real server of the delivery measurement between two servers.
const SECOND: &str = "bench-b.lattice.test";
const REMOTES: [&str; 3] = ["s1.bench.test", "s2.bench.test", "s3.bench.test"];
/// Members of the room: the local owner and this many remote users.
const REMOTE_MEMBERS: usize = 49;
/// Transactions of 50 PDUs sent for the throughput figure.
const TRANSACTIONS: usize = 40;
/// PDUs sent one at a time for the delivery figure.
const DELIVERIES: usize = 200;

struct Remote {
    name: &'static str,
    key: Ed25519KeyPair,
}

type Keys = Arc<HashMap<String, Value>>;

async fn key_document(State(keys): State<Keys>, headers: HeaderMap) -> Json<Value> {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let name = host.split(':').next().unwrap_or_default();
    Json(keys.get(name).cloned().unwrap_or(Value::Null))
}

/// A certificate authority and the files of the certificates it issues.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).unwrap();
        Self { issuer, dir }
    }

    fn issue(&self, file: &str, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{file}.crt")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&cert_path, format!("{}{}", certificate.pem(), self.issuer.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path.display().to_string(), key_path.display().to_string())
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

fn write_config(dir: &Path, ca: &Ca, name: &str, federation_port: u16, overrides: &[(&str, String)]) -> String {
    let (cert, key) = ca.issue(name, &[name]);
    let mut text = format!(
        "server_name = \"{name}\"\n\n[listen]\nfederation = \"127.0.0.1:{federation_port}\"\n\n[federation]\n\
         tls_certificate = \"{cert}\"\ntls_private_key = \"{key}\"\ntls_ca_file = \"{}\"\n\n[federation.host_overrides]\n",
        ca.ca_file()
    );
    for (name, addr) in overrides {
        text.push_str(&format!("\"{name}\" = \"{addr}\"\n"));
    }
    let path = dir.join("lattice.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The room as the simulated servers see it: what new PDUs point at.
struct Room {
    id: String,
    rules: RoomVersionRules,
    /// Auth events every PDU lists (the create event where the room version
    /// lists it, the power levels and, for joins, the join rules).
    create: Option<String>,
    power_levels: String,
    join_rules: String,
    members: HashMap<String, String>,
    last: String,
    depth: i64,
}

impl Room {
    fn pdu(&mut self, remote: &Remote, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut auth: Vec<String> = self.create.iter().cloned().collect();
        auth.push(self.power_levels.clone());
        match kind {
            "m.room.member" => auth.push(self.join_rules.clone()),
            _ => auth.push(self.members[sender].clone()),
        }
        auth.sort();
        self.depth += 1;
        let mut value = json!({
            "auth_events": auth,
            "content": content,
            "depth": self.depth,
            "origin_server_ts": super::now_ms(),
            "prev_events": [self.last],
            "room_id": self.id,
            "sender": sender,
            "type": kind,
        });
        if let Some(key) = state_key {
            value["state_key"] = json!(key);
        }
        let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap();
        ruma::signatures::hash_and_sign_event(remote.name, &remote.key, &mut object, &self.rules.redaction).unwrap();
        let id = format!("${}", ruma::signatures::reference_hash(&object, &self.rules).unwrap());
        if kind == "m.room.member" {
            self.members.insert(sender.to_owned(), id.clone());
        }
        self.last = id;
        serde_json::to_value(object).unwrap()
    }
}

/// Sends one transaction from `remote` and returns how many PDUs failed.
async fn send(client: &reqwest::Client, base: &str, remote: &Remote, txn: &str, pdus: Vec<Value>) -> usize {
    let path = format!("/_matrix/federation/v1/send/{txn}");
    let body = json!({ "origin": remote.name, "origin_server_ts": super::now_ms(), "pdus": pdus });
    let content = CanonicalJsonValue::try_from(body.clone()).unwrap();
    let header =
        lattice::federation::auth::authorization_header(&remote.key, remote.name, LOCAL, "PUT", &path, Some(content))
            .unwrap();
    let response = client
        .put(format!("{base}{path}"))
        .header("Authorization", header)
        .json(&body)
        .send()
        .await
        .expect("send a transaction");
    assert!(response.status().is_success(), "transaction refused: {}", response.status());
    let results: Value = response.json().await.unwrap();
    results["pdus"].as_object().map(|r| r.values().filter(|v| v.get("error").is_some()).count()).unwrap_or(0)
}

pub async fn bench_federation(http: &reqwest::Client) {
    let ca = Ca::new();
    let remotes: Vec<Remote> = REMOTES
        .iter()
        .map(|name| Remote { name, key: Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "b1".into()).unwrap() })
        .collect();

    // The simulated servers' key documents, on one TLS listener.
    let mut documents = HashMap::new();
    for remote in &remotes {
        let mut document: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": remote.name,
            "valid_until_ts": super::now_ms() + 86_400_000,
            "verify_keys": { "ed25519:b1": { "key": STANDARD_NO_PAD.encode(remote.key.public_key()) } },
            "old_verify_keys": {},
        }))
        .unwrap();
        ruma::signatures::sign_json(remote.name, &remote.key, &mut document).unwrap();
        documents.insert(remote.name.to_owned(), serde_json::to_value(document).unwrap());
    }
    let (cert, key) = ca.issue("remotes", &REMOTES);
    let tls = lattice::federation::tls::server_config(Path::new(&cert), Path::new(&key)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keys_addr = listener.local_addr().unwrap().to_string();
    let app = Router::new().route("/_matrix/key/v2/server", get(key_document)).with_state(Arc::new(documents));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(lattice::api::federation::listener::serve_tls(listener, Arc::new(tls), app, stopped));

    let federation_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let second_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config_dir = tempfile::tempdir().unwrap();
    let mut overrides: Vec<(&str, String)> = REMOTES.iter().map(|name| (*name, keys_addr.clone())).collect();
    overrides.push((SECOND, format!("127.0.0.1:{second_port}")));
    let config = write_config(config_dir.path(), &ca, LOCAL, federation_port, &overrides);
    let server: Server = start_server_config(&config);
    wait_ready(http, &server.base).await;
    let federation = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.issuer.pem().as_bytes()).unwrap())
        .resolve(LOCAL, format!("127.0.0.1:{federation_port}").parse().unwrap())
        .build()
        .unwrap();
    let base = format!("https://{LOCAL}:{federation_port}");

    // A public room of a local user, and 49 remote members who join it.
    let owner = User::register(http, &server.base, "owner".into()).await;
    let room_id = owner
        .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(json!({ "preset": "public_chat" })))
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state =
        owner.call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id)), None).await;
    let find = |kind: &str| {
        state.as_array().unwrap().iter().find(|e| e["type"] == kind).map(|e| e["event_id"].as_str().unwrap().to_owned())
    };
    let create = state.as_array().unwrap().iter().find(|e| e["type"] == "m.room.create").unwrap();
    let version = RoomVersionId::try_from(create["content"]["room_version"].as_str().unwrap_or("1")).unwrap();
    let rules = version.rules().unwrap();
    let newest = owner
        .call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&room_id)), None)
        .await;
    let mut room = Room {
        id: room_id.clone(),
        create: find("m.room.create").filter(|_| !rules.authorization.room_create_event_id_as_room_id),
        rules,
        power_levels: find("m.room.power_levels").unwrap(),
        join_rules: find("m.room.join_rules").unwrap(),
        members: HashMap::new(),
        last: newest["chunk"][0]["event_id"].as_str().unwrap().to_owned(),
        depth: 100,
    };
    let mut senders: Vec<Vec<String>> = vec![Vec::new(); remotes.len()];
    for (index, remote) in remotes.iter().enumerate() {
        let users: Vec<String> = (0..REMOTE_MEMBERS)
            .filter(|i| i % remotes.len() == index)
            .map(|i| format!("@u{i}:{}", remote.name))
            .collect();
        let pdus: Vec<Value> = users
            .iter()
            .map(|user| room.pdu(remote, user, "m.room.member", Some(user), json!({ "membership": "join" })))
            .collect();
        let failed = send(&federation, &base, remote, &format!("join{index}"), pdus).await;
        assert_eq!(failed, 0, "joins of {} failed", remote.name);
        senders[index] = users;
    }

    // Throughput: transactions of 50 messages, the servers in turn, each
    // extending the room's newest event.
    let mut failed = 0;
    let started = Instant::now();
    for n in 0..TRANSACTIONS {
        let index = n % remotes.len();
        let remote = &remotes[index];
        let pdus: Vec<Value> = (0..50)
            .map(|i| {
                let sender = senders[index][i % senders[index].len()].clone();
                room.pdu(
                    remote,
                    &sender,
                    "m.room.message",
                    None,
                    json!({ "msgtype": "m.text", "body": format!("m{n}-{i}") }),
                )
            })
            .collect();
        failed += send(&federation, &base, remote, &format!("t{n}"), pdus).await;
    }
    let elapsed = started.elapsed();
    let total = TRANSACTIONS * 50;
    println!(
        "| federation: inbound /send, {TRANSACTIONS} transactions of 50 PDUs, 50-member room, 3 servers | {:.0} PDUs/s ({total} PDUs in {:.2} s, {failed} rejected) |",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    // Delivery: one PDU per transaction, to the owner's waiting /sync.
    let mut since = owner.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let mut samples = Vec::new();
    for n in 0..DELIVERIES {
        let waiter = {
            let owner = owner.clone();
            let since = since.clone();
            tokio::spawn(async move {
                let body = owner.sync(Some(&since), 10_000).await;
                (Instant::now(), body)
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let index = n % remotes.len();
        let sender = senders[index][0].clone();
        let pdu =
            room.pdu(&remotes[index], &sender, "m.room.message", None, json!({ "msgtype": "m.text", "body": "ping" }));
        let sent_at = Instant::now();
        assert_eq!(send(&federation, &base, &remotes[index], &format!("d{n}"), vec![pdu]).await, 0);
        let (arrived, body) = waiter.await.unwrap();
        samples.push(arrived.saturating_duration_since(sent_at));
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    samples.sort();
    println!(
        "| federation: remote send over loopback TLS to a waiting /sync, {DELIVERIES} PDUs, p50 / p99 | {} / {} |",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );

    // Delivery between two real servers: a member of a second server joins
    // a room of the first and long-polls /sync there while the owner sends.
    let second_dir = tempfile::tempdir().unwrap();
    let second_config =
        write_config(second_dir.path(), &ca, SECOND, second_port, &[(LOCAL, format!("127.0.0.1:{federation_port}"))]);
    let second: Server = start_server_config(&second_config);
    wait_ready(http, &second.base).await;
    let bob = User::register(http, &second.base, "bob".into()).await;
    let room = owner
        .call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(json!({ "preset": "public_chat" })))
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/_matrix/client/v3/join/{}?server_name={LOCAL}", enc(&room));
    bob.call(reqwest::Method::POST, &path, Some(json!({}))).await;
    let mut since = bob.sync(None, 0).await["next_batch"].as_str().unwrap().to_owned();
    let mut samples = Vec::new();
    for n in 0..DELIVERIES {
        let text = format!("between servers {n}");
        let waiter = {
            let (bob, room, text, mut since) = (bob.clone(), room.clone(), text.clone(), since.clone());
            tokio::spawn(async move {
                // Other events (such as the join reaching the room) may come first.
                for _ in 0..20 {
                    let body = bob.sync(Some(&since), 10_000).await;
                    since = body["next_batch"].as_str().unwrap().to_owned();
                    let timeline = &body["rooms"]["join"][room.as_str()]["timeline"]["events"];
                    if timeline.as_array().is_some_and(|events| events.iter().any(|e| e["content"]["body"] == text)) {
                        return (Some(Instant::now()), since);
                    }
                }
                (None, since)
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent_at = Instant::now();
        owner.send(&room, &format!("b{n}"), &text).await;
        let (arrived, next) = waiter.await.unwrap();
        if let Some(arrived) = arrived {
            samples.push(arrived.saturating_duration_since(sent_at));
        }
        since = next;
    }
    samples.sort();
    println!(
        "| federation: send on server A to a waiting /sync on server B, loopback TLS, {} of {DELIVERIES} messages, p50 / p99 | {} / {} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99))
    );
}
