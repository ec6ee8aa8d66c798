//! Events in the client format, with the `unsigned` data a client expects:
//! `age`, `transaction_id` for the sending device, `prev_content` of state
//! events, `redacted_because` of redacted events, and, on the endpoints the
//! spec names, the bundled aggregations of child events (`m.relations`).

use std::collections::{HashMap, HashSet};

use ruma::UserId;
use serde_json::{Value, value::RawValue};

use super::{pdu::Unsigned, relations::Aggregations};
use crate::{
    error::{Error, Result},
    storage::{self, events::StoredEvent, now_ms},
};

/// The requesting device, so that its own sends carry their transaction id,
/// and the users its user ignores, whose events bundled aggregations leave out.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
    pub ignored: &'a HashSet<String>,
}

pub async fn client_events(
    pool: &sqlx::AnyPool,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
) -> Result<Vec<Box<RawValue>>> {
    serialize(pool, events, viewer, with_room_id, &HashMap::new()).await
}

/// Serializes events as [`client_events`] does, with the bundled aggregations
/// of their child events, as `/messages`, `/context`, `/event`, `/relations`,
/// `/threads` and limited `/sync` timelines serve them. The latest event of a
/// thread carries its own aggregations too.
pub async fn client_events_bundled(
    pool: &sqlx::AnyPool,
    events: &[StoredEvent],
    viewer: Viewer<'_>,
    with_room_id: bool,
) -> Result<Vec<Box<RawValue>>> {
    let aggregations = super::relations::aggregate(pool, events, viewer).await?;
    let latest: Vec<StoredEvent> =
        aggregations.values().filter_map(|a| a.thread.as_ref().map(|t| t.latest.clone())).collect();
    let latest_json = if latest.is_empty() {
        HashMap::new()
    } else {
        let latest_aggregations = super::relations::aggregate(pool, &latest, viewer).await?;
        let latest_relations = relations_json(pool, latest_aggregations, &HashMap::new(), viewer, with_room_id).await?;
        let serialized = serialize(pool, &latest, Some(viewer), with_room_id, &latest_relations).await?;
        latest.iter().map(|e| e.pdu.event_id.to_string()).zip(serialized).collect()
    };
    let relations = relations_json(pool, aggregations, &latest_json, viewer, with_room_id).await?;
    serialize(pool, events, Some(viewer), with_room_id, &relations).await
}

/// Builds the `m.relations` object of each parent from its aggregations,
/// with thread latest events already serialized in `latest_json`.
async fn relations_json(
    pool: &sqlx::AnyPool,
    aggregations: HashMap<String, Aggregations>,
    latest_json: &HashMap<String, Box<RawValue>>,
    viewer: Viewer<'_>,
    with_room_id: bool,
) -> Result<HashMap<String, Box<RawValue>>> {
    let edits: Vec<StoredEvent> = aggregations.values().filter_map(|a| a.replace.clone()).collect();
    let edits_json: HashMap<String, Box<RawValue>> = if edits.is_empty() {
        HashMap::new()
    } else {
        let serialized = serialize(pool, &edits, Some(viewer), with_room_id, &HashMap::new()).await?;
        edits.iter().map(|e| e.pdu.event_id.to_string()).zip(serialized).collect()
    };
    let mut output = HashMap::with_capacity(aggregations.len());
    for (parent, aggregation) in aggregations {
        let mut relations = serde_json::Map::new();
        if let Some(edit) = aggregation.replace.as_ref().and_then(|e| edits_json.get(e.pdu.event_id.as_str())) {
            relations.insert("m.replace".into(), to_value(edit)?);
        }
        if let Some(thread) = &aggregation.thread
            && let Some(latest) = latest_json.get(thread.latest.pdu.event_id.as_str())
        {
            relations.insert(
                "m.thread".into(),
                serde_json::json!({
                    "latest_event": to_value(latest)?,
                    "count": thread.count,
                    "current_user_participated": thread.current_user_participated,
                }),
            );
        }
        if !aggregation.references.is_empty() {
            let chunk: Vec<Value> =
                aggregation.references.iter().map(|id| serde_json::json!({ "event_id": id })).collect();
            relations.insert("m.reference".into(), serde_json::json!({ "chunk": chunk }));
        }
        if relations.is_empty() {
            continue;
        }
        let raw = serde_json::to_string(&relations).map_err(|e| Error::internal("serializing aggregations", e))?;
        let raw = RawValue::from_string(raw).map_err(|e| Error::internal("serializing aggregations", e))?;
        output.insert(parent, raw);
    }
    Ok(output)
}

fn to_value(raw: &RawValue) -> Result<Value> {
    serde_json::from_str(raw.get()).map_err(|e| Error::internal("serializing aggregations", e))
}

async fn serialize(
    pool: &sqlx::AnyPool,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
    relations: &HashMap<String, Box<RawValue>>,
) -> Result<Vec<Box<RawValue>>> {
    let mut related: Vec<String> = Vec::new();
    for event in events {
        if let Some(prev) = &event.replaces_state {
            related.push(prev.clone());
        }
        if let Some(by) = &event.redacted_by {
            related.push(by.clone());
        }
    }
    let related: HashMap<String, StoredEvent> = if related.is_empty() {
        HashMap::new()
    } else {
        storage::events::get_many(pool, &related).await?.into_iter().map(|e| (e.pdu.event_id.to_string(), e)).collect()
    };

    let now = now_ms();
    let mut output = Vec::with_capacity(events.len());
    for event in events {
        let pdu = &event.pdu;
        let mut unsigned = Unsigned { age: Some(now - i64::from(pdu.origin_server_ts.get())), ..Unsigned::default() };
        if let (Some(viewer), Some((txn_id, device))) = (viewer, &event.txn)
            && pdu.sender == viewer.user_id
            && device == viewer.device_id
        {
            unsigned.transaction_id = Some(txn_id.clone());
        }
        if let Some(prev) = event.replaces_state.as_ref().and_then(|id| related.get(id)) {
            unsigned.prev_content = Some(prev.pdu.content.clone());
            unsigned.replaces_state = Some(prev.pdu.event_id.to_string());
        }
        if let Some(by) = event.redacted_by.as_ref().and_then(|id| related.get(id)) {
            let because = by.pdu.to_client(true, Unsigned::default());
            let raw = serde_json::to_string(&because).map_err(|e| Error::internal("serializing an event", e))?;
            unsigned.redacted_because = RawValue::from_string(raw).ok();
        }
        unsigned.relations = relations.get(pdu.event_id.as_str()).cloned();
        let client = pdu.to_client(with_room_id, unsigned);
        let json = serde_json::to_string(&client).map_err(|e| Error::internal("serializing an event", e))?;
        output.push(RawValue::from_string(json).map_err(|e| Error::internal("serializing an event", e))?);
    }
    Ok(output)
}

/// A state event in the stripped form of invite state.
pub fn stripped(pdu: &super::pdu::Pdu) -> Value {
    serde_json::json!({
        "content": pdu.content,
        "sender": pdu.sender,
        "state_key": pdu.state_key,
        "type": pdu.kind.to_string(),
    })
}
