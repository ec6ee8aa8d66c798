//! The outbound federation sender: a persistent outbox per destination, one
//! task per destination, transactions of at most 50 PDUs and 100 EDUs
//! (`PUT /_matrix/federation/v1/send/{txnId}`), and exponential backoff with
//! a cap after failures. Queued rows and the backoff state are in the
//! database, so delivery resumes after a restart.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::Method;
use ruma::{OwnedServerName, ServerName};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::Federation;
use crate::storage::{Db, now_ms, outbox};

/// The spec's limits on one transaction.
pub const MAX_PDUS: i64 = 50;
pub const MAX_EDUS: i64 = 100;

/// The sender service. Cloning is cheap. The room service queues each new
/// local event, and the typing and receipt endpoints their EDUs, for the
/// other servers in the room.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    federation: Federation,
    /// The wake-up of each destination's task; a destination without an
    /// entry has no task yet.
    workers: Mutex<HashMap<OwnedServerName, Arc<Notify>>>,
    stop: watch::Receiver<bool>,
}

impl Sender {
    pub fn new(db: Db, federation: Federation, stop: watch::Receiver<bool>) -> Self {
        Self { inner: Arc::new(Inner { db, federation, workers: Mutex::new(HashMap::new()), stop }) }
    }

    /// The federation service that the sender sends through.
    pub fn federation(&self) -> &Federation {
        &self.inner.federation
    }

    /// Starts a task for every destination that still has queued rows, such
    /// as those left by the previous run.
    pub async fn resume(&self) -> Result<(), sqlx::Error> {
        for destination in outbox::destinations(&self.inner.db.pool).await? {
            match ServerName::parse(&destination) {
                Ok(name) => self.wake(&name),
                Err(_) => tracing::warn!(destination, "outbox rows for an invalid server name are not sent"),
            }
        }
        Ok(())
    }

    /// Queues a PDU for `destination`; it is sent in order after what is queued before it.
    pub async fn queue_pdu(&self, destination: &ServerName, pdu: &Value) -> Result<(), sqlx::Error> {
        self.queue(destination, outbox::PDU, pdu).await
    }

    /// Queues an EDU (`{"edu_type": ..., "content": ...}`) for `destination`.
    pub async fn queue_edu(&self, destination: &ServerName, edu: &Value) -> Result<(), sqlx::Error> {
        self.queue(destination, outbox::EDU, edu).await
    }

    async fn queue(&self, destination: &ServerName, kind: &str, body: &Value) -> Result<(), sqlx::Error> {
        outbox::push(&self.inner.db.pool, destination.as_str(), kind, &body.to_string(), now_ms()).await?;
        self.wake(destination);
        Ok(())
    }

    /// Wakes the task of `destination`, starting it when there is none.
    fn wake(&self, destination: &ServerName) {
        let mut workers = self.inner.workers.lock().expect("lock");
        if let Some(notify) = workers.get(destination) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(destination.to_owned(), notify.clone());
        let inner = self.inner.clone();
        let destination = destination.to_owned();
        tokio::spawn(async move { run(inner, destination, notify).await });
    }
}

/// Computes the delay before retry number `failures` (1 for the first
/// retry): `initial` doubled per failure, at most `max`.
pub fn backoff(failures: i64, initial: Duration, max: Duration) -> Duration {
    let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    initial.saturating_mul(1u32 << exponent).min(max)
}

/// Runs the task of one destination: sends what is queued, waits when
/// nothing is, and backs off after failures, until the server stops.
#[tracing::instrument(skip_all, fields(destination = %destination))]
async fn run(inner: Arc<Inner>, destination: OwnedServerName, notify: Arc<Notify>) {
    let mut stop = inner.stop.clone();
    let config = inner.federation.config().clone();
    let initial = Duration::from_millis(config.sender_retry_initial_ms);
    let max = Duration::from_millis(config.sender_retry_max_ms);
    let pool = &inner.db.pool;
    loop {
        if *stop.borrow() {
            return;
        }
        // Wait out the backoff, which a restart does not reset.
        let (failures, retry_after) = match outbox::retry_state(pool, destination.as_str()).await {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the delivery state");
                (0, 0)
            }
        };
        let wait = retry_after - now_ms();
        if wait > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = stop.changed() => return,
            }
        }

        // Registered before the read, so a row queued in between still wakes the task.
        let woken = notify.notified();
        let batch = match read_batch(&inner, &destination).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the outbox");
                tokio::select! {
                    _ = tokio::time::sleep(initial) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if batch.ids.is_empty() {
            tokio::select! {
                _ = woken => continue,
                _ = stop.changed() => return,
            }
        }

        match send_transaction(&inner, &destination, &batch).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "destination reachable again");
                    if let Err(err) = outbox::set_retry_state(pool, destination.as_str(), 0, 0, None).await {
                        tracing::warn!(error = %err, "could not reset the delivery state");
                    }
                }
                if let Err(err) = outbox::remove(pool, &batch.ids).await {
                    // The rows stay and go out again; the receiver drops the repeated transaction id.
                    tracing::warn!(error = %err, "could not remove delivered rows from the outbox");
                }
            }
            Err(reason) => {
                let failures = failures + 1;
                let delay = backoff(failures, initial, max);
                tracing::warn!(
                    failures,
                    retry_in_ms = delay.as_millis() as u64,
                    reason,
                    "transaction failed; backing off"
                );
                let retry_after = now_ms() + delay.as_millis() as i64;
                if let Err(err) =
                    outbox::set_retry_state(pool, destination.as_str(), failures, retry_after, Some(&reason)).await
                {
                    tracing::warn!(error = %err, "could not store the delivery state");
                }
            }
        }
    }
}

struct Batch {
    ids: Vec<i64>,
    pdus: Vec<Value>,
    edus: Vec<Value>,
    txn_id: String,
}

async fn read_batch(inner: &Inner, destination: &ServerName) -> Result<Batch, sqlx::Error> {
    let pool = &inner.db.pool;
    let pdus = outbox::oldest(pool, destination.as_str(), outbox::PDU, MAX_PDUS).await?;
    let edus = outbox::oldest(pool, destination.as_str(), outbox::EDU, MAX_EDUS).await?;
    let ids: Vec<i64> = pdus.iter().chain(&edus).map(|(id, _)| *id).collect();
    // The same rows give the same transaction id, so a retry after a lost
    // response is recognised by the receiver as the same transaction.
    let txn_id =
        format!("{}-{}", ids.iter().min().copied().unwrap_or_default(), ids.iter().max().copied().unwrap_or_default());
    let parse = |rows: Vec<(i64, String)>| -> Vec<Value> {
        rows.into_iter().filter_map(|(_, body)| serde_json::from_str(&body).ok()).collect()
    };
    Ok(Batch { ids, pdus: parse(pdus), edus: parse(edus), txn_id: format!("lt{txn_id}") })
}

async fn send_transaction(inner: &Inner, destination: &ServerName, batch: &Batch) -> Result<(), String> {
    let body = json!({
        "origin": inner.federation.server_name().as_str(),
        "origin_server_ts": now_ms(),
        "pdus": batch.pdus,
        "edus": batch.edus,
    });
    let path = format!("/_matrix/federation/v1/send/{}", batch.txn_id);
    let response = inner
        .federation
        .send_json(destination, Method::PUT, &path, Some(&body), true)
        .await
        .map_err(|err| err.to_string())?;
    // Per-PDU errors are the receiver's verdict on each event; they are not
    // retried, because sending the same event again gets the same verdict.
    if let Some(results) = response.get("pdus").and_then(Value::as_object) {
        for (event_id, result) in results {
            if let Some(error) = result.get("error") {
                tracing::info!(event_id, %error, "destination rejected a PDU");
            }
        }
    }
    tracing::debug!(txn_id = batch.txn_id, pdus = batch.pdus.len(), edus = batch.edus.len(), "transaction delivered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (initial, max) = (Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(backoff(1, initial, max), Duration::from_secs(2));
        assert_eq!(backoff(2, initial, max), Duration::from_secs(4));
        assert_eq!(backoff(5, initial, max), Duration::from_secs(32));
        assert_eq!(backoff(6, initial, max), Duration::from_secs(60));
        assert_eq!(backoff(1000, initial, max), Duration::from_secs(60));
    }
}
