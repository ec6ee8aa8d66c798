//! Joins as the resident server (spec: Server-Server API, "Joining Rooms"):
//! `GET /_matrix/federation/v1/make_join/{roomId}/{userId}` and
//! `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    routing::{get, put},
};
use ruma::{CanonicalJsonValue, EventId, RoomId, UserId};
use serde_json::{Value, json};

use super::{FederationAuth, send::signing_keys};
use crate::{
    Services,
    error::{Error, ErrorKind, Result},
};

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(make_join))
        .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(send_join))
}

async fn known_room(services: &Services, room_id: &str) -> Result<ruma::OwnedRoomId> {
    let room_id =
        RoomId::parse(room_id).map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))?;
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::not_found(format!("room {room_id} is not known to this server")));
    }
    Ok(room_id)
}

/// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=...
async fn make_join(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let user =
        UserId::parse(&user_id).map_err(|e| Error::invalid_param(format!("user id {user_id:?} is invalid: {e}")))?;
    if user.server_name() != auth.origin {
        return Err(Error::forbidden(format!("{user} is not a user of {}", auth.origin)));
    }
    let room_id = known_room(&services, &room_id).await?;
    // Without `ver`, the joining server supports room version 1 only.
    let versions: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "ver")
        .map(|(_, value)| value.into_owned())
        .collect();
    let room = services.rooms.state(&room_id).await?;
    let version = room.version.to_string();
    if !versions.contains(&version) {
        let mut error = Error::new(
            ErrorKind::IncompatibleRoomVersion,
            format!("room {room_id} has version {version}, which the joining server did not list in ver"),
        );
        error.body = Some(json!({ "room_version": version }).as_object().cloned().unwrap_or_default());
        return Err(error);
    }
    let (room_version, event) = services.rooms.make_join(&room_id, &user).await?;
    Ok(Json(json!({ "room_version": room_version, "event": event })))
}

/// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
async fn send_join(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id = known_room(&services, &room_id).await?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    let value: Value =
        serde_json::from_slice(&auth.body).map_err(|e| Error::bad_json(format!("invalid event: {e}")))?;
    let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(value) else {
        return Err(Error::bad_json("the event is not a canonical JSON object"));
    };
    let keys = signing_keys(&services, &object).await;
    let answer = services.rooms.send_join(&auth.origin, &room_id, &event_id, object, &keys).await?;
    let raw = |pdus: &[Arc<crate::rooms::pdu::Pdu>]| -> Vec<Value> {
        pdus.iter().filter_map(|p| serde_json::from_str(&p.json).ok()).collect()
    };
    Ok(Json(json!({
        "origin": services.server_name,
        "members_omitted": false,
        "state": raw(&answer.state),
        "auth_chain": raw(&answer.auth_chain),
    })))
}
