//! Backfill as the requesting server (spec: Server-Server API, "Backfilling
//! and retrieving missing events"). A room joined through another server
//! starts here with the join. When a client pages back past the oldest
//! stored event, a server in the room provides the history before it:
//!
//! 1. `GET /backfill` with the room's backward extremities as `v`;
//! 2. the returned events in topological order, oldest first. Events
//!    unknown here get the checks on receipt (signatures, content hash,
//!    auth against their auth events, fetched with `/event_auth` when
//!    unknown), then auth against the state before them. That state is the
//!    state after their previous events, or, where those are not stored,
//!    the state that `/state_ids` returns for the event. Events already held
//!    (the edge state, outliers) were checked when they arrived;
//! 3. one commit of three parts. First, the events, at stream positions below
//!    every stored event, in topological order, each with the state group of
//!    the state after it. Second, the new edge state, which is the state
//!    before the oldest of them (see `storage::backfill`). Third, the new
//!    backward extremities.
//!
//! Events that fail a check are not stored, and history continues past
//! them. Soft-failed events stay out of the timeline. Every step is bounded
//! in count, and the caller bounds the time.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    sync::Arc,
};

use http::Method;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, ServerName};
use tokio::time::Instant;

use super::{
    Rooms,
    builder::BuiltEvent,
    fetch::{objects, segment},
    pdu::Pdu,
    persist, power, redaction,
    remote::{Rejected, StateMap, check_against, entries, event_id_of},
    state::RoomState,
};
use crate::{
    error::{Error, Result},
    federation::Federation,
    storage::{
        self, WriteTxn,
        backfill::{EDGE_STATE_TOP, Gap},
        events::{NewEvent, StoredEvent},
        redactions::PendingRedaction,
    },
};

/// The `limit` of one `/backfill` request.
const BACKFILL_LIMIT: usize = 100;
/// Backward extremities named in one request (each one is a `v` parameter).
const MAX_EXTREMITIES_PER_REQUEST: usize = 20;
/// Servers tried in turn for one batch.
const MAX_SERVERS: usize = 3;
/// `/event_auth` requests for the events of one batch.
const MAX_AUTH_FETCHES: usize = 10;
/// `/state_ids` requests for the events of one batch.
const MAX_STATE_FETCHES: usize = 3;
/// How long a room is not backfilled again after a batch that added
/// nothing, so that a client paging at the start of the history does not
/// send a request to other servers each time.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

type Fetch<T> = std::result::Result<T, String>;

/// A returned event that is not in the timeline yet.
struct Candidate {
    pdu: Arc<Pdu>,
    /// The signed event, for an event unknown here that still needs the checks on receipt.
    unchecked: Option<CanonicalJsonObject>,
    /// Whether the event is stored in the edge state, or at the top of the
    /// gap, so that it moves instead of being inserted.
    in_edge_state: bool,
}

/// A checked batch, ready to commit.
struct Batch {
    room_id: String,
    /// The gap the events go into; `None` for the history before the oldest stored events.
    gap: Option<Gap>,
    /// In topological order, oldest first, with whether each is in the edge state.
    events: Vec<(BuiltEvent, bool)>,
    /// The state before the oldest event, with a new state group for it.
    edge: Option<(i64, StateMap)>,
    extremities: Vec<String>,
    /// The redactions among the events, applied once all are stored.
    redactions: Vec<PendingRedaction>,
}

impl Rooms {
    /// Fetches one batch of the history before the oldest stored events of
    /// `room_id`, or of the newest missing events of `gap`, from another
    /// server in the room and stores it. Returns the number of events added
    /// to the timeline: 0 when this server has the whole history (or gap), or
    /// no server could give more before `deadline`. Failures of other
    /// servers are logged, not returned.
    #[tracing::instrument(skip_all, fields(%room_id))]
    pub async fn backfill(&self, room_id: &RoomId, gap: Option<Gap>, deadline: Instant) -> Result<usize> {
        let lock = {
            let mut locks = self.backfill_locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(room_id.to_owned()).or_default().clone()
        };
        let Ok(mut last_empty) = tokio::time::timeout_at(deadline, lock.lock()).await else {
            return Ok(0);
        };
        if last_empty.get(&gap).is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return Ok(0);
        }

        let extremities = match gap {
            None => storage::backfill::extremities(&self.db.pool, room_id.as_str()).await?,
            Some(gap) => storage::backfill::gap_extremities(&self.db.pool, room_id.as_str(), gap).await?,
        };
        if extremities.is_empty() {
            return Ok(0);
        }
        let Ok(federation) = self.federation() else {
            return Ok(0);
        };

        let starts: Vec<String> =
            extremities.iter().take(MAX_EXTREMITIES_PER_REQUEST).map(|id| format!("v={}", segment(id))).collect();
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?{}&limit={BACKFILL_LIMIT}",
            segment(room_id.as_str()),
            starts.join("&")
        );
        let servers: Vec<OwnedServerName> =
            self.state(room_id).await?.remote_servers(&self.server_name).into_iter().take(MAX_SERVERS).collect();
        for server in servers {
            let request = federation.send_json(&server, Method::GET, &path, None, true);
            let answer = match tokio::time::timeout_at(deadline, request).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(err)) => {
                    tracing::info!(%server, error = %err, "backfill request failed");
                    continue;
                }
                Err(_) => {
                    tracing::info!(%server, "backfill request timed out");
                    break;
                }
            };

            let pdus = objects(&answer["pdus"]);
            let prepared = self.prepare_backfill(federation, &server, room_id, gap, &extremities, pdus);
            let batch = match tokio::time::timeout_at(deadline, prepared).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(reason)) => {
                    tracing::info!(%server, reason, "could not check backfilled events");
                    continue;
                }
                Err(_) => {
                    tracing::info!(%server, "checking backfilled events took too long");
                    break;
                }
            };

            let placed = batch.events.len();
            let redacted = self.db.writer.write(move |w| Box::pin(commit_backfill(w, batch))).await?;
            if redacted {
                // A redacted event may be part of the current state, which is then loaded again.
                *self.slot(room_id).lock().await = None;
            }
            tracing::info!(%server, placed, "backfilled history");
            if placed > 0 {
                last_empty.remove(&gap);
                return Ok(placed);
            }
        }
        last_empty.insert(gap, std::time::Instant::now());
        Ok(0)
    }

    /// Checks the events that `server` returned to `/backfill` and works
    /// out their state, the edge state and the backward extremities after
    /// them. A gap's events leave the edge state alone.
    async fn prepare_backfill(
        &self,
        federation: &Federation,
        server: &ServerName,
        room_id: &RoomId,
        gap: Option<Gap>,
        extremities: &[String],
        pdus: Vec<CanonicalJsonObject>,
    ) -> Fetch<Batch> {
        let room = self.state(room_id).await.map_err(|e| e.message)?;
        let rules = room.rules.clone();
        let mut candidates = self.backfill_candidates(room_id, gap, &rules, pdus).await?;
        if gap.is_some() {
            // A gap ends at the stored events before it; what lies beyond
            // them belongs to the older history.
            let mut reached = HashSet::new();
            let mut walk: Vec<OwnedEventId> =
                extremities.iter().filter_map(|id| OwnedEventId::try_from(id.as_str()).ok()).collect();
            while let Some(id) = walk.pop() {
                if let Some(candidate) = candidates.get(&id)
                    && reached.insert(id)
                {
                    walk.extend(candidate.pdu.prev_events.iter().cloned());
                }
            }
            candidates.retain(|id, _| reached.contains(id));
        }
        let order = topological_order(&candidates);

        let mut pending: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut after: HashMap<OwnedEventId, (Arc<StateMap>, (i64, i64))> = HashMap::new();
        let mut rejected: HashSet<OwnedEventId> = HashSet::new();
        let mut prevs_of_processed: Vec<OwnedEventId> = Vec::new();
        let mut events = Vec::new();
        let mut edge = None;
        let mut redactions = Vec::new();
        let (mut auth_fetches, mut state_fetches) = (0, 0);
        for id in order {
            let Some(candidate) = candidates.remove(&id) else { continue };
            let pdu = match candidate.unchecked {
                None => candidate.pdu,
                Some(object) => {
                    let unknown_auth = self.unknown(&super::remote::ids(&candidate.pdu.auth_events)).await?;
                    let missing_auth = unknown_auth.iter().any(|auth| !pending.keys().any(|p| p.as_str() == auth));
                    if missing_auth && auth_fetches < MAX_AUTH_FETCHES {
                        auth_fetches += 1;
                        let auth_ids = super::fetch::refs(&object, "auth_events");
                        if let Err(reason) = self.fill_auth(federation, server, room_id, &id, &auth_ids).await {
                            tracing::info!(%server, event_id = %id, reason, "could not fetch auth events");
                        }
                    }
                    let keys = federation.signing_keys(&object).await;
                    match self.check_without_state(&room, id.clone(), object, &keys, &pending).await {
                        Ok(pdu) => Arc::new(pdu),
                        Err(Rejected(reason)) => {
                            tracing::info!(event_id = %id, reason, "rejected a backfilled event");
                            prevs_of_processed.extend(candidate.pdu.prev_events.iter().cloned());
                            rejected.insert(id);
                            continue;
                        }
                    }
                }
            };

            // The state before the event.
            let mut states = Vec::new();
            let mut known_group = None;
            let mut unknown_prev = false;
            for prev in &pdu.prev_events {
                if let Some((state, group)) = after.get(prev) {
                    states.push(state.clone());
                    known_group = Some(*group);
                } else if let Some((state, group)) = self.placed_state(prev).await.map_err(|e| e.message)? {
                    states.push(Arc::new(state));
                    known_group = Some(group);
                } else {
                    unknown_prev = true;
                }
            }
            let (before, before_group) = if unknown_prev {
                if state_fetches == MAX_STATE_FETCHES {
                    continue;
                }
                state_fetches += 1;
                match self.fetch_state_before(federation, server, room_id, id.as_str(), false).await {
                    Ok(state) => (Arc::new(state), None),
                    Err(reason) => {
                        tracing::info!(%server, event_id = %id, reason, "could not fetch the state before a backfilled event");
                        continue;
                    }
                }
            } else if states.len() > 1 {
                let states: Vec<StateMap> = states.iter().map(|s| StateMap::clone(s)).collect();
                (Arc::new(self.resolve_states(&rules, &states).await.map_err(|e| e.message)?), None)
            } else {
                (states.pop().unwrap_or_default(), known_group)
            };

            // Auth against the state before it. The edge state came with the
            // join's state, which was checked as a whole.
            if !candidate.in_edge_state
                && pdu.kind != ruma::events::TimelineEventType::RoomCreate
                && let Err(reason) = check_against(&rules, &pdu, &before)
            {
                tracing::info!(event_id = %id, reason, "rejected a backfilled event against the state before it");
                prevs_of_processed.extend(pdu.prev_events.iter().cloned());
                rejected.insert(id);
                continue;
            }

            let (state_after, replaces_state) = match &pdu.state_key {
                Some(key) => {
                    let key = (ruma::events::StateEventType::from(pdu.kind.to_string()), key.clone());
                    let mut state = StateMap::clone(&before);
                    let replaced = state.insert(key, pdu.clone()).map(|p| p.event_id.clone());
                    (Arc::new(state), replaced)
                }
                None => (before.clone(), None),
            };
            let (state_change, state_group, chain_length) = self.state_change(&pdu, before_group, &state_after);
            // NOTE: where the history forks, this is the state of one branch
            // only, which history visibility then applies to the other's older events.
            if edge.is_none() && gap.is_none() {
                let group = self.db.writer.positions().reserve(storage::writer::Stream::StateGroups);
                edge = Some((group, StateMap::clone(&before)));
            }
            if let Some(redaction) = backfilled_redaction(&room, &pdu, &before) {
                redactions.push(redaction);
            }
            prevs_of_processed.extend(pdu.prev_events.iter().cloned());
            after.insert(id.clone(), (state_after, (state_group, chain_length)));
            pending.insert(id, pdu.clone());
            let built = BuiltEvent { pdu, state_change, redaction: None, chain_length, state_group, replaces_state };
            events.push((built, candidate.in_edge_state));
        }

        // The backward extremities: those not reached, and the previous
        // events of this batch that are not in the timeline.
        let processed: HashSet<&OwnedEventId> = pending.keys().chain(&rejected).collect();
        let mut next: Vec<String> =
            extremities.iter().filter(|id| !processed.iter().any(|p| p.as_str() == id.as_str())).cloned().collect();
        next.extend(prevs_of_processed.iter().filter(|id| !processed.contains(id)).map(|id| id.to_string()));
        next.sort();
        next.dedup();
        let unplaced = match gap {
            Some(_) => storage::backfill::unplaced_gap_state(&self.db.pool, &next).await.map_err(|e| e.to_string())?,
            None => HashSet::new(),
        };
        let placed: HashSet<String> = storage::events::get_many(&self.db.pool, &next)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|e| e.stream > EDGE_STATE_TOP && !unplaced.contains(e.pdu.event_id.as_str()))
            .map(|e| e.pdu.event_id.to_string())
            .collect();
        next.retain(|id| !placed.contains(id));
        Ok(Batch { room_id: room_id.to_string(), gap, events, edge, extremities: next, redactions })
    }

    /// Collects the events of this room in a `/backfill` response that are
    /// not in the timeline yet, by event id. Events stored in the edge state
    /// or as outliers come as stored, and soft-failed outliers are left out.
    async fn backfill_candidates(
        &self,
        room_id: &RoomId,
        gap: Option<Gap>,
        rules: &ruma::room_version_rules::RoomVersionRules,
        pdus: Vec<CanonicalJsonObject>,
    ) -> Fetch<HashMap<OwnedEventId, Candidate>> {
        let mut objects: HashMap<OwnedEventId, CanonicalJsonObject> = HashMap::new();
        for object in pdus.into_iter().take(BACKFILL_LIMIT) {
            let Ok(id) = event_id_of(&object, rules) else { continue };
            objects.entry(id).or_insert(object);
        }
        let ids: Vec<String> = objects.keys().map(|id| id.to_string()).collect();
        let in_events: HashMap<OwnedEventId, StoredEvent> = storage::events::get_many(&self.db.pool, &ids)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| (e.pdu.event_id.clone(), e))
            .collect();
        let outliers: HashMap<OwnedEventId, StoredEvent> = storage::outliers::get_many(&self.db.pool, &ids)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| (e.pdu.event_id.clone(), e))
            .collect();
        let soft_failed: HashSet<String> =
            storage::outliers::soft_failed(&self.db.pool, &ids).await.map_err(|e| e.to_string())?.into_iter().collect();
        let gap_state = match gap {
            Some(_) => storage::backfill::unplaced_gap_state(&self.db.pool, &ids).await.map_err(|e| e.to_string())?,
            None => HashSet::new(),
        };

        let mut candidates = HashMap::new();
        for (id, object) in objects {
            let candidate = if let Some(stored) = in_events.get(&id) {
                let movable = stored.stream <= EDGE_STATE_TOP || gap_state.contains(id.as_str());
                if !movable || stored.pdu.room_id != room_id {
                    continue;
                }
                Candidate { pdu: stored.pdu.clone(), unchecked: None, in_edge_state: true }
            } else if let Some(stored) = outliers.get(&id) {
                if soft_failed.contains(id.as_str()) || stored.pdu.room_id != room_id {
                    continue;
                }
                Candidate { pdu: stored.pdu.clone(), unchecked: None, in_edge_state: false }
            } else {
                // Parsed for its place in the graph; the checks come later.
                let Ok(json) = serde_json::to_string(&object) else { continue };
                let Ok(pdu) = Pdu::from_json(id.clone(), &json, room_id) else { continue };
                if !matches!(object.get("room_id"), Some(CanonicalJsonValue::String(r)) if r == room_id.as_str()) {
                    continue;
                }
                Candidate { pdu: Arc::new(pdu), unchecked: Some(object), in_edge_state: false }
            };
            candidates.insert(id, candidate);
        }
        Ok(candidates)
    }

    /// Loads the state after a timeline event (not one of the edge state),
    /// with its group and that group's chain length, when it is known.
    async fn placed_state(&self, event_id: &OwnedEventId) -> Result<Option<(StateMap, (i64, i64))>> {
        let Some(event) = storage::events::get(&self.db.pool, event_id.as_str()).await? else {
            return Ok(None);
        };
        if event.stream <= EDGE_STATE_TOP || event.state_group == 0 {
            return Ok(None);
        }
        // A gap state event not in its place yet has the state after the rejoin.
        if !storage::backfill::unplaced_gap_state(&self.db.pool, &[event_id.to_string()]).await?.is_empty() {
            return Ok(None);
        }
        let state = self.state_of_group(event.state_group).await?;
        let chain = storage::state::chain_length(&self.db.pool, event.state_group).await?;
        Ok(Some((state, (event.state_group, chain))))
    }
}

/// Orders events so that each comes after those of its previous events that
/// are among them, lower depth first where the graph leaves a choice.
fn topological_order(candidates: &HashMap<OwnedEventId, Candidate>) -> Vec<OwnedEventId> {
    let mut waiting: HashMap<&OwnedEventId, usize> = HashMap::new();
    let mut successors: HashMap<&OwnedEventId, Vec<&OwnedEventId>> = HashMap::new();
    for (id, candidate) in candidates {
        let inside: Vec<&OwnedEventId> =
            candidate.pdu.prev_events.iter().filter(|p| candidates.contains_key(*p)).collect();
        waiting.insert(id, inside.len());
        for prev in inside {
            successors.entry(prev).or_default().push(id);
        }
    }
    let mut ready: BinaryHeap<Reverse<(i64, &OwnedEventId)>> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(id, _)| Reverse((candidates[*id].pdu.depth, *id)))
        .collect();
    let mut order = Vec::with_capacity(candidates.len());
    while let Some(Reverse((_, id))) = ready.pop() {
        order.push(id.clone());
        for next in successors.get(id).into_iter().flatten() {
            let count = waiting.get_mut(next).expect("every candidate has a count");
            *count -= 1;
            if *count == 0 {
                ready.push(Reverse((candidates[*next].pdu.depth, *next)));
            }
        }
    }
    // A cycle cannot be a valid history; its events are left out.
    order
}

/// Returns a backfilled redaction as a pending one, or `None` for other
/// events. It records whether the sender may redact other users' events in
/// the state before the redaction.
fn backfilled_redaction(room: &RoomState, pdu: &Pdu, before: &StateMap) -> Option<PendingRedaction> {
    let target = pdu.redacts.as_ref().filter(|_| pdu.kind == ruma::events::TimelineEventType::RoomRedaction)?;
    let mut view = RoomState::new(room.room_id.clone(), room.version.clone(), room.rules.clone());
    view.state = before.clone();
    let may_redact_others = power::user_level(&view, &pdu.sender) >= power::action_level(&view, "redact", 50);
    Some(PendingRedaction {
        target_id: target.to_string(),
        redaction_id: pdu.event_id.to_string(),
        room_id: pdu.room_id.to_string(),
        room_version: room.version.to_string(),
        sender: pdu.sender.to_string(),
        may_redact_others,
    })
}

/// Stores a checked batch in one transaction: the events below every
/// stored event, the edge state before them and the backward extremities.
/// Redactions of stored events and earlier redactions of the new events
/// apply, and new messages count in the messaging metrics. Returns whether
/// a stored event was redacted.
async fn commit_backfill(txn: &mut WriteTxn, batch: Batch) -> Result<bool> {
    let Batch { room_id, gap, events, edge, extremities, redactions } = batch;
    let count = events.len() as i64;
    // Positive positions of a gap may lie below what the search index has
    // followed of the stream, so such events are indexed here.
    let indexed = match gap {
        Some(_) => storage::search::indexed_position_in_txn(&mut txn.conn).await?,
        None => 0,
    };
    let floor = match gap {
        None => storage::backfill::history_floor(&mut txn.conn).await?,
        Some(gap) => {
            let bottom = storage::backfill::gap_bottom(&mut txn.conn, gap).await?;
            if bottom - count <= gap.floor {
                // Not reached with a span far beyond any real gap; the gap stays as it is.
                return Err(Error::internal("backfilling a gap", "the gap's stream positions are used up"));
            }
            bottom
        }
    };
    for (index, (event, in_edge_state)) in events.iter().enumerate() {
        let stream = floor - count + index as i64;
        persist::insert_state_group(txn, &room_id, event).await?;
        let replaces_state = event.replaces_state.as_ref().map(|id| id.as_str());
        if *in_edge_state && gap.is_some() {
            let (pdu, group) = (&event.pdu, event.state_group);
            storage::backfill::move_gap_state(&mut txn.conn, pdu, stream, group, replaces_state, indexed).await?;
        } else if *in_edge_state {
            let pdu = &event.pdu;
            storage::backfill::move_event(&mut txn.conn, pdu, stream, event.state_group, replaces_state).await?;
        } else {
            let new = NewEvent {
                pdu: &event.pdu,
                stream,
                state_group: event.state_group,
                replaces_state,
                require_prev: None,
                txn: None,
            };
            storage::events::insert(&mut txn.conn, new).await?;
            if stream > 0 && stream <= indexed {
                storage::search::insert(&mut txn.conn, &event.pdu, stream).await?;
            }
            // Never stored in the timeline before, so never counted.
            persist::index_message(txn, &room_id, &event.pdu, stream).await?;
        }
        redaction::apply_pending(txn, &event.pdu).await?;
    }
    let mut redacted = false;
    for pending in &redactions {
        redacted |= redaction::apply_backfilled(txn, pending).await?;
    }

    if let Some((group, state)) = edge {
        storage::state::insert_group(&mut txn.conn, group, &room_id, None, 0, &entries(&state)).await?;
        let stored = storage::backfill::edge_state(&mut txn.conn, &room_id).await?;
        let mut state: Vec<Arc<Pdu>> = state.into_values().collect();
        state.sort_by(|a, b| (a.depth, &a.event_id).cmp(&(b.depth, &b.event_id)));
        for pdu in state {
            let key = (pdu.kind.to_string(), pdu.state_key.clone().unwrap_or_default());
            if stored.get(&key).is_some_and(|(id, _)| id == pdu.event_id.as_str()) {
                continue;
            }
            // The newest entry of each key in the edge state is the one that
            // history visibility reads, so a changed entry goes on top.
            let position = storage::backfill::next_edge_position(&mut txn.conn).await?;
            match storage::events::get_in_txn(&mut txn.conn, pdu.event_id.as_str()).await? {
                Some(event) if event.stream > EDGE_STATE_TOP => {}
                Some(_) => {
                    storage::backfill::raise_in_edge_state(&mut txn.conn, &pdu, position).await?;
                }
                None => {
                    let new = NewEvent {
                        pdu: &pdu,
                        stream: position,
                        state_group: group,
                        replaces_state: None,
                        require_prev: None,
                        txn: None,
                    };
                    storage::events::insert(&mut txn.conn, new).await?;
                }
            }
        }
        storage::backfill::set_edge_group(&mut txn.conn, &room_id, group).await?;
    }
    match gap {
        None => storage::backfill::set_extremities(&mut txn.conn, &room_id, &extremities).await?,
        Some(gap) => storage::backfill::set_gap_extremities(&mut txn.conn, &room_id, gap, &extremities).await?,
    }
    Ok(redacted)
}
