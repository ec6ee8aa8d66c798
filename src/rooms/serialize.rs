//! Events in the client format, with the `unsigned` data a client expects:
//! `age`, `transaction_id` for the sending device, `prev_content` of state
//! events, and `redacted_because` of redacted events.

use std::collections::HashMap;

use ruma::UserId;
use serde_json::{Value, value::RawValue};

use super::pdu::Unsigned;
use crate::{
    error::{Error, Result},
    storage::{self, events::StoredEvent, now_ms},
};

/// The requesting device, so that its own sends carry their transaction id.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
}

pub async fn client_events(
    pool: &sqlx::AnyPool,
    events: &[StoredEvent],
    viewer: Option<Viewer<'_>>,
    with_room_id: bool,
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
