//! Receiving PDUs from other servers (spec: Server-Server API, "Checks
//! performed on receipt of a PDU"): format, signatures, content hash, auth
//! against the event's `auth_events`, auth against the state before the event,
//! and the soft-fail check against the room's current state. Accepted events
//! are persisted like local ones and wake the room's local members.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId,
    events::StateEventType,
    signatures::{PublicKeyMap, Verified},
    state_res,
};

use super::{
    RoomSlot, Rooms, audience,
    builder::{BuiltEvent, StateChange},
    pdu::Pdu,
    persist::{self, Batch, ResolvedState},
    power,
    redaction::{self, ReceivedRedaction},
    restricted::JoinAuthorisation,
    state::{MAX_STATE_CHAIN, RoomState},
};
use crate::{
    error::{Error, Result},
    storage::{self, events::StoredEvent, redactions::PendingRedaction, writer::Stream},
};

pub(super) use super::resolve::StateMap;

/// The outcome for a received PDU that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Persisted and shown to local members.
    Accepted,
    /// Passed the auth checks but fails against the current state: not shown
    /// to clients and not built upon.
    SoftFailed,
    /// Already known.
    Duplicate,
}

/// The commit of a queued PDU, which wakes the local members once it is done.
pub type Commit = std::pin::Pin<Box<dyn Future<Output = std::result::Result<(), Rejected>> + Send>>;

/// A PDU that failed a check, with the reason given back to its sender.
#[derive(Debug)]
pub struct Rejected(pub String);

impl Rooms {
    /// Runs the checks on receipt of one PDU of `room_id` and persists it when
    /// it passes. `keys` holds the public keys of the servers that signed it.
    /// Its `prev_events` and `auth_events` must be known here, in the
    /// timeline or as outliers (`fetch.rs` fetches those that are not).
    pub async fn receive_pdu(
        &self,
        room_id: &RoomId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> std::result::Result<(OwnedEventId, Received), Rejected> {
        let (event_id, outcome, commit) = self.receive_pdu_queued(room_id, object, keys).await?;
        if let Some(commit) = commit {
            commit.await?;
        }
        Ok((event_id, outcome))
    }

    /// Runs the checks like [`Rooms::receive_pdu`] and queues an accepted PDU
    /// for the writer without waiting for its commit. The room's lock is
    /// released before the commit, as for local events, so the next PDU of a
    /// transaction is checked while this one commits; the returned future
    /// finishes the commit and wakes the local members.
    pub async fn receive_pdu_queued(
        &self,
        room_id: &RoomId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> std::result::Result<(OwnedEventId, Received, Option<Commit>), Rejected> {
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        let current = self.loaded(&mut guard, room_id).await?;
        let event_id = event_id_of(&object, &current.rules)?;
        if current.extremities.contains(&event_id) || self.is_stored(&event_id).await? {
            return Ok((event_id, Received::Duplicate, None));
        }
        let pdu = verify_received(&current.rules, room_id, event_id, object, keys)?;
        self.accept_received(&slot, guard, current, pdu, None).await
    }

    /// Receives a PDU that passed [`verify_received`], like
    /// [`Rooms::receive_pdu_queued`]. `stored` contains the result of one
    /// duplicate query for a whole transaction. That result decides for this
    /// PDU while nothing else has changed the room since, else a new query
    /// decides.
    pub(super) async fn receive_verified_queued(
        &self,
        pdu: Pdu,
        stored: &mut StoredEvents,
    ) -> std::result::Result<(OwnedEventId, Received, Option<Commit>), Rejected> {
        let room_id = pdu.room_id.clone();
        let slot = self.slot(&room_id);
        let mut guard = slot.lock().await;
        let current = self.loaded(&mut guard, &room_id).await?;
        let event_id = pdu.event_id.clone();
        let duplicate = current.extremities.contains(&event_id)
            || match stored.lookup(&current, &event_id) {
                Some(found) => found,
                None => self.is_stored(&event_id).await?,
            };
        if duplicate {
            return Ok((event_id, Received::Duplicate, None));
        }
        self.accept_received(&slot, guard, current, pdu, Some(stored)).await
    }

    /// Returns the room's state from its slot, loading it first when the slot is empty.
    async fn loaded(
        &self,
        guard: &mut Option<Arc<RoomState>>,
        room_id: &RoomId,
    ) -> std::result::Result<Arc<RoomState>, Rejected> {
        if guard.is_none() {
            *guard = Some(Arc::new(self.load(room_id).await.map_err(internal)?));
        }
        Ok(guard.as_ref().cloned().expect("room state was just loaded"))
    }

    /// Returns whether the timeline contains `event_id`, committed. Events
    /// still in flight are not found, so callers check the forward extremities too.
    async fn is_stored(&self, event_id: &EventId) -> std::result::Result<bool, Rejected> {
        let found = storage::events::get(&self.db.pool, event_id.as_str()).await.map_err(|e| internal(e.into()))?;
        Ok(found.is_some())
    }

    /// Runs the checks of a verified, new PDU against the room with the
    /// room's lock held (auth against its auth events, against the state
    /// before it, soft fail against the current state) and queues it for the
    /// writer. `stored` records the state this PDU leaves in the room's slot.
    async fn accept_received(
        &self,
        slot: &RoomSlot,
        mut guard: tokio::sync::MutexGuard<'_, Option<Arc<RoomState>>>,
        current: Arc<RoomState>,
        pdu: Pdu,
        stored: Option<&mut StoredEvents>,
    ) -> std::result::Result<(OwnedEventId, Received, Option<Commit>), Rejected> {
        let room_id = current.room_id.clone();
        let room_id = &room_id;
        let rules = current.rules.clone();
        let event_id = pdu.event_id.clone();
        self.check_auth_events(&current, &pdu, &HashMap::new()).await?;

        // Auth against the state before the event: the resolution of the
        // states after each of its previous events.
        let extends_current = same_set(&pdu.prev_events, &current.extremities);
        let before = if extends_current {
            Before { state: None, group: Some((current.state_group, current.chain_length)) }
        } else {
            self.flush_writes().await.map_err(internal)?;
            // The PDU may have been in flight, queued by a concurrent request
            // for the same event, and is stored now.
            if self.is_stored(&event_id).await? {
                return Ok((event_id, Received::Duplicate, None));
            }
            let prev = self.load_any(&ids(&pdu.prev_events)).await.map_err(internal)?;
            if prev.len() != pdu.prev_events.len() {
                return Err(Rejected("some of the PDU's prev_events are unknown to this server".into()));
            }
            self.state_before(&current, &prev).await?
        };
        let before_state = before.state.as_ref().unwrap_or(&current.state);
        check_against(&rules, &pdu, before_state)
            .map_err(|r| Rejected(format!("not allowed by the state before the event: {r}")))?;

        let pdu = Arc::new(pdu);
        let mut after = before_state.clone();
        let replaces_state = pdu.state_key.as_ref().and_then(|key| {
            after
                .insert((StateEventType::from(pdu.kind.to_string()), key.clone()), pdu.clone())
                .map(|p| p.event_id.clone())
        });
        let (state_change, state_group, chain_length) = self.state_change(&pdu, before.group, &after);
        let redaction = self.received_redaction(&current, &pdu, before_state).await.map_err(internal)?;
        let mut built =
            BuiltEvent { pdu: pdu.clone(), state_change, redaction: None, chain_length, state_group, replaces_state };

        // Soft fail against the current state: stored outside the timeline,
        // never shown to clients nor built upon.
        if !extends_current && let Err(reason) = check_against(&rules, &pdu, &current.state) {
            tracing::info!(%event_id, %reason, "soft-failing a received event");
            let room = room_id.to_string();
            self.db
                .writer
                .write(move |w| Box::pin(persist::persist_outliers(w, room, vec![(built, true)])))
                .await
                .map_err(internal)?;
            return Ok((event_id, Received::SoftFailed, None));
        }

        // The room's new forward extremities and current state.
        let mut extremities: Vec<OwnedEventId> =
            current.extremities.iter().filter(|id| !pdu.prev_events.contains(id)).cloned().collect();
        extremities.push(pdu.event_id.clone());
        let mut next = RoomState::clone(&current);
        next.depth = current.depth.max(pdu.depth);
        let mut snapshot = None;
        if extremities.len() == 1 {
            next.state = after;
            next.state_group = state_group;
            next.chain_length = chain_length;
        } else {
            let mut states = Vec::with_capacity(extremities.len());
            let others: Vec<OwnedEventId> = extremities.iter().filter(|id| **id != pdu.event_id).cloned().collect();
            let stored = self.load_any(&ids(&others)).await.map_err(internal)?;
            for event in stored.values() {
                if event.state_group != 0 {
                    states.push(self.state_of_group(event.state_group).await.map_err(internal)?);
                }
            }
            states.push(after.clone());
            let resolved = self.resolve_states(&rules, &states).await.map_err(internal)?;
            if same_state(&resolved, &after) {
                next.state_group = state_group;
                next.chain_length = chain_length;
            } else {
                let group = self.db.writer.positions().reserve(Stream::StateGroups);
                snapshot = Some((group, entries(&resolved)));
                next.state_group = group;
                next.chain_length = 0;
            }
            next.state = resolved;
        }
        next.extremities = extremities;
        let mut pending_redaction = None;
        match redaction {
            ReceivedRedaction::Apply(target, redacted) => {
                if let Some(in_state) = next.find_event(&target).cloned() {
                    let redacted_pdu = Pdu::from_json(target.clone(), &redacted, room_id)
                        .map_err(|e| internal(Error::internal("redacting", e)))?;
                    let key = (
                        StateEventType::from(in_state.kind.to_string()),
                        in_state.state_key.clone().unwrap_or_default(),
                    );
                    next.state.insert(key, Arc::new(redacted_pdu));
                }
                built.redaction = Some((target, redacted));
            }
            ReceivedRedaction::Pending(pending) => pending_redaction = Some(pending),
            ReceivedRedaction::Ignored => {}
        }
        // A state event that an earlier redaction targets enters the state
        // redacted. Other events are redacted only in storage, which no
        // in-memory state refers to.
        if let Some(key) = &pdu.state_key
            && next.find_event(&pdu.event_id).is_some()
            && let Some(redacted) = self.redacted_on_arrival(&pdu).await.map_err(internal)?
        {
            next.state.insert((StateEventType::from(pdu.kind.to_string()), key.clone()), redacted);
        }
        let changes = state_changes(&current.state, &next.state);

        let wake_target = pdu.state_key.as_deref().and_then(|key| ruma::UserId::parse(key).ok());
        // Local members get notifications for received events just as for local ones.
        let push_actions = vec![self.push.evaluate(&next, &built.pdu).await.map_err(internal)?];
        let notifies = push_actions.iter().any(crate::storage::push::PushOutcome::notifies);
        let batch = Batch {
            room_id: room_id.to_string(),
            new_room: None,
            events: vec![built],
            push_actions,
            txn: None,
            extremities: Some(next.extremities.iter().map(|id| id.to_string()).collect()),
            // An event that extends the forward extremities builds on a
            // timeline event, which may still be in flight; the writer then
            // stores it only if that one was stored.
            require_prev: extends_current,
            resolved: Some(ResolvedState { snapshot, changes }),
            edge_state: false,
            pending_redaction,
        };
        let committed = match self.db.writer.submit(move |w| Box::pin(persist::persist(w, batch))).await {
            Ok(committed) => committed,
            Err(err) => {
                *guard = None;
                return Err(internal(err));
            }
        };
        let mut members = audience(&next, &self.server_name, wake_target.filter(|_| pdu.membership().is_some()));
        // Members whom the resolution removed learn of it too.
        for user in audience(&current, &self.server_name, None) {
            if !members.contains(&user) {
                members.push(user);
            }
        }
        let next = Arc::new(next);
        if let Some(stored) = stored {
            stored.note_own_state(&current, next.clone());
        }
        *guard = Some(next);
        drop(guard);
        let (slot, notifier, push) = (slot.clone(), self.notifier.clone(), self.push.clone());
        let commit: Commit = Box::pin(async move {
            if let Err(err) = committed.await {
                // The in-memory state contains an event that was not stored, so reload it.
                *slot.lock().await = None;
                return Err(internal(err));
            }
            notifier.wake(members.iter().map(|u| &**u));
            if notifies {
                push.new_actions.notify_one();
            }
            Ok(())
        });
        Ok((event_id, Received::Accepted, Some(commit)))
    }

    /// Waits until every write queued so far has committed, so that reads
    /// see the events still in flight. Jobs commit in queue order, so an
    /// empty job is enough.
    pub(super) async fn flush_writes(&self) -> Result<()> {
        self.db.writer.write(|_| Box::pin(async { Ok(()) })).await
    }

    /// The checks that need no room state: format, signatures, content hash,
    /// and auth against the event's own `auth_events`, which must be known:
    /// stored, or in `pending` (events checked but not yet stored).
    pub(super) async fn check_without_state(
        &self,
        current: &RoomState,
        event_id: OwnedEventId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
        pending: &HashMap<OwnedEventId, Arc<Pdu>>,
    ) -> std::result::Result<Pdu, Rejected> {
        let pdu = verify_received(&current.rules, &current.room_id, event_id, object, keys)?;
        self.check_auth_events(current, &pdu, pending).await?;
        Ok(pdu)
    }

    /// Auth of a verified PDU against its own `auth_events`, which must be known.
    /// `pending` contains events checked earlier in the same batch but not stored yet.
    async fn check_auth_events(
        &self,
        current: &RoomState,
        pdu: &Pdu,
        pending: &HashMap<OwnedEventId, Arc<Pdu>>,
    ) -> std::result::Result<(), Rejected> {
        let rules = &current.rules;
        // Usually every auth event is in the current state, which is in memory.
        let in_state: Vec<Arc<Pdu>> = pdu
            .auth_events
            .iter()
            .filter_map(|id| current.find_event(id).or_else(|| pending.get(id)).cloned())
            .collect();
        let mut auth_events: HashMap<OwnedEventId, Arc<Pdu>> =
            in_state.into_iter().map(|p| (p.event_id.clone(), p)).collect();
        if auth_events.len() != pdu.auth_events.len() {
            self.flush_writes().await.map_err(internal)?;
            let rest: Vec<OwnedEventId> =
                pdu.auth_events.iter().filter(|id| !auth_events.contains_key(*id)).cloned().collect();
            let found = self.load_any(&ids(&rest)).await.map_err(internal)?;
            auth_events.extend(found.into_iter().map(|(id, e)| (id, e.pdu)));
        }
        if auth_events.len() != pdu.auth_events.len() {
            return Err(Rejected("some of the PDU's auth_events are unknown to this server".into()));
        }
        let mut auth_state: StateMap = auth_events
            .values()
            .filter_map(|e| e.state_key.clone().map(|key| ((StateEventType::from(e.kind.to_string()), key), e.clone())))
            .collect();
        // Where the room id stands for the create event, it is not listed but still applies.
        if rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = current.create_event()
        {
            auth_state.entry((StateEventType::RoomCreate, String::new())).or_insert_with(|| create.clone());
        }
        let fetch_event =
            |id: &EventId| auth_events.get(id).map(|p| &**p).or_else(|| current.find_event(id).map(|p| &**p));
        state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
            .map_err(|reason| Rejected(format!("not allowed by its auth events: {reason}")))?;
        check_against(rules, pdu, &auth_state).map_err(|r| Rejected(format!("not allowed by its auth events: {r}")))
    }

    /// The state before `pdu` when it does not extend the room's forward
    /// extremities: the state after its single previous event, or the
    /// resolution of the states after each of them.
    async fn state_before(
        &self,
        current: &RoomState,
        prev: &HashMap<OwnedEventId, StoredEvent>,
    ) -> std::result::Result<Before, Rejected> {
        if let Some(missing) = prev.values().find(|e| e.state_group == 0) {
            return Err(Rejected(format!("the state after prev event {} is unknown", missing.pdu.event_id)));
        }
        let groups: HashSet<i64> = prev.values().map(|e| e.state_group).collect();
        if groups.len() == 1 {
            let group = *groups.iter().next().expect("one group");
            if group == current.state_group {
                return Ok(Before { state: Some(current.state.clone()), group: Some((group, current.chain_length)) });
            }
            let state = self.state_of_group(group).await.map_err(internal)?;
            let chain = storage::state::chain_length(&self.db.pool, group).await.map_err(|e| internal(e.into()))?;
            return Ok(Before { state: Some(state), group: Some((group, chain)) });
        }
        let mut states = Vec::with_capacity(groups.len());
        for group in groups {
            states.push(self.state_of_group(group).await.map_err(internal)?);
        }
        let resolved = self.resolve_states(&current.rules, &states).await.map_err(internal)?;
        Ok(Before { state: Some(resolved), group: None })
    }

    /// Returns the state group of the state after a received event, and how
    /// it is stored. `before` is the stored group of the state before the event,
    /// with its chain length, when a stored group contains that state.
    pub(super) fn state_change(
        &self,
        pdu: &Pdu,
        before: Option<(i64, i64)>,
        after: &StateMap,
    ) -> (StateChange, i64, i64) {
        let positions = self.db.writer.positions();
        match (before, pdu.is_state()) {
            (Some((group, chain)), false) => (StateChange::None, group, chain),
            (Some((prev, chain)), true) if chain + 1 < MAX_STATE_CHAIN => {
                let group = positions.reserve(Stream::StateGroups);
                (StateChange::Delta { group, prev }, group, chain + 1)
            }
            _ => {
                let group = positions.reserve(Stream::StateGroups);
                (StateChange::Snapshot { group, entries: entries(after) }, group, 0)
            }
        }
    }

    /// Decides what a received redaction does to its target. When the target
    /// is stored and the redaction's sender may redact it (a high enough
    /// power level in the state before the redaction, or the same server as
    /// the target's sender), the result is the target's redacted form. When
    /// the target is not stored yet, or the redaction does not apply to it,
    /// the redaction becomes pending.
    async fn received_redaction(&self, current: &RoomState, pdu: &Pdu, state: &StateMap) -> Result<ReceivedRedaction> {
        let Some(target) = pdu.redacts.as_ref().filter(|_| pdu.kind == ruma::events::TimelineEventType::RoomRedaction)
        else {
            return Ok(ReceivedRedaction::Ignored);
        };
        let mut view = RoomState::new(current.room_id.clone(), current.version.clone(), current.rules.clone());
        view.state = state.clone();
        let may_redact_others = power::user_level(&view, &pdu.sender) >= power::action_level(&view, "redact", 50);
        // The target may be an earlier PDU of the same transaction, still in flight.
        self.flush_writes().await?;
        let pending = PendingRedaction {
            target_id: target.to_string(),
            redaction_id: pdu.event_id.to_string(),
            room_id: pdu.room_id.to_string(),
            room_version: current.version.to_string(),
            sender: pdu.sender.to_string(),
            may_redact_others,
        };
        let Some(stored) = storage::events::get(&self.db.pool, target.as_str()).await? else {
            tracing::info!(event_id = %pdu.event_id, %target, "a received redaction waits for its target");
            return Ok(ReceivedRedaction::Pending(pending));
        };
        // One that does not apply is kept like a pending one, out of client views.
        if stored.pdu.room_id != pdu.room_id || !redaction::applies(&pdu.sender, may_redact_others, &stored.pdu) {
            tracing::info!(event_id = %pdu.event_id, %target, "a received redaction does not apply");
            return Ok(ReceivedRedaction::Pending(pending));
        }
        if stored.redacted_by.is_some() {
            return Ok(ReceivedRedaction::Ignored);
        }
        let json = redaction::redacted_json(&stored.pdu, &current.rules.redaction)?;
        Ok(ReceivedRedaction::Apply(target.clone(), json))
    }

    /// Returns the redacted form of a received state event that a pending
    /// redaction applies to, for the room's in-memory state. The stored form
    /// is redacted when the event is persisted (`redaction::apply_pending`).
    async fn redacted_on_arrival(&self, pdu: &Pdu) -> Result<Option<Arc<Pdu>>> {
        // A redaction of the same transaction may still be in flight.
        self.flush_writes().await?;
        let pending = storage::redactions::of_target(&self.db.pool, pdu.event_id.as_str()).await?;
        let Some((_, json)) = redaction::first_applying(&pending, pdu)? else {
            return Ok(None);
        };
        let redacted =
            Pdu::from_json(pdu.event_id.clone(), &json, &pdu.room_id).map_err(|e| Error::internal("redacting", e))?;
        Ok(Some(Arc::new(redacted)))
    }
}

/// The state before a received event, and the stored group that holds it
/// with that group's chain length (`None` when resolution produced it).
struct Before {
    /// `None` for the room's current state.
    state: Option<StateMap>,
    group: Option<(i64, i64)>,
}

fn internal(e: Error) -> Rejected {
    Rejected(format!("internal error: {}", e.message))
}

/// Runs the checks of a received PDU that need neither the room's state nor
/// the database: format, signatures and content hash. A PDU whose content
/// hash does not match is kept in its redacted form. This is CPU work only,
/// so a transaction's PDUs may be verified in parallel before they are
/// received in order.
pub(super) fn verify_received(
    rules: &ruma::room_version_rules::RoomVersionRules,
    room_id: &RoomId,
    event_id: OwnedEventId,
    object: CanonicalJsonObject,
    keys: &PublicKeyMap,
) -> std::result::Result<Pdu, Rejected> {
    match object.get("room_id") {
        Some(CanonicalJsonValue::String(id)) if id == room_id.as_str() => {}
        _ => return Err(Rejected(format!("the PDU's room_id is not {room_id}"))),
    }

    // Signatures, then the content hash.
    let object = match ruma::signatures::verify_event(keys, &object, rules) {
        Ok(Verified::All) => object,
        Ok(Verified::Signatures) => {
            tracing::info!(%event_id, "content hash mismatch; keeping the redacted event");
            ruma::canonical_json::redact(object, &rules.redaction, None)
                .map_err(|e| Rejected(format!("the PDU cannot be redacted: {e}")))?
        }
        Err(err) => return Err(Rejected(format!("signature check failed: {err}"))),
    };
    let json = serde_json::to_string(&object).map_err(|e| Rejected(format!("the PDU is malformed: {e}")))?;
    let pdu = Pdu::from_json(event_id, &json, room_id).map_err(|e| Rejected(format!("the PDU is malformed: {e}")))?;
    if pdu.kind == ruma::events::TimelineEventType::RoomCreate {
        return Err(Rejected("a room's create event cannot arrive in a transaction".into()));
    }
    Ok(pdu)
}

/// The event ids that one query found stored, for the duplicate check of a
/// whole transaction's PDUs. The result is valid for a room while the room's
/// slot still contains the state read before the query ran, or the state
/// that this transaction's last accepted PDU left there. Any other change of
/// the room, such as a concurrent transaction's PDU, may have stored one of
/// the ids since, so [`StoredEvents::lookup`] then returns `None`.
pub(super) struct StoredEvents {
    stored: HashSet<OwnedEventId>,
    /// For each room, the state for which `stored` is valid.
    valid_for: HashMap<ruma::OwnedRoomId, Arc<RoomState>>,
}

impl StoredEvents {
    /// `stored` are the ids found; `states` the states of the rooms as
    /// read before the query.
    pub(super) fn new(stored: HashSet<OwnedEventId>, states: impl IntoIterator<Item = Arc<RoomState>>) -> Self {
        let valid_for = states.into_iter().map(|state| (state.room_id.clone(), state)).collect();
        Self { stored, valid_for }
    }

    /// Returns whether the query found `event_id`. Stored events stay
    /// stored, so this result is valid whatever changed since.
    pub(super) fn contains(&self, event_id: &EventId) -> bool {
        self.stored.contains(event_id)
    }

    /// Returns an empty result that is valid for no room, so every PDU gets its own query.
    pub(super) fn none() -> Self {
        Self { stored: HashSet::new(), valid_for: HashMap::new() }
    }

    /// Returns whether `event_id` is stored, or `None` when the result is
    /// not valid for `current`, the state in the room's slot.
    fn lookup(&self, current: &Arc<RoomState>, event_id: &EventId) -> Option<bool> {
        let valid = self.valid_for.get(&current.room_id).is_some_and(|state| Arc::ptr_eq(state, current));
        valid.then(|| self.stored.contains(event_id))
    }

    /// Records the state that an accepted PDU of this transaction left in
    /// its room's slot in place of `replaced`. The result stays valid only
    /// if it was valid for `replaced`.
    fn note_own_state(&mut self, replaced: &Arc<RoomState>, state: Arc<RoomState>) {
        if let Some(valid) = self.valid_for.get_mut(&state.room_id)
            && Arc::ptr_eq(valid, replaced)
        {
            *valid = state;
        }
    }
}

/// The event id of a PDU: its reference hash in room versions 3 and later.
pub(super) fn event_id_of(
    object: &CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> std::result::Result<OwnedEventId, Rejected> {
    let hash =
        ruma::signatures::reference_hash(object, rules).map_err(|e| Rejected(format!("the PDU is malformed: {e}")))?;
    OwnedEventId::try_from(format!("${hash}")).map_err(|e| Rejected(format!("the PDU has no valid event id: {e}")))
}

pub(super) fn ids(ids: &[OwnedEventId]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

fn same_set(a: &[OwnedEventId], b: &[OwnedEventId]) -> bool {
    let a: HashSet<&OwnedEventId> = a.iter().collect();
    let b: HashSet<&OwnedEventId> = b.iter().collect();
    a == b
}

fn same_state(a: &StateMap, b: &StateMap) -> bool {
    a.len() == b.len() && a.iter().all(|(key, pdu)| b.get(key).is_some_and(|o| o.event_id == pdu.event_id))
}

/// The entries of a state as stored in a state group.
pub(super) fn entries(state: &StateMap) -> Vec<((String, String), String)> {
    state.iter().map(|((kind, key), pdu)| ((kind.to_string(), key.clone()), pdu.event_id.to_string())).collect()
}

/// The entries that differ between two states, as changes to the first.
fn state_changes(old: &StateMap, new: &StateMap) -> Vec<((String, String), Option<Arc<Pdu>>)> {
    let mut changes: Vec<((String, String), Option<Arc<Pdu>>)> = new
        .iter()
        .filter(|(key, pdu)| old.get(*key).is_none_or(|o| o.event_id != pdu.event_id))
        .map(|((kind, key), pdu)| ((kind.to_string(), key.clone()), Some(pdu.clone())))
        .collect();
    changes.extend(
        old.keys().filter(|key| !new.contains_key(*key)).map(|(kind, key)| ((kind.to_string(), key.clone()), None)),
    );
    changes
}

pub(super) fn check_against(
    rules: &ruma::room_version_rules::RoomVersionRules,
    pdu: &Pdu,
    state: &StateMap,
) -> std::result::Result<(), String> {
    let fetch_state = |kind: &StateEventType, key: &str| state.get(&(kind.clone(), key.to_owned())).map(|p| &**p);
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state).map_err(|e| e.to_string())
}

/// What a resident server answers to `send_join`.
pub struct JoinAnswer {
    /// The state before the join event, without most member events when
    /// they were omitted.
    pub state: Vec<Arc<Pdu>>,
    /// The auth chain of that state and of the join event; without the
    /// events of `state` when member events were omitted.
    pub auth_chain: Vec<Arc<Pdu>>,
    /// The join event with this server's signature, when it authorised a
    /// restricted join.
    pub event: Option<CanonicalJsonObject>,
    /// The servers with joined members before the join, present when
    /// member events were omitted from `state`.
    pub servers_in_room: Option<Vec<ruma::OwnedServerName>>,
}

/// Maximum number of members whose member events a reduced `send_join`
/// response keeps to name an unnamed room, like the `m.heroes` of `/sync`.
const MAX_HEROES: usize = 5;

impl Rooms {
    /// Builds the `make_join` template for `user` (spec: Server-Server API,
    /// "Joining Rooms"): an unsigned join event on top of the current state,
    /// after checking the room policy and the authorization rules. In a
    /// restricted room it names a local user who may invite in
    /// `join_authorised_via_users_server`, unless the user is already
    /// invited or joined.
    pub async fn make_join(&self, room_id: &RoomId, user: &ruma::UserId) -> Result<(String, serde_json::Value)> {
        let room = self.state(room_id).await?;
        self.policy.check_join(&room, user).await?;
        let mut content = serde_json::json!({ "membership": "join" });
        if let JoinAuthorisation::Via(via) = self.authorise_join(&room, user).await? {
            content["join_authorised_via_users_server"] = serde_json::json!(via);
        }
        self.make_membership(room_id, user, content).await
    }

    /// Builds the `make_leave` template for `user` (spec: Server-Server API,
    /// "Leaving Rooms (Rejecting Invites)").
    pub async fn make_leave(&self, room_id: &RoomId, user: &ruma::UserId) -> Result<(String, serde_json::Value)> {
        self.make_membership(room_id, user, serde_json::json!({ "membership": "leave" })).await
    }

    /// Builds an unsigned member event of `user` with `content` on top of
    /// the current state and checks it against the authorization rules.
    async fn make_membership(
        &self,
        room_id: &RoomId,
        user: &ruma::UserId,
        content: serde_json::Value,
    ) -> Result<(String, serde_json::Value)> {
        let room = self.state(room_id).await?;
        let membership = content["membership"].as_str().unwrap_or_default().to_owned();
        let raw = serde_json::value::to_raw_value(&content).map_err(|e| Error::internal("a join template", e))?;
        let kind = ruma::events::TimelineEventType::RoomMember;
        let auth_types =
            state_res::auth_types_for_event(&kind, user, Some(user.as_str()), &raw, &room.rules.authorization)
                .map_err(|e| Error::internal("a join template", e))?;
        let mut auth_events: Vec<String> =
            auth_types.iter().filter_map(|(kind, key)| room.get(kind, key).map(|p| p.event_id.to_string())).collect();
        auth_events.sort();
        let template = serde_json::json!({
            "auth_events": auth_events,
            "content": content,
            "depth": room.depth + 1,
            "origin_server_ts": storage::now_ms(),
            "prev_events": room.extremities,
            "room_id": room_id,
            "sender": user,
            "state_key": user,
            "type": "m.room.member",
        });
        // The template must pass the rules, so the joining server learns now that it may not join.
        let probe = Pdu::from_json(
            OwnedEventId::try_from("$template").map_err(|e| Error::internal("a join template", e))?,
            &template.to_string(),
            room_id,
        )
        .map_err(|e| Error::internal("a join template", e))?;
        check_against(&room.rules, &probe, &room.state)
            .map_err(|reason| Error::forbidden(format!("{user} may not {membership} {room_id}: {reason}")))?;
        Ok((room.version.to_string(), template))
    }

    /// Takes a signed join event from `origin` as the resident server: the
    /// checks on receipt, the room policy, persisting it, and sending it to
    /// the other servers in the room. Returns the state before the join and
    /// the auth chain. With `omit_members`, the state keeps only the member
    /// events the joining server needs (see [`Rooms::reduced_state`]), and
    /// the auth chain leaves out the events of the state.
    pub async fn send_join(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        mut object: CanonicalJsonObject,
        keys: &PublicKeyMap,
        omit_members: bool,
    ) -> Result<JoinAnswer> {
        let sender = own_member_event(origin, &object, "join")?;
        let before = self.state(room_id).await?;
        self.policy.check_join(&before, &sender).await?;
        let mut keys = keys.clone();
        let signed = self.sign_restricted_join(&before, &sender, &mut object, &mut keys).await?;
        let event = signed.then(|| object.clone());
        let servers_before = before.servers();
        let (id, _) =
            self.receive_pdu(room_id, object, &keys).await.map_err(|Rejected(reason)| Error::forbidden(reason))?;
        if id != event_id {
            return Err(Error::bad_json(format!("the event id is {id}, not {event_id}")));
        }
        let after = self.state(room_id).await?;
        let Some(join) = after.find_event(&id).cloned() else {
            return Err(Error::forbidden("the join event was soft-failed"));
        };
        let servers: Vec<_> = servers_before.iter().filter(|s| *s != origin).cloned().collect();
        let mut others = RoomState::clone(&after);
        others.state.retain(|(kind, key), _| {
            *kind != StateEventType::RoomMember
                || ruma::UserId::parse(key.as_str()).map(|u| u.server_name() != origin).unwrap_or(true)
        });
        self.send_out(&servers, &others, std::slice::from_ref(&join)).await;

        // The state before the join contains the joining user's earlier member event, such as an invite.
        let mut state: Vec<Arc<Pdu>> = after.state.values().filter(|p| p.event_id != id).cloned().collect();
        if let Some(earlier) = before.get(&StateEventType::RoomMember, sender.as_str()) {
            state.push(earlier.clone());
        }
        if omit_members {
            state = self.reduced_state(state, &sender).await?;
        }

        let mut chain: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut pending: Vec<OwnedEventId> =
            state.iter().chain(std::iter::once(&join)).flat_map(|p| p.auth_events.clone()).collect();
        if after.rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = after.create_event()
        {
            pending.push(create.event_id.clone());
        }
        while !pending.is_empty() {
            pending.retain(|id| !chain.contains_key(id));
            let found = self.load_any(&ids(&pending)).await?;
            pending = found.values().flat_map(|e| e.pdu.auth_events.clone()).collect();
            chain.extend(found.into_iter().map(|(id, e)| (id, e.pdu)));
        }
        let servers_in_room = omit_members.then_some(servers_before);
        if omit_members {
            // The spec lets a reduced response leave the events of `state` out of the auth chain.
            for pdu in &state {
                chain.remove(&pdu.event_id);
            }
        }
        Ok(JoinAnswer { state, auth_chain: chain.into_values().collect(), event, servers_in_room })
    }

    /// Reduces the state before a join for a joining server that sets
    /// `omit_members` (spec: Server-Server API, `send_join` v2). Keeps every
    /// event but member events, and the joining user's own member event.
    /// When the room has neither a name nor a canonical alias, also keeps the
    /// member events of the users a client names the room after. These are
    /// the first [`MAX_HEROES`] joined or invited members other than the
    /// joining user, in stream order. When there are none, they are the first
    /// members who left or were banned.
    async fn reduced_state(&self, state: Vec<Arc<Pdu>>, joining: &ruma::UserId) -> Result<Vec<Arc<Pdu>>> {
        use ruma::events::TimelineEventType;
        let has_text = |kind: TimelineEventType, field: &str| {
            state.iter().any(|p| {
                p.kind == kind
                    && p.state_key.as_deref() == Some("")
                    && p.content_str(field).is_some_and(|v| !v.is_empty())
            })
        };
        let named =
            has_text(TimelineEventType::RoomName, "name") || has_text(TimelineEventType::RoomCanonicalAlias, "alias");
        let is_member = |p: &Pdu| p.kind == TimelineEventType::RoomMember;
        let (members, mut kept): (Vec<Arc<Pdu>>, Vec<Arc<Pdu>>) = state.into_iter().partition(|p| is_member(p));
        kept.extend(members.iter().filter(|p| p.state_key.as_deref() == Some(joining.as_str())).cloned());
        if named {
            return Ok(kept);
        }

        let others: Vec<&Arc<Pdu>> =
            members.iter().filter(|p| p.state_key.as_deref() != Some(joining.as_str())).collect();
        let current: Vec<&Arc<Pdu>> =
            others.iter().copied().filter(|p| matches!(p.membership_str(), Some("join" | "invite"))).collect();
        let candidates = if current.is_empty() {
            others.into_iter().filter(|p| matches!(p.membership_str(), Some("leave" | "ban"))).collect()
        } else {
            current
        };
        let ids: Vec<String> = candidates.iter().map(|p| p.event_id.to_string()).collect();
        let streams = self.load_any(&ids).await?;
        let mut ordered: Vec<(i64, &Arc<Pdu>)> =
            candidates.into_iter().map(|p| (streams.get(&p.event_id).map_or(i64::MAX, |e| e.stream), p)).collect();
        ordered.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.event_id.cmp(&y.event_id)));
        kept.extend(ordered.into_iter().take(MAX_HEROES).map(|(_, p)| p.clone()));
        Ok(kept)
    }

    /// Signs a join whose `join_authorised_via_users_server` names a local
    /// user (spec: Server-Server API, "Restricted rooms"), once the joining
    /// user meets the room's allow conditions, and adds this server's key to
    /// `keys` for the checks on receipt. Returns whether it signed.
    async fn sign_restricted_join(
        &self,
        room: &RoomState,
        sender: &ruma::UserId,
        object: &mut CanonicalJsonObject,
        keys: &mut PublicKeyMap,
    ) -> Result<bool> {
        let via = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content.get("join_authorised_via_users_server"),
            _ => None,
        };
        let Some(via) = via else { return Ok(false) };
        let via = via
            .as_str()
            .and_then(|via| ruma::UserId::parse(via).ok())
            .ok_or_else(|| Error::bad_json("content.join_authorised_via_users_server is not a user id"))?;
        if via.server_name() != self.server_name || !room.rules.authorization.restricted_join_rule {
            return Ok(false);
        }
        // The checks of make_join again: the state may have changed since.
        self.authorise_join(room, sender).await?;
        ruma::signatures::sign_event(self.server_name.as_str(), &self.key.pair, object, &room.rules.redaction)
            .map_err(|e| Error::internal("signing a restricted join", e))?;
        let mut own = ruma::signatures::PublicKeySet::new();
        own.insert(self.key.key_id.clone(), ruma::serde::Base64::new(self.key.pair.public_key().to_vec()));
        keys.insert(self.server_name.to_string(), own);
        Ok(true)
    }

    /// Takes a signed leave event from `origin` as the resident server (spec:
    /// Server-Server API, `send_leave`): the checks on receipt, persisting
    /// it, and sending it to the other servers in the room.
    pub async fn send_leave(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<()> {
        self.send_membership(origin, room_id, event_id, object, keys, "leave").await.map(|_| ())
    }

    /// Builds the `make_knock` template for `user` (spec: Server-Server API,
    /// "Knocking upon a room"), in room versions that allow knocking.
    pub async fn make_knock(&self, room_id: &RoomId, user: &ruma::UserId) -> Result<(String, serde_json::Value)> {
        let room = self.state(room_id).await?;
        if !room.rules.authorization.knocking {
            let mut error = Error::new(
                crate::error::ErrorKind::IncompatibleRoomVersion,
                format!("room {room_id} has version {}, which does not allow knocking", room.version),
            );
            error.body = serde_json::json!({ "room_version": room.version.to_string() }).as_object().cloned();
            return Err(error);
        }
        self.make_membership(room_id, user, serde_json::json!({ "membership": "knock" })).await
    }

    /// Takes a signed knock from `origin` as the resident server (`send_knock`)
    /// like a leave, and returns the stripped state that describes the room.
    pub async fn send_knock(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<Vec<serde_json::Value>> {
        let after = self.send_membership(origin, room_id, event_id, object, keys, "knock").await?;
        Ok(super::invite::room_summary(&after))
    }

    /// Runs a member event of a user of `origin` about themselves through the
    /// checks on receipt, and sends it to the other servers in the room.
    /// Returns the room's state after it.
    async fn send_membership(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
        membership: &str,
    ) -> Result<Arc<RoomState>> {
        own_member_event(origin, &object, membership)?;
        let before = self.state(room_id).await?;
        let servers_before = before.servers();
        let (id, _) =
            self.receive_pdu(room_id, object, keys).await.map_err(|Rejected(reason)| Error::forbidden(reason))?;
        if id != event_id {
            return Err(Error::bad_json(format!("the event id is {id}, not {event_id}")));
        }
        let after = self.state(room_id).await?;
        let Some(event) = after.find_event(&id).cloned() else {
            return Err(Error::forbidden(format!("the {membership} event was soft-failed")));
        };
        let servers: Vec<_> = servers_before.iter().filter(|s| *s != origin).cloned().collect();
        let mut others = RoomState::clone(&after);
        others.state.retain(|(kind, key), _| {
            *kind != StateEventType::RoomMember
                || ruma::UserId::parse(key.as_str()).map(|u| u.server_name() != origin).unwrap_or(true)
        });
        self.send_out(&servers, &others, std::slice::from_ref(&event)).await;
        Ok(after)
    }
}

/// Checks that `object` is the `membership` event of a user of `origin`
/// about themselves, and returns that user.
fn own_member_event(
    origin: &ruma::ServerName,
    object: &CanonicalJsonObject,
    membership: &str,
) -> Result<ruma::OwnedUserId> {
    let field = |name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let sender = field("sender").and_then(|s| ruma::UserId::parse(s).ok());
    let Some(sender) = sender.filter(|s| s.server_name() == origin) else {
        return Err(Error::bad_json(format!("the {membership} event's sender must be a user of {origin}")));
    };
    if field("type").as_deref() != Some("m.room.member") || field("state_key").as_deref() != Some(sender.as_str()) {
        return Err(Error::bad_json("the event must be the sender's own m.room.member event"));
    }
    let actual = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => content.get("membership").and_then(|v| v.as_str()),
        _ => None,
    };
    if actual != Some(membership) {
        return Err(Error::bad_json(format!("content.membership must be {membership}")));
    }
    Ok(sender)
}
