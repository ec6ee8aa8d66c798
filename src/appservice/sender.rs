//! Pushes events to application services (spec: Application Service API,
//! "Pushing events").
//!
//! One task per registration with a `url` reads the event stream after the
//! position stored in `appservice_streams`, keeps the events the application
//! service is interested in, stores them as the pending transaction together
//! with the new positions, and then sends that transaction until it is
//! acknowledged. So transactions go out in stream order, one at a time; a retry
//! resends the stored body under the same id, also after a restart; and an
//! event is never put into two transactions. Senders of messages never wait for
//! this task.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use ruma::{OwnedRoomId, RoomId, UserId, events::StateEventType};
use serde_json::{Value, json, value::RawValue};
use tokio::sync::watch;

use super::Registration;
use crate::{
    Services,
    ephemeral::receipts::PRIVATE,
    error::Result,
    rooms::serialize,
    storage::{self, appservice::StreamState, events::StoredEvent, writer::Stream},
};

/// Maximum number of events, and separately of ephemeral events, in one transaction.
const MAX_EVENTS: i64 = 100;
/// First wait before resending a failed transaction; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait for new data without a wake-up, which covers writes of other
/// processes sharing a PostgreSQL database and expired typing notifications.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Starts one sender task per registration that has a `url`.
pub fn spawn(services: &Arc<Services>, stop: &watch::Receiver<bool>) {
    for registration in services.appservices.iter() {
        if registration.url.is_none() {
            tracing::info!(appservice = %registration.id, "application service has no url; no transactions are sent");
            continue;
        }
        tokio::spawn(run(services.clone(), registration.clone(), stop.clone()));
    }
}

/// Waits `duration`, or returns `false` as soon as the server stops.
async fn sleep_unless_stopped(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

#[tracing::instrument(skip_all, fields(appservice = %registration.id))]
async fn run(services: Arc<Services>, registration: Arc<Registration>, mut stop: watch::Receiver<bool>) {
    let mut state = loop {
        match load_or_start(&services, &registration).await {
            Ok(state) => break state,
            Err(err) => {
                tracing::warn!(error = %err, "could not load the application service stream position; retrying");
                if !sleep_unless_stopped(IDLE_POLL, &mut stop).await {
                    return;
                }
            }
        }
    };
    tracing::info!(
        event_stream = state.event_stream,
        pending = state.pending.is_some(),
        "application service sender started"
    );
    let mut typing_serial = services.typing.current_serial();
    let mut backoff = MIN_BACKOFF;

    loop {
        if *stop.borrow() {
            return;
        }
        if let Some((txn_id, body)) = state.pending.clone() {
            match services.appservice_client.push_transaction(&registration, txn_id, &body).await {
                Ok(()) => {
                    if backoff > MIN_BACKOFF {
                        tracing::info!(txn_id, "application service is reachable again");
                    }
                    backoff = MIN_BACKOFF;
                    let id = registration.id.clone();
                    let acknowledged = services
                        .db
                        .writer
                        .write(move |w| {
                            Box::pin(
                                async move { Ok(storage::appservice::acknowledge(&mut w.conn, &id, txn_id).await?) },
                            )
                        })
                        .await;
                    match acknowledged {
                        Ok(()) => state.pending = None,
                        // The transaction is sent again under the same id, which the spec allows.
                        Err(err) => {
                            tracing::warn!(txn_id, error = %err, "could not record an acknowledged transaction")
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(txn_id, error = %err, retry_in_ms = backoff.as_millis() as u64, "application service transaction failed");
                    if !sleep_unless_stopped(backoff, &mut stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        }

        // Register for wake-ups before reading, so that no change is missed in between.
        let notified = services.notifier.changes().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match next_transaction(&services, &registration, &mut state, &mut typing_serial).await {
            Ok(true) => continue,
            Ok(false) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not prepare an application service transaction");
                if !sleep_unless_stopped(IDLE_POLL, &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Loads the stored state, or starts a new registration at the current
/// positions: an application service gets what happens after it is added.
async fn load_or_start(services: &Services, registration: &Registration) -> Result<StreamState> {
    if let Some(state) = storage::appservice::get(&services.db.pool, &registration.id).await? {
        return Ok(state);
    }
    let positions = services.db.writer.positions();
    let state = StreamState {
        event_stream: positions.current(Stream::Events),
        receipt_stream: positions.current(Stream::Receipts),
        presence_stream: positions.current(Stream::Presence),
        last_txn_id: 0,
        pending: None,
    };
    let id = registration.id.clone();
    let stored = state.clone();
    services
        .db
        .writer
        .write(move |w| Box::pin(async move { Ok(storage::appservice::put(&mut w.conn, &id, &stored).await?) }))
        .await?;
    Ok(state)
}

/// Reads what happened after `state`, and stores the next transaction when
/// there is something to send. Returns whether a transaction was stored or more
/// of the stream is waiting to be read.
async fn next_transaction(
    services: &Services,
    registration: &Registration,
    state: &mut StreamState,
    typing_serial: &mut i64,
) -> Result<bool> {
    let pool = &services.db.pool;
    let positions = services.db.writer.positions();
    let mut next = state.clone();
    let mut interest = Interest::new(services, registration);

    let events_upto = positions.current(Stream::Events);
    let mut more_waiting = false;
    let mut selected: Vec<StoredEvent> = Vec::new();
    if events_upto > state.event_stream {
        let events = storage::appservice::events_between(pool, state.event_stream, events_upto, MAX_EVENTS).await?;
        more_waiting = events.len() as i64 == MAX_EVENTS;
        next.event_stream = match (more_waiting, events.last()) {
            (true, Some(last)) => last.stream,
            _ => events_upto,
        };
        for event in events {
            if interest.event(&event).await? {
                selected.push(event);
            }
        }
    }

    let mut ephemeral: Vec<Value> = Vec::new();
    let receipts_upto = positions.current(Stream::Receipts);
    let presence_upto = positions.current(Stream::Presence);
    let serial = services.typing.current_serial();
    if registration.receive_ephemeral {
        ephemeral.extend(typing(services, &mut interest, *typing_serial).await?);
        if receipts_upto > state.receipt_stream {
            ephemeral.extend(receipts(services, &mut interest, state.receipt_stream, receipts_upto).await?);
        }
        if presence_upto > state.presence_stream {
            ephemeral.extend(presence(services, &mut interest, state.presence_stream, presence_upto).await?);
        }
    }
    next.receipt_stream = receipts_upto;
    next.presence_stream = presence_upto;
    *typing_serial = serial;

    if selected.is_empty() && ephemeral.is_empty() {
        // Nothing to send: the positions move in memory only, and a restart
        // reads those events again and finds nothing to send again.
        *state = next;
        return Ok(more_waiting);
    }

    let events: Vec<Box<RawValue>> = serialize::client_events(pool, &selected, None, true).await?;
    let mut body = json!({ "events": events });
    if !ephemeral.is_empty() {
        body["ephemeral"] = Value::Array(ephemeral);
    }
    next.last_txn_id += 1;
    next.pending = Some((next.last_txn_id, body.to_string()));

    let id = registration.id.clone();
    let stored = next.clone();
    services
        .db
        .writer
        .write(move |w| Box::pin(async move { Ok(storage::appservice::put(&mut w.conn, &id, &stored).await?) }))
        .await?;
    tracing::debug!(txn_id = next.last_txn_id, events = selected.len(), "stored an application service transaction");
    *state = next;
    Ok(true)
}

/// Decides which rooms and events an application service is interested in,
/// caching each room's answer for one transaction.
struct Interest<'a> {
    services: &'a Services,
    registration: &'a Registration,
    rooms: HashMap<OwnedRoomId, bool>,
}

impl<'a> Interest<'a> {
    fn new(services: &'a Services, registration: &'a Registration) -> Self {
        Self { services, registration, rooms: HashMap::new() }
    }

    /// An event is of interest when its sender or, for a member event, its
    /// target is covered, or when its room is.
    async fn event(&mut self, event: &StoredEvent) -> Result<bool> {
        let pdu = &event.pdu;
        if self.registration.covers_user(&pdu.sender) {
            return Ok(true);
        }
        if pdu.kind.to_string() == "m.room.member"
            && let Some(target) = pdu.state_key.as_deref().and_then(|key| UserId::parse(key).ok())
            && self.registration.covers_user(&target)
        {
            return Ok(true);
        }
        self.room(&pdu.room_id).await
    }

    /// A room is of interest when its id or one of its aliases is in a
    /// namespace, or a covered user has joined it.
    async fn room(&mut self, room_id: &RoomId) -> Result<bool> {
        if let Some(known) = self.rooms.get(room_id) {
            return Ok(*known);
        }
        let interested = self.room_uncached(room_id).await?;
        self.rooms.insert(room_id.to_owned(), interested);
        Ok(interested)
    }

    async fn room_uncached(&self, room_id: &RoomId) -> Result<bool> {
        if self.registration.covers_room(room_id.as_str()) {
            return Ok(true);
        }
        let room = match self.services.rooms.state(room_id).await {
            Ok(room) => room,
            Err(err) if err.kind == crate::error::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        let member_covered = room.state.iter().any(|((kind, key), pdu)| {
            *kind == StateEventType::RoomMember
                && pdu.membership().as_deref() == Some("join")
                && UserId::parse(key.as_str()).is_ok_and(|user| self.registration.covers_user(&user))
        });
        if member_covered {
            return Ok(true);
        }
        if self.registration.aliases.is_empty() {
            return Ok(false);
        }
        let aliases = storage::rooms::room_aliases(&self.services.db.pool, room_id.as_str()).await?;
        Ok(aliases.iter().any(|alias| self.registration.covers_alias(alias)))
    }

    /// Whether a user is covered or has joined a room of interest.
    async fn user(&mut self, user_id: &str) -> Result<bool> {
        if UserId::parse(user_id).is_ok_and(|user| self.registration.covers_user(&user)) {
            return Ok(true);
        }
        for room_id in storage::rooms::joined_rooms(&self.services.db.pool, user_id).await? {
            if let Ok(room_id) = RoomId::parse(&room_id)
                && self.room(&room_id).await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// `m.typing` of the rooms of interest whose typing lists changed after `since`.
async fn typing(services: &Services, interest: &mut Interest<'_>, since: i64) -> Result<Vec<Value>> {
    let mut output = Vec::new();
    for (room_id, users) in services.typing.changed_rooms_since(since) {
        if interest.room(&room_id).await? {
            output.push(json!({ "type": "m.typing", "room_id": room_id, "content": { "user_ids": users } }));
        }
    }
    Ok(output)
}

/// The content of an `m.receipt` event: event id, receipt type, user id, receipt.
type ReceiptContent = BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>;

/// `m.receipt` of the rooms of interest. Private receipts go only to the
/// application service whose namespace covers their owner.
async fn receipts(services: &Services, interest: &mut Interest<'_>, since: i64, upto: i64) -> Result<Vec<Value>> {
    let rows = storage::appservice::receipts_between(&services.db.pool, since, upto).await?;
    let mut by_room: BTreeMap<String, ReceiptContent> = BTreeMap::new();
    for row in rows {
        let Ok(room_id) = RoomId::parse(&row.room_id) else {
            continue;
        };
        if !interest.room(&room_id).await? {
            continue;
        }
        if row.receipt_type == PRIVATE
            && !UserId::parse(&row.user_id).is_ok_and(|user| interest.registration.covers_user(&user))
        {
            continue;
        }
        let mut receipt = json!({ "ts": row.ts });
        if !row.thread_id.is_empty() {
            receipt["thread_id"] = json!(row.thread_id);
        }
        by_room
            .entry(row.room_id)
            .or_default()
            .entry(row.event_id)
            .or_default()
            .entry(row.receipt_type)
            .or_default()
            .insert(row.user_id, receipt);
    }
    Ok(by_room
        .into_iter()
        .map(|(room_id, content)| json!({ "type": "m.receipt", "room_id": room_id, "content": content }))
        .collect())
}

/// `m.presence` of covered users and of users who share a room of interest.
async fn presence(services: &Services, interest: &mut Interest<'_>, since: i64, upto: i64) -> Result<Vec<Value>> {
    let rows = storage::appservice::presence_between(&services.db.pool, since, upto).await?;
    let now = storage::now_ms();
    let mut output = Vec::new();
    for row in rows {
        if !interest.user(&row.user_id).await? {
            continue;
        }
        let mut content = json!({
            "presence": row.state,
            "last_active_ago": (now - row.last_active_ts).max(0),
            "currently_active": row.state == "online",
        });
        if let Some(message) = row.status_msg {
            content["status_msg"] = json!(message);
        }
        output.push(json!({ "type": "m.presence", "sender": row.user_id, "content": content }));
    }
    Ok(output)
}
