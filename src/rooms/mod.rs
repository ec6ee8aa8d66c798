//! Rooms: building, authorizing and persisting events, and the state they
//! produce. All writes to one room go through its lock, so `prev_events`,
//! depth and stream order agree.

mod backfill;
pub mod builder;
mod create;
mod fetch;
pub mod hierarchy;
pub mod invite;
mod join;
mod knock;
pub mod membership;
pub mod pdu;
mod persist;
pub mod power;
mod redaction;
pub mod relations;
pub mod remote;
mod remote_space;
mod resolve;
pub mod restricted;
pub mod serialize;
pub mod state;
pub mod transaction;
mod upgrade;
pub mod version;
pub mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
};
use tokio::sync::Mutex as AsyncMutex;

pub use self::create::{CreateRoom, random_localpart};
use self::{
    builder::{BuiltEvent, EventDraft},
    pdu::Pdu,
    persist::{Batch, NewRoom, TxnRecord},
    state::RoomState,
};
use crate::{
    error::{Error, Result},
    policy::RoomPolicy,
    push::Push,
    signing_key::SigningKey,
    storage::{self, Db},
    sync::notifier::Notifier,
};

type RoomSlot = Arc<AsyncMutex<Option<Arc<RoomState>>>>;

/// The room service.
pub struct Rooms {
    db: Db,
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    notifier: Arc<Notifier>,
    policy: Arc<dyn RoomPolicy>,
    push: Arc<Push>,
    default_version: RoomVersionId,
    slots: Mutex<HashMap<OwnedRoomId, RoomSlot>>,
    /// Rooms known to exist, so that the common check needs no query.
    known: Mutex<std::collections::HashSet<OwnedRoomId>>,
    /// Events queued but not yet committed, by `user/device/transaction key`,
    /// so that a retransmitted request gets the same event.
    txns_in_flight: Mutex<HashMap<String, OwnedEventId>>,
    /// The federation sender, set once the services are built; new events go
    /// out through it to the other servers in the room.
    sender: std::sync::OnceLock<crate::federation::sender::Sender>,
    /// One backfill at a time per room, with when the last one that found
    /// nothing ended, for the history before the oldest event (`None`) and each gap.
    #[allow(clippy::type_complexity)]
    backfill_locks:
        Mutex<HashMap<OwnedRoomId, Arc<AsyncMutex<HashMap<Option<storage::backfill::Gap>, std::time::Instant>>>>>,
    /// Recent responses of other servers about spaces this server is not in.
    space_cache: remote_space::SpaceCache,
}

/// The device and transaction id of a request that appends an event, for
/// transaction-id idempotency.
/// The spec scopes a transaction id to one device and one request path, so
/// `scope` names the path without the transaction id, such as
/// `send/{roomId}/{eventType}`.
#[derive(Debug, Clone)]
pub struct TxnContext {
    pub device_id: String,
    pub txn_id: String,
    pub scope: String,
}

impl TxnContext {
    /// Returns the key that identifies a retransmission of the same request.
    fn key(&self) -> String {
        format!("{}/{}", self.scope, self.txn_id)
    }
}

impl Rooms {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        notifier: Arc<Notifier>,
        policy: Arc<dyn RoomPolicy>,
        push: Arc<Push>,
        default_version: RoomVersionId,
    ) -> Self {
        Self {
            db,
            server_name,
            key,
            notifier,
            policy,
            push,
            default_version,
            slots: Mutex::new(HashMap::new()),
            known: Mutex::new(std::collections::HashSet::new()),
            txns_in_flight: Mutex::new(HashMap::new()),
            sender: std::sync::OnceLock::new(),
            backfill_locks: Mutex::new(HashMap::new()),
            space_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Connects the federation sender, through which new events reach the
    /// other servers in their room.
    pub fn set_sender(&self, sender: crate::federation::sender::Sender) {
        let _ = self.sender.set(sender);
    }

    /// Queues committed events to every other server in the room. The
    /// servers are those of the room after the events plus, for a member
    /// event, the servers of the state before it, so that a leaving server
    /// learns of its own departure.
    async fn send_out(&self, before: &[ruma::OwnedServerName], after: &RoomState, pdus: &[Arc<Pdu>]) {
        let Some(sender) = self.sender.get() else { return };
        let mut servers = after.remote_servers(&self.server_name);
        for server in before {
            if *server != self.server_name && !servers.contains(server) {
                servers.push(server.clone());
            }
        }
        for pdu in pdus {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&pdu.json) else { continue };
            for server in &servers {
                if let Err(err) = sender.queue_pdu(server, &json).await {
                    tracing::warn!(error = %err, destination = %server, event_id = %pdu.event_id, "could not queue a PDU");
                }
            }
        }
    }

    /// Queues an EDU to every other server in `room`.
    pub async fn send_edu(&self, room: &RoomState, edu: &serde_json::Value) {
        let Some(sender) = self.sender.get() else { return };
        for server in room.remote_servers(&self.server_name) {
            if let Err(err) = sender.queue_edu(&server, edu).await {
                tracing::warn!(error = %err, destination = %server, "could not queue an EDU");
            }
        }
    }

    /// The federation service, for the requests that membership changes
    /// across servers make.
    fn federation(&self) -> Result<&crate::federation::Federation> {
        self.sender
            .get()
            .map(|sender| sender.federation())
            .ok_or_else(|| Error::internal("reaching another server", "the federation sender is not set"))
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn policy(&self) -> &dyn RoomPolicy {
        &*self.policy
    }

    fn slot(&self, room_id: &RoomId) -> RoomSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(room_id.to_owned()).or_default().clone()
    }

    /// Loads a room's state from the database.
    async fn load(&self, room_id: &RoomId) -> Result<RoomState> {
        let pool = &self.db.pool;
        let row = storage::rooms::get(pool, room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("room {room_id} is not known to this server")))?;
        let version = RoomVersionId::try_from(row.room_version.as_str())
            .map_err(|e| Error::internal("reading a room version", e))?;
        let rules = version::rules(&version)
            .ok_or_else(|| Error::internal("reading a room version", "unsupported version stored"))?;
        let mut room = RoomState::new(room_id.to_owned(), version, rules);

        let current = storage::state::current(pool, room_id.as_str()).await?;
        let ids: Vec<String> = current.values().cloned().collect();
        for event in storage::events::get_many(pool, &ids).await? {
            let pdu = event.pdu;
            if let Some(key) = &pdu.state_key {
                room.state.insert((StateEventType::from(pdu.kind.to_string()), key.clone()), pdu.clone());
            }
        }
        room.extremities = storage::state::extremities(pool, room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|id| OwnedEventId::try_from(id).ok())
            .collect();
        if let Some(latest) = storage::events::newest_in_room(pool, room_id).await? {
            room.depth = latest.pdu.depth;
            room.state_group = latest.state_group;
            room.chain_length = storage::state::chain_length(pool, latest.state_group).await?;
        }
        // The newest event may not have the highest depth after a redaction race; take the max.
        for id in &room.extremities {
            if let Some(pdu) = room.find_event(id) {
                room.depth = room.depth.max(pdu.depth);
            }
        }
        Ok(room)
    }

    /// A room's current state, loading it if needed. The value is a snapshot:
    /// later events replace the room's state instead of changing this one.
    pub async fn state(&self, room_id: &RoomId) -> Result<Arc<RoomState>> {
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(Arc::new(self.load(room_id).await?));
        }
        Ok(guard.as_ref().cloned().expect("room state was just loaded"))
    }

    /// Whether the room exists on this server.
    pub async fn exists(&self, room_id: &RoomId) -> Result<bool> {
        if self.known.lock().unwrap_or_else(|e| e.into_inner()).contains(room_id) {
            return Ok(true);
        }
        let exists = storage::rooms::get(&self.db.pool, room_id.as_str()).await?.is_some();
        if exists {
            self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(room_id.to_owned());
        }
        Ok(exists)
    }

    /// Appends one event that a local user sends, with the room lock held for the
    /// whole build-and-commit, and wakes the room's local members.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<TxnContext>,
    ) -> Result<OwnedEventId> {
        self.append_countersigned(room_id, sender, draft, txn, None).await
    }

    /// Appends one event like [`Rooms::append`]; with `remote_invitee`, the
    /// event is an invite of that user of another server, which that server
    /// countersigns before the event is stored (the room lock is held
    /// meanwhile, so that the invite stays on top of the room).
    async fn append_countersigned(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        draft: EventDraft,
        txn: Option<TxnContext>,
        remote_invitee: Option<&UserId>,
    ) -> Result<OwnedEventId> {
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;

        let txn_key = txn.as_ref().map(|t| format!("{sender}/{}/{}", t.device_id, t.key()));
        if let Some(key) = &txn_key
            && let Some(in_flight) = self.txns_in_flight.lock().unwrap_or_else(|e| e.into_inner()).get(key)
        {
            return Ok(in_flight.clone());
        }
        if let Some(txn) = &txn
            && let Some(existing) =
                storage::events::txn_event(&self.db.pool, sender.as_str(), &txn.device_id, &txn.key()).await?
        {
            return OwnedEventId::try_from(existing).map_err(|e| Error::internal("reading a transaction", e));
        }

        if guard.is_none() {
            *guard = Some(Arc::new(self.load(room_id).await?));
        }
        let current = guard.as_ref().expect("room state was just loaded");
        let mut next = RoomState::clone(current);
        let servers_before = current.servers();

        self.check_before_append(&next, sender, &draft).await?;
        let redaction = match &draft.redacts {
            Some(target) => self.prepare_redaction(&next, sender, target).await?,
            None => None,
        };

        let mut built =
            builder::build(&mut next, &self.server_name, &self.key, sender, draft, self.db.writer.positions())?;
        if let Some((target, redacted)) = redaction {
            if let Some(in_state) = next.find_event(&target).cloned() {
                let redacted_pdu = Pdu::from_json(target.clone(), &redacted, room_id)
                    .map_err(|e| Error::internal("redacting an event", e))?;
                let kind = StateEventType::from(in_state.kind.to_string());
                let key = in_state.state_key.clone().unwrap_or_default();
                next.state.insert((kind, key), Arc::new(redacted_pdu));
            }
            built.redaction = Some((target, redacted));
        }
        if let Some(invitee) = remote_invitee {
            let countersigned = Arc::new(self.countersign_invite(current, &built.pdu, invitee).await?);
            next.state.insert((StateEventType::RoomMember, invitee.to_string()), countersigned.clone());
            built.pdu = countersigned;
        }

        let event_id = built.pdu.event_id.clone();
        let outbound = built.pdu.clone();
        let wake_target = membership_target(&built);
        let push_actions = vec![self.push.evaluate(&next, &built.pdu).await?];
        let notifies = push_actions.iter().any(crate::storage::push::PushOutcome::notifies);
        let batch = Batch {
            room_id: room_id.to_string(),
            new_room: None,
            events: vec![built],
            push_actions,
            txn: txn.map(|t| TxnRecord { key: t.key(), device_id: t.device_id, txn_id: t.txn_id }),
            extremities: None,
            resolved: None,
            require_prev: true,
            edge_state: false,
            pending_redaction: None,
        };

        // The room's next event may be built on this one as soon as it is queued:
        // the writer commits in queue order, and an event whose predecessor failed
        // to commit fails too. So the room lock is released before the commit.
        let committed = self.db.writer.submit(move |w| Box::pin(persist::persist(w, batch))).await?;
        if let Some(key) = &txn_key {
            self.txns_in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), event_id.clone());
        }
        let audience = audience(&next, &self.server_name, wake_target);
        let next = Arc::new(next);
        *guard = Some(next.clone());
        drop(guard);

        let outcome = committed.await;
        if let Some(key) = &txn_key {
            self.txns_in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        }
        if let Err(err) = outcome {
            // The in-memory state contains an event that was not stored, so reload it.
            *slot.lock().await = None;
            return Err(err);
        }
        self.notifier.wake(audience.iter().map(|u| &**u));
        if notifies {
            self.push.new_actions.notify_one();
        }
        self.send_out(&servers_before, &next, &[outbound]).await;
        Ok(event_id)
    }

    /// Checks the policy for ordinary sends.
    async fn check_before_append(&self, room: &RoomState, sender: &UserId, draft: &EventDraft) -> Result<()> {
        if draft.kind != TimelineEventType::RoomMember {
            self.policy.check_send(room, sender, &draft.kind.to_string()).await?;
        }
        Ok(())
    }

    /// Checks that `sender` may redact `target` and returns its redacted form.
    async fn prepare_redaction(
        &self,
        room: &RoomState,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<Option<(OwnedEventId, String)>> {
        let Some(stored) = storage::events::get(&self.db.pool, target.as_str()).await? else {
            return Err(Error::not_found(format!("event {target} not found in this room")));
        };
        if stored.pdu.room_id != room.room_id {
            return Err(Error::not_found(format!("event {target} not found in this room")));
        }
        let own_event = stored.pdu.sender == sender;
        let may_redact_others = power::user_level(room, sender) >= power::action_level(room, "redact", 50);
        if !own_event && !may_redact_others {
            return Err(Error::forbidden("you need a higher power level to redact other users' events"));
        }
        if stored.redacted_by.is_some() {
            return Ok(None);
        }
        let object =
            stored.pdu.canonical_object().ok_or_else(|| Error::internal("redacting", "stored PDU is not an object"))?;
        let redacted = ruma::canonical_json::redact(object, &room.rules.redaction, None)
            .map_err(|e| Error::internal("redacting an event", e))?;
        let json = serde_json::to_string(&redacted).map_err(|e| Error::internal("redacting an event", e))?;
        Ok(Some((target.to_owned(), json)))
    }

    /// Persists a brand-new room with its initial events in one commit.
    async fn persist_new_room(&self, room: RoomState, events: Vec<BuiltEvent>, new_room: NewRoom) -> Result<()> {
        let room_id = room.room_id.clone();
        let slot = self.slot(&room_id);
        let mut guard = slot.lock().await;
        let mut push_actions = Vec::with_capacity(events.len());
        for event in &events {
            push_actions.push(self.push.evaluate(&room, &event.pdu).await?);
        }
        let notifies = push_actions.iter().any(crate::storage::push::PushOutcome::notifies);
        let batch = Batch {
            room_id: room_id.to_string(),
            new_room: Some(new_room),
            events,
            push_actions,
            txn: None,
            extremities: None,
            resolved: None,
            require_prev: true,
            edge_state: false,
            pending_redaction: None,
        };
        self.db.writer.write(move |w| Box::pin(persist::persist(w, batch))).await?;
        if notifies {
            self.push.new_actions.notify_one();
        }
        let audience = audience(&room, &self.server_name, None);
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(room_id.clone());
        *guard = Some(Arc::new(room));
        drop(guard);
        self.notifier.wake(audience.iter().map(|u| &**u));
        Ok(())
    }
}

/// The target of a membership event, who must learn of it even when it removes them.
fn membership_target(event: &BuiltEvent) -> Option<OwnedUserId> {
    if event.pdu.kind != TimelineEventType::RoomMember {
        return None;
    }
    event.pdu.state_key.as_deref().and_then(|key| UserId::parse(key).ok())
}

fn audience(room: &RoomState, server_name: &ruma::ServerName, extra: Option<OwnedUserId>) -> Vec<OwnedUserId> {
    let mut users = room.local_members(server_name);
    if let Some(user) = extra
        && user.server_name() == server_name
        && !users.contains(&user)
    {
        users.push(user);
    }
    users
}
