//! The outbound federation sender against a recording receiver on
//! 127.0.0.1 (TLS, certificate from the test CA): transaction limits, order,
//! backoff after failures, and delivery of what was queued before a restart.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::put,
};
use ruma::ServerName;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::watch;

use crate::harness::{Backend, TestCa, TestServer, backends};

/// One `PUT /send` that reached the receiver.
#[derive(Clone)]
struct Attempt {
    at: Instant,
    accepted: bool,
    txn_id: String,
    body: Value,
    authorization: String,
}

#[derive(Clone, Default)]
struct Log {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    /// Requests still to fail with 500.
    failures_left: Arc<AtomicUsize>,
}

/// A stand-in for another homeserver that records transactions.
struct Receiver {
    log: Log,
    addr: std::net::SocketAddr,
    _stop: watch::Sender<bool>,
}

async fn record(
    State(log): State<Log>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let fail = log.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    log.attempts.lock().unwrap().push(Attempt { at: Instant::now(), accepted: !fail, txn_id, body, authorization });
    if fail {
        (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "errcode": "M_UNKNOWN", "error": "test failure" })))
    } else {
        (StatusCode::OK, Json(json!({ "pdus": {} })))
    }
}

async fn start_receiver(ca: &TestCa, failures: usize) -> Receiver {
    let (certificate, key) = ca.issue("recv.lattice.test");
    let tls = lattice::federation::tls::server_config(&certificate, &key).expect("receiver TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let log = Log::default();
    log.failures_left.store(failures, Ordering::SeqCst);
    let app = Router::new().route("/_matrix/federation/v1/send/{txn_id}", put(record)).with_state(log.clone());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(lattice::api::federation::listener::serve_tls(listener, Arc::new(tls), app, stopped));
    Receiver { log, addr, _stop: stop }
}

async fn start_sender(backend: &Backend, ca: &TestCa, receiver: &Receiver) -> TestServer {
    let addr = receiver.addr.to_string();
    let mut servers = TestServer::start_federated(backend, ca, &["a.lattice.test"], |config| {
        config.federation.host_overrides.insert("recv.lattice.test".into(), addr.clone());
        config.federation.sender_retry_initial_ms = 100;
        config.federation.sender_retry_max_ms = 400;
    })
    .await;
    servers.pop().expect("server a")
}

/// Collects the accepted PDUs (or EDUs) in delivery order.
fn delivered(log: &Log, field: &str) -> Vec<Value> {
    let attempts = log.attempts.lock().unwrap();
    attempts.iter().filter(|a| a.accepted).flat_map(|a| a.body[field].as_array().cloned().unwrap_or_default()).collect()
}

async fn wait_for(log: &Log, pdus: usize, edus: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(log, "pdus").len() < pdus || delivered(log, "edus").len() < edus {
        assert!(Instant::now() < deadline, "delivery timed out: {} PDUs", delivered(log, "pdus").len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the outbox is empty: the sender removes rows once the
/// receiver's response arrived, just after the receiver recorded them.
async fn wait_for_empty_outbox(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox_rows(server).await > 0 {
        assert!(Instant::now() < deadline, "delivered rows stay in the outbox");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox_rows(server: &TestServer) -> i64 {
    let pool = &server.homeserver.services().db.pool;
    sqlx::query("SELECT COUNT(*) FROM federation_outbox").fetch_one(pool).await.expect("count").get(0)
}

fn recv() -> ruma::OwnedServerName {
    ServerName::parse("recv.lattice.test").expect("server name")
}

#[tokio::test]
async fn transactions_respect_limits_and_order() {
    for backend in backends() {
        let ca = TestCa::new();
        let receiver = start_receiver(&ca, 0).await;
        let a = start_sender(&backend, &ca, &receiver).await;
        let sender = a.homeserver.services().sender.clone();
        for n in 0..120 {
            sender.queue_pdu(&recv(), &json!({ "n": n })).await.expect("queue PDU");
        }
        for n in 0..130 {
            sender
                .queue_edu(&recv(), &json!({ "edu_type": "m.typing", "content": { "n": n } }))
                .await
                .expect("queue EDU");
        }
        wait_for(&receiver.log, 120, 130).await;

        let pdus: Vec<i64> = delivered(&receiver.log, "pdus").iter().map(|p| p["n"].as_i64().unwrap()).collect();
        assert_eq!(pdus, (0..120).collect::<Vec<_>>(), "every PDU once, in order");
        let edus: Vec<i64> =
            delivered(&receiver.log, "edus").iter().map(|e| e["content"]["n"].as_i64().unwrap()).collect();
        assert_eq!(edus, (0..130).collect::<Vec<_>>(), "every EDU once, in order");

        let attempts = receiver.log.attempts.lock().unwrap().clone();
        let mut txn_ids: Vec<&str> = attempts.iter().map(|a| a.txn_id.as_str()).collect();
        for attempt in &attempts {
            assert!(attempt.body["pdus"].as_array().unwrap().len() <= 50, "at most 50 PDUs");
            assert!(attempt.body["edus"].as_array().unwrap().len() <= 100, "at most 100 EDUs");
            assert_eq!(attempt.body["origin"], "a.lattice.test");
            assert!(attempt.body["origin_server_ts"].is_i64());
            assert!(
                attempt
                    .authorization
                    .starts_with("X-Matrix origin=\"a.lattice.test\",destination=\"recv.lattice.test\""),
                "{}",
                attempt.authorization
            );
        }
        txn_ids.dedup();
        assert_eq!(txn_ids.len(), attempts.len(), "each transaction has its own id");
        assert!(attempts.len() >= 3, "120 PDUs need at least three transactions");
        wait_for_empty_outbox(&a).await;
        a.stop().await;
    }
}

#[tokio::test]
async fn failures_back_off_exponentially() {
    for backend in backends() {
        let ca = TestCa::new();
        let receiver = start_receiver(&ca, 4).await;
        let a = start_sender(&backend, &ca, &receiver).await;
        let sender = a.homeserver.services().sender.clone();
        for n in 0..3 {
            sender.queue_pdu(&recv(), &json!({ "n": n })).await.expect("queue PDU");
        }
        wait_for(&receiver.log, 3, 0).await;

        let attempts = receiver.log.attempts.lock().unwrap().clone();
        let failed = attempts.iter().filter(|a| !a.accepted).count();
        assert_eq!(failed, 4, "four failed attempts before the delivery");
        // Retries wait 100, 200, 400 (the cap) and 400 ms.
        let gaps: Vec<u128> = attempts.windows(2).map(|w| w[1].at.duration_since(w[0].at).as_millis()).collect();
        for (gap, minimum) in gaps.iter().zip([100, 200, 400, 400]) {
            assert!(*gap >= minimum - 10, "gaps {gaps:?}");
        }
        assert!(gaps.iter().all(|gap| *gap < 2_000), "the cap bounds the delay: {gaps:?}");
        // The same rows keep their transaction id across retries (the first
        // attempt may have left before the last row was queued).
        assert_eq!(attempts[1].txn_id, attempts.last().unwrap().txn_id);

        wait_for_empty_outbox(&a).await;
        let pool = &a.homeserver.services().db.pool;
        let row = sqlx::query("SELECT failures FROM federation_destinations WHERE destination = 'recv.lattice.test'")
            .fetch_one(pool)
            .await
            .expect("delivery state");
        assert_eq!(row.get::<i64, _>(0), 0, "a success resets the failures");
        a.stop().await;
    }
}

#[tokio::test]
async fn queued_rows_survive_a_restart() {
    for backend in backends() {
        let ca = TestCa::new();
        let receiver = start_receiver(&ca, usize::MAX).await;
        let a = start_sender(&backend, &ca, &receiver).await;
        let sender = a.homeserver.services().sender.clone();
        for n in 0..5 {
            sender.queue_pdu(&recv(), &json!({ "n": n })).await.expect("queue PDU");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.log.attempts.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no attempt reached the receiver");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let a = a.restart().await;
        assert_eq!(outbox_rows(&a).await, 5, "undelivered rows are still queued after the restart");

        // The destination comes back; the restarted server delivers everything, in order.
        receiver.log.failures_left.store(0, Ordering::SeqCst);
        wait_for(&receiver.log, 5, 0).await;
        let pdus: Vec<i64> = delivered(&receiver.log, "pdus").iter().map(|p| p["n"].as_i64().unwrap()).collect();
        assert_eq!(pdus, vec![0, 1, 2, 3, 4]);
        wait_for_empty_outbox(&a).await;
        a.stop().await;
    }
}
