//! Persisting built events in one write job: the event rows, their state
//! groups, current state, memberships, the connections index, forward
//! extremities and redactions.

use std::sync::Arc;

use super::{
    builder::{BuiltEvent, StateChange},
    pdu::Pdu,
    redaction,
};
use crate::{
    error::Result,
    storage::{self, WriteTxn, push::PushOutcome, redactions::PendingRedaction, writer::Stream},
};

/// A room row to create together with the room's first events.
pub struct NewRoom {
    pub version: String,
    pub creator: String,
    pub is_public: bool,
    pub alias: Option<String>,
}

pub struct Batch {
    pub room_id: String,
    pub new_room: Option<NewRoom>,
    pub events: Vec<BuiltEvent>,
    /// The push rule outcome of each event in `events` (same index), without
    /// stream positions, which are assigned here.
    pub push_actions: Vec<PushOutcome>,
    /// The request that sent the last event.
    pub txn: Option<TxnRecord>,
    /// The room's forward extremities after the batch; `None` for local
    /// events, which form a single chain ending in the batch's last event.
    pub extremities: Option<Vec<String>>,
    /// Whether each event's first previous event must already be stored.
    /// False for the state of a room that this server joins through
    /// another server, whose earlier events it does not have.
    pub require_prev: bool,
    /// For received events: how the room's current state changes, which
    /// state resolution decides, instead of each state event of the batch
    /// replacing its entry.
    pub resolved: Option<ResolvedState>,
    /// Whether every event but the last is the room's state before the last
    /// one, which is the first event of a room joined through another
    /// server. That state goes to the edge state positions (see
    /// `storage::backfill`), below any history backfilled later, and its
    /// memberships count from the join.
    pub edge_state: bool,
    /// A received redaction of an event this server has not stored yet,
    /// kept until the event is.
    pub pending_redaction: Option<PendingRedaction>,
}

/// The current state of a room after received events, as a change against
/// the stored current state.
pub struct ResolvedState {
    /// A state group for the resolved state, when no event's group holds it.
    pub snapshot: Option<(i64, Vec<((String, String), String)>)>,
    /// The entries that change: the new event, or `None` for a removed entry.
    pub changes: Vec<((String, String), Option<Arc<Pdu>>)>,
}

/// A client request's transaction id, stored with the event it sent (whose
/// sender is the requesting user).
pub struct TxnRecord {
    pub device_id: String,
    /// The transaction id as the client sent it, for `unsigned.transaction_id`.
    pub txn_id: String,
    /// The transaction id scoped to its request path, for spotting retransmissions.
    pub key: String,
}

pub async fn persist(txn: &mut WriteTxn, mut batch: Batch) -> Result<()> {
    let now = storage::now_ms();
    if let Some(room) = &batch.new_room {
        storage::rooms::insert(&mut txn.conn, &batch.room_id, &room.version, &room.creator, room.is_public, now)
            .await?;
        if let Some(alias) = &room.alias {
            storage::rooms::insert_alias_in_txn(&mut txn.conn, alias, &batch.room_id, &room.creator, now).await?;
        }
    }

    let last = batch.events.len().saturating_sub(1);
    let remote = batch.resolved.is_some();
    // Only events of other servers can be the target of a pending
    // redaction: a local event's id is unknown elsewhere before it is sent.
    let from_elsewhere = remote || !batch.require_prev;
    let mut last_stream = 0;
    let mut push_outcomes = std::mem::take(&mut batch.push_actions).into_iter();
    let edge_count = if batch.edge_state { last } else { 0 };
    let (join_stream, mut edge_position) = if edge_count > 0 {
        (Some(txn.next_position(Stream::Events)), storage::backfill::next_edge_position(&mut txn.conn).await?)
    } else {
        (None, 0)
    };
    for (index, event) in batch.events.iter().enumerate() {
        let pdu = &event.pdu;
        insert_state_group(txn, &batch.room_id, event).await?;

        let stream = match join_stream {
            Some(_) if index < edge_count => {
                edge_position += 1;
                edge_position - 1
            }
            Some(join) => join,
            None => txn.next_position(Stream::Events),
        };
        last_stream = stream;
        let membership_stream = join_stream.unwrap_or(stream);
        let txn_ids = if index == last { batch.txn.as_ref() } else { None };
        storage::events::insert(
            &mut txn.conn,
            storage::events::NewEvent {
                pdu,
                stream,
                state_group: event.state_group,
                // A received event's predecessors may be outliers; the room
                // lock is held until it commits, so nothing builds on it early.
                require_prev: pdu.prev_events.first().map(|id| id.as_str()).filter(|_| batch.require_prev && !remote),
                replaces_state: event.replaces_state.as_ref().map(|id| id.as_str()),
                txn: txn_ids.map(|t| (t.txn_id.as_str(), t.device_id.as_str(), t.key.as_str())),
            },
        )
        .await?;

        index_message(txn, &batch.room_id, pdu, stream).await?;

        // Queued for the writer, which inserts the outcomes of the whole group
        // commit together before it commits.
        if let Some(outcome) = push_outcomes.next() {
            txn.push_outcomes.add(outcome, stream);
        }
        if from_elsewhere {
            redaction::apply_pending(txn, pdu).await?;
        }

        if let Some(state_key) = pdu.state_key.as_ref().filter(|_| !remote) {
            let kind = pdu.kind.to_string();
            storage::state::set_current(&mut txn.conn, &batch.room_id, &kind, state_key, pdu.event_id.as_str()).await?;
            if let Some(membership) = pdu.membership() {
                storage::rooms::set_membership(
                    &mut txn.conn,
                    &batch.room_id,
                    state_key,
                    &membership,
                    pdu.event_id.as_str(),
                    membership_stream,
                )
                .await?;
                index_connection(txn, &batch.room_id, pdu, state_key, &membership).await?;
                if matches!(membership.as_str(), "leave" | "ban") {
                    // A user of another server who leaves a room may leave the last
                    // room shared with this server, after which its server sends no
                    // more device-list updates: the cached list could go stale, so
                    // it is dropped and fetched again when needed.
                    storage::e2ee_federation::drop_remote_list(&mut txn.conn, state_key).await?;
                }
            }
        }

        if let Some((target, redacted_json)) = &event.redaction {
            storage::events::redact(&mut txn.conn, target.as_str(), redacted_json, pdu.event_id.as_str()).await?;
            // A redacted message no longer counts as unread or appears in
            // `/notifications`. Its outcome may still be queued in this batch.
            txn.insert_push_outcomes().await?;
            storage::push::delete_actions_of_event(&mut txn.conn, target.as_str()).await?;
        }
    }
    if let Some(resolved) = &batch.resolved {
        if let Some((group, entries)) = &resolved.snapshot {
            storage::state::insert_group(&mut txn.conn, *group, &batch.room_id, None, 0, entries).await?;
        }
        for ((kind, state_key), pdu) in &resolved.changes {
            let Some(pdu) = pdu else {
                storage::state::delete_current(&mut txn.conn, &batch.room_id, kind, state_key).await?;
                continue;
            };
            storage::state::set_current(&mut txn.conn, &batch.room_id, kind, state_key, pdu.event_id.as_str()).await?;
            if let Some(membership) = pdu.membership() {
                storage::rooms::set_membership(
                    &mut txn.conn,
                    &batch.room_id,
                    state_key,
                    &membership,
                    pdu.event_id.as_str(),
                    last_stream,
                )
                .await?;
                index_connection(txn, &batch.room_id, pdu, state_key, &membership).await?;
            }
        }
    }
    if let Some(pending) = &batch.pending_redaction {
        storage::redactions::insert(&mut txn.conn, pending).await?;
        redaction::redact_stored_outlier(txn, pending).await?;
    }
    if let Some(extremities) = &batch.extremities {
        storage::state::set_extremities(&mut txn.conn, &batch.room_id, extremities).await?;
    } else if let Some(last) = batch.events.last() {
        // Local events form a single chain, so the newest event is the only extremity.
        storage::state::set_extremities(&mut txn.conn, &batch.room_id, &[last.pdu.event_id.to_string()]).await?;
    }
    Ok(())
}

/// Keeps the metrics' part of the connections index in step with a message,
/// in the same transaction. Other events leave it alone.
pub(super) async fn index_message(txn: &mut WriteTxn, room_id: &str, pdu: &super::pdu::Pdu, stream: i64) -> Result<()> {
    let kind = pdu.kind.to_string();
    if !storage::connections::MESSAGE_EVENT_TYPES.contains(&kind.as_str()) {
        return Ok(());
    }
    let ts = i64::from(pdu.origin_server_ts.get());
    storage::connections::apply_message_event(&mut txn.conn, room_id, pdu.sender.as_str(), stream, ts).await?;
    Ok(())
}

pub(super) async fn insert_state_group(txn: &mut WriteTxn, room_id: &str, event: &BuiltEvent) -> Result<()> {
    let pdu = &event.pdu;
    match &event.state_change {
        StateChange::None => {}
        StateChange::Delta { group, prev } => {
            let key = (pdu.kind.to_string(), pdu.state_key.clone().unwrap_or_default());
            let entry = [(key, pdu.event_id.to_string())];
            storage::state::insert_group(&mut txn.conn, *group, room_id, Some(*prev), event.chain_length, &entry)
                .await?;
        }
        StateChange::Snapshot { group, entries } => {
            storage::state::insert_group(&mut txn.conn, *group, room_id, None, 0, entries).await?;
        }
    }
    Ok(())
}

/// Stores events outside the timeline (fetched state and auth events, and
/// soft-failed events) with the state groups of the state after them.
pub async fn persist_outliers(txn: &mut WriteTxn, room_id: String, events: Vec<(BuiltEvent, bool)>) -> Result<()> {
    for (event, soft_failed) in &events {
        insert_state_group(txn, &room_id, event).await?;
        let pdu = redaction::outlier_form(txn, &event.pdu).await?;
        storage::outliers::insert(&mut txn.conn, &pdu, event.state_group, *soft_failed).await?;
    }
    Ok(())
}

/// Keeps the connections index in step with a member event, in the same transaction.
async fn index_connection(
    txn: &mut WriteTxn,
    room_id: &str,
    pdu: &super::pdu::Pdu,
    state_key: &str,
    membership: &str,
) -> Result<()> {
    let content = pdu.content_value();
    let event = storage::connections::MemberEvent {
        sender: pdu.sender.as_str(),
        target: state_key,
        membership,
        is_direct: content["is_direct"].as_bool().unwrap_or(false),
        reason: content["reason"].as_str(),
        origin_server_ts: i64::from(pdu.origin_server_ts.get()),
    };
    storage::connections::apply_member_event(&mut txn.conn, room_id, &event).await?;
    Ok(())
}
