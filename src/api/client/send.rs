//! Sending events and redactions (spec: Client-Server API, "Sending events to
//! a room" and "Redactions"). A repeated transaction id from the same device
//! returns the event of the first request.

use std::sync::Arc;

use axum::{
    Json,
    extract::{RawQuery, State},
};
use ruma::{EventId, events::TimelineEventType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rooms::{joined_room, parse_room_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path, massaged_timestamp},
    error::{Error, Result},
    rooms::{TxnContext, builder::EventDraft},
};

fn check_txn_id(txn_id: &str) -> Result<()> {
    if txn_id.is_empty() || txn_id.len() > 255 {
        return Err(Error::invalid_param("txnId must be between 1 and 255 bytes"));
    }
    Ok(())
}

/// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
pub async fn send(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, kind, txn_id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    check_txn_id(&txn_id)?;
    if kind.is_empty() || kind.len() > 255 {
        return Err(Error::invalid_param("eventType must be between 1 and 255 bytes"));
    }
    if kind == "m.room.redaction" {
        return Err(Error::bad_json("use the /redact endpoint to send redactions"));
    }
    services.check_user_rate_limit(&session.user_id)?;
    joined_room(&services, &room_id, &session.user_id).await?;
    let mut draft = EventDraft::message(TimelineEventType::from(kind.as_str()), Value::Object(content));
    draft.timestamp = massaged_timestamp(&session, query.as_deref())?;
    let scope = format!("send/{room_id}/{kind}");
    let txn = TxnContext { device_id: session.device_id.clone(), txn_id, scope };
    let event_id = services.rooms.append(&room_id, &session.user_id, draft, Some(txn)).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

/// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
pub async fn redact(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, event_id, txn_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<RedactBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    check_txn_id(&txn_id)?;
    let target = EventId::parse(&event_id)
        .map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    joined_room(&services, &room_id, &session.user_id).await?;
    let room = services.rooms.state(&room_id).await?;
    let mut content = json!({});
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    if room.rules.redaction.content_field_redacts {
        content["redacts"] = json!(target);
    }
    let scope = format!("redact/{room_id}/{target}");
    let draft = EventDraft {
        kind: TimelineEventType::RoomRedaction,
        state_key: None,
        content,
        redacts: Some(target),
        timestamp: None,
    };
    let txn = TxnContext { device_id: session.device_id.clone(), txn_id, scope };
    let event_id = services.rooms.append(&room_id, &session.user_id, draft, Some(txn)).await?;
    Ok(Json(json!({ "event_id": event_id })))
}
