//! Membership across servers (spec: Server-Server API, "Joining Rooms",
//! "Knocking upon a room", "Inviting to a room", "Leaving Rooms (Rejecting
//! Invites)"): joins, knocks and leaves as the resident server (`make_join`,
//! `send_join` v1 and v2, `make_knock`, `send_knock`, `make_leave`,
//! `send_leave` v1 and v2), and invites of this server's users (`invite` v2;
//! v1 is not served and returns 404 `M_UNRECOGNIZED`). With `omit_members`,
//! `send_join` v2 returns a reduced state without most member events.
//!
//! The v1 `send_join` and `send_leave` were deprecated and then removed in
//! spec v1.18, but they are still served for servers that predate that. They
//! take the same request as v2 and return `[200, body]`, where the v1 join
//! body has no `members_omitted` or `origin`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    routing::{get, put},
};
use ruma::{CanonicalJsonValue, EventId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::FederationAuth;
use crate::{
    Services,
    error::{Error, ErrorKind, Result},
    rooms::{invite::InboundInvite, pdu::Pdu, remote::JoinAnswer},
};

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(make_join))
        .route("/_matrix/federation/v1/send_join/{room_id}/{event_id}", put(send_join_v1))
        .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(send_join))
        .route("/_matrix/federation/v1/make_leave/{room_id}/{user_id}", get(make_leave))
        .route("/_matrix/federation/v1/send_leave/{room_id}/{event_id}", put(send_leave_v1))
        .route("/_matrix/federation/v2/send_leave/{room_id}/{event_id}", put(send_leave))
        .route("/_matrix/federation/v2/invite/{room_id}/{event_id}", put(invite))
        .route("/_matrix/federation/v1/make_knock/{room_id}/{user_id}", get(make_knock))
        .route("/_matrix/federation/v1/send_knock/{room_id}/{event_id}", put(send_knock))
}

/// Checks that the room's version is among the `ver` query parameters of the
/// requesting server (without any, it supports room version 1 only).
async fn check_ver(services: &Services, room_id: &RoomId, query: Option<String>) -> Result<()> {
    let versions: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "ver")
        .map(|(_, value)| value.into_owned())
        .collect();
    let room = services.rooms.state(room_id).await?;
    let version = room.version.to_string();
    if !versions.contains(&version) {
        let mut error = Error::new(
            ErrorKind::IncompatibleRoomVersion,
            format!("room {room_id} has version {version}, which the requesting server did not list in ver"),
        );
        error.body = Some(json!({ "room_version": version }).as_object().cloned().unwrap_or_default());
        return Err(error);
    }
    Ok(())
}

fn parse_event_id(event_id: &str) -> Result<ruma::OwnedEventId> {
    EventId::parse(event_id).map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))
}

fn parse_event(body: &[u8]) -> Result<ruma::CanonicalJsonObject> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::bad_json(format!("invalid event: {e}")))?;
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        _ => Err(Error::bad_json("the event is not a canonical JSON object")),
    }
}

/// The user of the path, who must belong to the requesting server.
fn origin_user(user_id: &str, auth: &FederationAuth) -> Result<ruma::OwnedUserId> {
    let user =
        UserId::parse(user_id).map_err(|e| Error::invalid_param(format!("user id {user_id:?} is invalid: {e}")))?;
    if user.server_name() != auth.origin {
        return Err(Error::forbidden(format!("{user} is not a user of {}", auth.origin)));
    }
    Ok(user)
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
    let user = origin_user(&user_id, &auth)?;
    let room_id = known_room(&services, &room_id).await?;
    check_ver(&services, &room_id, query).await?;
    let (room_version, event) = services.rooms.make_join(&room_id, &user).await?;
    Ok(Json(json!({ "room_version": room_version, "event": event })))
}

/// Accepts a join as the resident server and returns the state and auth
/// chain before it, as PDUs, reduced when `omit_members` is set.
async fn accept_join(
    services: &Services,
    room_id: &str,
    event_id: &str,
    auth: &FederationAuth,
    omit_members: bool,
) -> Result<JoinAnswer> {
    let room_id = known_room(services, room_id).await?;
    let event_id = parse_event_id(event_id)?;
    let object = parse_event(&auth.body)?;
    let keys = services.federation.signing_keys(&object).await;
    services.rooms.send_join(&auth.origin, &room_id, &event_id, object, &keys, omit_members).await
}

/// Reads the `omit_members` query parameter of `send_join` v2: `true` or
/// `false`, and `false` when absent.
fn omit_members(query: Option<String>) -> Result<bool> {
    let mut value = false;
    for (key, given) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "omit_members" {
            value = match given.as_ref() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(Error::invalid_param(format!("omit_members must be true or false, not {other:?}")));
                }
            };
        }
    }
    Ok(value)
}

fn raw_pdus(pdus: &[Arc<Pdu>]) -> Vec<Value> {
    pdus.iter().filter_map(|p| serde_json::from_str(&p.json).ok()).collect()
}

/// Builds the part of the `send_join` response body that both versions
/// share, with the join signed by this server when it authorised it.
fn join_body(answer: &JoinAnswer) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("state".into(), Value::Array(raw_pdus(&answer.state)));
    body.insert("auth_chain".into(), Value::Array(raw_pdus(&answer.auth_chain)));
    if let Some(event) = &answer.event {
        body.insert("event".into(), serde_json::to_value(event).unwrap_or(Value::Null));
    }
    body
}

/// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}?omit_members=...
async fn send_join(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let omit_members = omit_members(query)?;
    let answer = accept_join(&services, &room_id, &event_id, &auth, omit_members).await?;
    let mut body = join_body(&answer);
    body.insert("origin".into(), json!(services.server_name));
    body.insert("members_omitted".into(), json!(answer.servers_in_room.is_some()));
    if let Some(servers) = &answer.servers_in_room {
        body.insert("servers_in_room".into(), json!(servers));
    }
    Ok(Json(Value::Object(body)))
}

/// PUT /_matrix/federation/v1/send_join/{roomId}/{eventId} (removed from the
/// spec in v1.18, served for older servers)
async fn send_join_v1(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let answer = accept_join(&services, &room_id, &event_id, &auth, false).await?;
    Ok(Json(json!([200, join_body(&answer)])))
}

/// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
async fn make_leave(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let user = origin_user(&user_id, &auth)?;
    let room_id = known_room(&services, &room_id).await?;
    let (room_version, event) = services.rooms.make_leave(&room_id, &user).await?;
    Ok(Json(json!({ "room_version": room_version, "event": event })))
}

/// Accepts a leave as the resident server.
async fn accept_leave(services: &Services, room_id: &str, event_id: &str, auth: &FederationAuth) -> Result<()> {
    let room_id = known_room(services, room_id).await?;
    let event_id = parse_event_id(event_id)?;
    let object = parse_event(&auth.body)?;
    let keys = services.federation.signing_keys(&object).await;
    services.rooms.send_leave(&auth.origin, &room_id, &event_id, object, &keys).await
}

/// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}
async fn send_leave(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    accept_leave(&services, &room_id, &event_id, &auth).await?;
    Ok(Json(json!({})))
}

/// PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId} (removed from the
/// spec in v1.18, served for older servers)
async fn send_leave_v1(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    accept_leave(&services, &room_id, &event_id, &auth).await?;
    Ok(Json(json!([200, {}])))
}

#[derive(Deserialize)]
struct InviteBody {
    room_version: String,
    event: Value,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

/// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
async fn invite(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id =
        RoomId::parse(&room_id).map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))?;
    let event_id = parse_event_id(&event_id)?;
    let body: InviteBody =
        serde_json::from_slice(&auth.body).map_err(|e| Error::bad_json(format!("invalid invite request: {e}")))?;
    let event = match CanonicalJsonValue::try_from(body.event) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        _ => return Err(Error::bad_json("event is not a canonical JSON object")),
    };
    let invite = InboundInvite {
        room_id,
        event_id,
        room_version: body.room_version,
        event,
        invite_room_state: body.invite_room_state,
    };
    let signed = services.rooms.receive_invite(&auth.origin, invite).await?;
    Ok(Json(json!({ "event": signed })))
}

/// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=...
async fn make_knock(
    State(services): State<Arc<Services>>,
    Path((room_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let user = origin_user(&user_id, &auth)?;
    let room_id = known_room(&services, &room_id).await?;
    check_ver(&services, &room_id, query).await?;
    let (room_version, event) = services.rooms.make_knock(&room_id, &user).await?;
    Ok(Json(json!({ "room_version": room_version, "event": event })))
}

/// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
async fn send_knock(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id = known_room(&services, &room_id).await?;
    let event_id = parse_event_id(&event_id)?;
    let object = parse_event(&auth.body)?;
    let keys = services.federation.signing_keys(&object).await;
    let state = services.rooms.send_knock(&auth.origin, &room_id, &event_id, object, &keys).await?;
    Ok(Json(json!({ "knock_room_state": state })))
}
