//! Room state (spec: Client-Server API, "Getting events for a room" and
//! "Sending events to a room").

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{RawQuery, State},
};
use ruma::{MilliSecondsSinceUnixEpoch, RoomId, UserId, events::TimelineEventType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rooms::parse_room_id;
use crate::{
    Services,
    api::{Auth, JsonBody, Path, Query, massaged_timestamp},
    error::{Error, Result},
    rooms::{builder::EventDraft, serialize::client_events},
    storage::{self, events::StoredEvent},
};

/// The state a user may read: the current state while joined, the state at
/// their leave or ban after that.
async fn readable_state(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
) -> Result<HashMap<(String, String), String>> {
    let pool = &services.db.pool;
    let forbidden = || Error::forbidden(format!("you are not a member of room {room_id}"));
    let membership = storage::rooms::membership(pool, room_id.as_str(), user.as_str()).await?.ok_or_else(forbidden)?;
    match membership.membership.as_str() {
        "join" => Ok(storage::state::current(pool, room_id.as_str()).await?),
        "leave" | "ban" => {
            let event = storage::events::get(pool, &membership.event_id).await?.ok_or_else(forbidden)?;
            // Someone who was only invited and then left never saw the room's state.
            let visibility = crate::rooms::visibility::Visibility::load(pool, room_id, user).await?;
            if !visibility.can_see(event.stream) {
                return Err(forbidden());
            }
            Ok(storage::state::load_group(pool, event.state_group).await?)
        }
        _ => Err(forbidden()),
    }
}

/// GET /_matrix/client/v3/rooms/{roomId}/state
pub async fn all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let state = readable_state(&services, &room_id, &session.user_id).await?;
    let ids: Vec<String> = state.into_values().collect();
    let mut events: Vec<StoredEvent> = storage::events::get_many(&services.db.pool, &ids).await?;
    events.sort_by_key(|e| e.stream);
    Ok(Json(json!(client_events(&services.db.pool, &events, None, true).await?)))
}

#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

async fn get_state_event(
    services: &Services,
    user: &UserId,
    room_id: &str,
    kind: &str,
    state_key: &str,
    format: Option<&str>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let state = readable_state(services, &room_id, user).await?;
    let not_found =
        || Error::not_found(format!("no {kind} state event with state key {state_key:?} in room {room_id}"));
    let event_id = state.get(&(kind.to_owned(), state_key.to_owned())).ok_or_else(not_found)?;
    let event = storage::events::get(&services.db.pool, event_id).await?.ok_or_else(not_found)?;
    if format == Some("event") {
        let mut events = client_events(&services.db.pool, std::slice::from_ref(&event), None, true).await?;
        return Ok(Json(json!(events.pop())));
    }
    Ok(Json(event.pdu.content_value()))
}

/// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
pub async fn get(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, kind, state_key)): Path<(String, String, String)>,
    Query(query): Query<FormatQuery>,
) -> Result<Json<Value>> {
    get_state_event(&services, &session.user_id, &room_id, &kind, &state_key, query.format.as_deref()).await
}

/// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}
pub async fn get_empty_key(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, kind)): Path<(String, String)>,
    Query(query): Query<FormatQuery>,
) -> Result<Json<Value>> {
    get_state_event(&services, &session.user_id, &room_id, &kind, "", query.format.as_deref()).await
}

async fn put_state_event(
    services: &Services,
    user: &UserId,
    room_id: &str,
    kind: &str,
    state_key: &str,
    content: Map<String, Value>,
    timestamp: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    super::rooms::joined_room(services, &room_id, user).await?;
    let content = Value::Object(content);
    validate_state_content(kind, &content)?;
    let mut draft = EventDraft::state(TimelineEventType::from(kind), state_key, content);
    draft.timestamp = timestamp;
    let event_id = services.rooms.append(&room_id, user, draft, None).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// Checks the content of well-known state events, so that a client cannot store
/// state that other clients fail to read.
fn validate_state_content(kind: &str, content: &Value) -> Result<()> {
    let string_field = |field: &str| -> Result<()> {
        match content.get(field) {
            Some(Value::String(_)) => Ok(()),
            Some(_) => Err(Error::bad_json(format!("{kind} content field {field} must be a string"))),
            None => Err(Error::bad_json(format!("{kind} content is missing the field {field}"))),
        }
    };
    match kind {
        "m.room.name" => string_field("name"),
        "m.room.topic" => string_field("topic"),
        "m.room.join_rules" => string_field("join_rule"),
        "m.room.history_visibility" => {
            string_field("history_visibility")?;
            let value = content["history_visibility"].as_str().unwrap_or_default();
            if matches!(value, "world_readable" | "shared" | "invited" | "joined") {
                Ok(())
            } else {
                Err(Error::bad_json(format!("history_visibility {value:?} is invalid")))
            }
        }
        "m.room.member" => string_field("membership"),
        "m.room.canonical_alias" => match content.get("alias") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(alias)) => ruma::RoomAliasId::parse(alias)
                .map(|_| ())
                .map_err(|e| Error::bad_json(format!("alias {alias:?} is invalid: {e}"))),
            Some(_) => Err(Error::bad_json("m.room.canonical_alias content field alias must be a string")),
        },
        _ => Ok(()),
    }
}

/// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
pub async fn put(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, kind, state_key)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let timestamp = massaged_timestamp(&session, query.as_deref())?;
    put_state_event(&services, &session.user_id, &room_id, &kind, &state_key, content, timestamp).await
}

/// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}
pub async fn put_empty_key(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, kind)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    let timestamp = massaged_timestamp(&session, query.as_deref())?;
    put_state_event(&services, &session.user_id, &room_id, &kind, "", content, timestamp).await
}
