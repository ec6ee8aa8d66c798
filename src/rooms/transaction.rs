//! Receiving the PDUs of one federation transaction (spec: Server-Server
//! API, "Transactions" and "Checks performed on receipt of a PDU").
//!
//! Each PDU gets the checks in the spec's order, and the work is arranged
//! for throughput. Each event id is computed once, one query finds the PDUs
//! that are already stored, and each signing key is looked up once. The
//! checks that need no room state (signatures and content hashes, CPU work
//! only) run on the blocking thread pool, spread over the cores. The PDUs
//! are then received one by one in the transaction's order, each checked
//! against the state that the PDUs before it leave, while later ones are
//! still being verified.

use std::{collections::HashSet, num::NonZeroUsize, sync::Arc};

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, ServerName, signatures::PublicKeyMap};
use tokio::sync::oneshot;

use super::{
    Rooms,
    pdu::Pdu,
    remote::{Commit, Received, Rejected, StoredEvents, event_id_of, verify_received},
    state::RoomState,
};
use crate::storage;

/// The result for one PDU of a transaction.
pub struct ReceivedPdu {
    pub event_id: OwnedEventId,
    /// For a PDU that passed the checks, the future of its commit, if it
    /// has one to wait for.
    pub outcome: std::result::Result<(Received, Option<Commit>), Rejected>,
}

/// A PDU whose room and event id are known, before its other checks.
struct Identified {
    room: Arc<RoomState>,
    event_id: OwnedEventId,
    object: CanonicalJsonObject,
}

type Verification = oneshot::Receiver<std::result::Result<Pdu, Rejected>>;

impl Rooms {
    /// Receives the PDUs of a transaction from `origin`, in order, fetching
    /// from `origin` what they refer to but this server lacks until
    /// `deadline`. Returns a result for each PDU with an event id. A PDU
    /// that is not an object of a known room has no event id, so it is left
    /// out, and a PDU that occurs twice gets one result.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        pdus: Vec<serde_json::Value>,
        deadline: tokio::time::Instant,
    ) -> Vec<ReceivedPdu> {
        let mut results = Vec::with_capacity(pdus.len());
        let mut identified = Vec::with_capacity(pdus.len());
        let mut seen = HashSet::with_capacity(pdus.len());
        for pdu in pdus {
            match self.identify(pdu).await {
                Ok(pdu) if seen.insert(pdu.event_id.clone()) => identified.push(pdu),
                Ok(_) => {}
                Err(reason) => tracing::info!(%origin, reason, "dropped a PDU without an event id"),
            }
        }

        // Duplicates need no further check. The query's result is valid for
        // the room states read above.
        let ids: Vec<String> = identified.iter().map(|pdu| pdu.event_id.to_string()).collect();
        let mut stored = match storage::events::stored_ids(&self.db.pool, &ids).await {
            Ok(found) => {
                let found = found.into_iter().filter_map(|id| OwnedEventId::try_from(id).ok()).collect();
                StoredEvents::new(found, identified.iter().map(|pdu| pdu.room.clone()))
            }
            Err(err) => {
                tracing::warn!(%origin, error = %err, "could not look up a transaction's PDUs; checking them one by one");
                StoredEvents::none()
            }
        };
        let mut fresh = Vec::with_capacity(identified.len());
        for pdu in identified {
            if stored.contains(&pdu.event_id) {
                results.push(ReceivedPdu { event_id: pdu.event_id, outcome: Ok((Received::Duplicate, None)) });
            } else {
                fresh.push(pdu);
            }
        }

        let federation = self.federation().ok();
        let objects: Vec<&CanonicalJsonObject> = fresh.iter().map(|pdu| &pdu.object).collect();
        let keys = match federation {
            Some(federation) => federation.signing_keys_of(objects).await,
            None => PublicKeyMap::new(),
        };
        let event_ids: Vec<OwnedEventId> = fresh.iter().map(|pdu| pdu.event_id.clone()).collect();
        let verifications = verify_in_parallel(Arc::new(keys), fresh);

        for (event_id, verification) in event_ids.into_iter().zip(verifications) {
            let pdu = match verification.await {
                Ok(Ok(pdu)) => pdu,
                Ok(Err(rejected)) => {
                    results.push(ReceivedPdu { event_id, outcome: Err(rejected) });
                    continue;
                }
                Err(_) => {
                    let reason = "internal error: the PDU's verification stopped".to_owned();
                    results.push(ReceivedPdu { event_id, outcome: Err(Rejected(reason)) });
                    continue;
                }
            };
            if let Some(federation) = federation {
                let room_id = pdu.room_id.clone();
                match tokio::time::timeout_at(deadline, self.fill_gaps(federation, origin, &pdu)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => tracing::info!(%origin, %room_id, reason, "could not fetch all missing events"),
                    Err(_) => tracing::info!(%origin, %room_id, "fetching missing events took too long"),
                }
            }
            let outcome =
                self.receive_verified_queued(pdu, &mut stored).await.map(|(_, received, commit)| (received, commit));
            results.push(ReceivedPdu { event_id, outcome });
        }
        results
    }

    /// Runs the format checks that give a PDU its room and event id.
    async fn identify(&self, pdu: serde_json::Value) -> std::result::Result<Identified, String> {
        let object = match CanonicalJsonValue::try_from(pdu) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            _ => return Err("the PDU is not a canonical JSON object".into()),
        };
        let Some(room_id) = object.get("room_id").and_then(|v| v.as_str()).and_then(|id| RoomId::parse(id).ok()) else {
            return Err("the PDU has no valid room_id".into());
        };
        if !self.exists(&room_id).await.map_err(|e| e.message)? {
            return Err(format!("room {room_id} is not known to this server"));
        }
        let room = self.state(&room_id).await.map_err(|e| e.message)?;
        let event_id = event_id_of(&object, &room.rules).map_err(|Rejected(reason)| reason)?;
        Ok(Identified { room, event_id, object })
    }
}

/// Starts the signature and content hash checks of `pdus` on the blocking
/// thread pool, one worker per core, and returns their results in the order
/// of `pdus`. The workers take the PDUs in turn, so the first results are
/// ready first.
fn verify_in_parallel(keys: Arc<PublicKeyMap>, pdus: Vec<Identified>) -> Vec<Verification> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let workers = cores.min(pdus.len());
    let mut queues: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
    let mut verifications = Vec::with_capacity(pdus.len());
    for (index, pdu) in pdus.into_iter().enumerate() {
        let (sender, receiver) = oneshot::channel();
        queues[index % workers].push((pdu, sender));
        verifications.push(receiver);
    }
    for queue in queues {
        let keys = keys.clone();
        tokio::task::spawn_blocking(move || {
            for (pdu, sender) in queue {
                let Identified { room, event_id, object } = pdu;
                // The receiver is gone only when the request was dropped.
                let _ = sender.send(verify_received(&room.rules, &room.room_id, event_id, object, &keys));
            }
        });
    }
    verifications
}
