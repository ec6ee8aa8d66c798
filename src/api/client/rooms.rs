//! Room creation (spec: Client-Server API, "Creation"), and checks shared by
//! the room endpoints.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, ErrorKind, Result},
    rooms::{CreateRoom, state::RoomState},
};

pub fn parse_room_id(room_id: &str) -> Result<OwnedRoomId> {
    RoomId::parse(room_id).map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))
}

pub fn parse_user_id(user_id: &str, field: &str) -> Result<OwnedUserId> {
    UserId::parse(user_id).map_err(|e| Error::invalid_param(format!("{field} {user_id:?} is not a valid user id: {e}")))
}

/// The room's state, or 403 when the caller is not in the room. Unknown rooms
/// answer the same as rooms the caller is not in, so their existence does not leak.
pub async fn joined_room(services: &Services, room_id: &RoomId, user: &UserId) -> Result<Arc<RoomState>> {
    let forbidden = || Error::forbidden(format!("you are not a member of room {room_id}"));
    if !services.rooms.exists(room_id).await? {
        return Err(forbidden());
    }
    let room = services.rooms.state(room_id).await?;
    if !room.is_joined(user) {
        return Err(forbidden());
    }
    Ok(room)
}

#[derive(Deserialize)]
struct InitialStateEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

#[derive(Deserialize)]
pub struct CreateRoomBody {
    visibility: Option<String>,
    room_alias_name: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<OwnedUserId>,
    #[serde(default)]
    invite_3pid: Vec<Value>,
    room_version: Option<String>,
    #[serde(default)]
    creation_content: Map<String, Value>,
    #[serde(default)]
    initial_state: Vec<InitialStateEvent>,
    preset: Option<String>,
    #[serde(default)]
    is_direct: bool,
    power_level_content_override: Option<Map<String, Value>>,
}

/// POST /_matrix/client/v3/createRoom
pub async fn create(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<CreateRoomBody>,
) -> Result<Json<Value>> {
    services.check_user_rate_limit(&session.user_id)?;
    let visibility_public = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => {
            return Err(Error::bad_json(format!("visibility {other:?} is invalid: expected public or private")));
        }
    };
    if !body.invite_3pid.is_empty() {
        return Err(Error::new(ErrorKind::Unrecognized, "invite_3pid is not supported by this server")
            .with_status(axum::http::StatusCode::BAD_REQUEST));
    }
    let room_version = match body.room_version.as_deref() {
        Some(version) => Some(RoomVersionId::try_from(version).map_err(|_| {
            Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version:?} is not supported"))
        })?),
        None => None,
    };
    if let Some(localpart) = &body.room_alias_name {
        let alias = format!("#{localpart}:{}", services.server_name);
        crate::appservice::query::check_alias_namespace(&services, &alias, session.appservice.as_deref())?;
    }
    let mut invite = body.invite;
    invite.dedup();
    let request = CreateRoom {
        visibility_public,
        alias_localpart: body.room_alias_name,
        name: body.name,
        topic: body.topic,
        invite,
        room_version,
        creation_content: body.creation_content,
        initial_state: body
            .initial_state
            .into_iter()
            .map(|e| (e.kind, e.state_key, Value::Object(e.content)))
            .collect(),
        preset: body.preset,
        is_direct: body.is_direct,
        power_level_content_override: body.power_level_content_override,
        invite_reason: None,
    };
    let room_id = services.rooms.create_room(&session.user_id, request).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

#[derive(Deserialize)]
pub struct UpgradeBody {
    new_version: String,
}

/// POST /_matrix/client/v3/rooms/{roomId}/upgrade
pub async fn upgrade(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<UpgradeBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let version = RoomVersionId::try_from(body.new_version.as_str()).map_err(|e| {
        Error::new(ErrorKind::UnsupportedRoomVersion, format!("new_version {:?} is invalid: {e}", body.new_version))
    })?;
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::forbidden(format!("you are not joined to room {room_id}")));
    }
    let replacement = services.rooms.upgrade(&session.user_id, &room_id, version).await?;
    Ok(Json(json!({ "replacement_room": replacement })))
}
