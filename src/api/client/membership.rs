//! Room membership (spec: Client-Server API, "Room membership"): joining,
//! invites, leaving, kicks, bans, and member lists.

use std::sync::Arc;

use axum::{
    Json,
    extract::{RawQuery, State},
};
use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, ServerName, events::StateEventType};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rooms::{joined_room, parse_room_id, parse_user_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path, Query},
    error::{Error, Result},
    rooms::{membership::MembershipChange, serialize::client_events},
    storage,
    users::Session,
};

#[derive(Deserialize, Default)]
pub struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

/// GET /_matrix/client/v3/joined_rooms
pub async fn joined_rooms(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let rooms = storage::rooms::joined_rooms(&services.db.pool, session.user_id.as_str()).await?;
    Ok(Json(json!({ "joined_rooms": rooms })))
}

/// Parses the servers named by the `server_name` and `via` query parameters.
fn join_servers(query: Option<&str>) -> Result<Vec<OwnedServerName>> {
    let mut servers = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "server_name" || key == "via" {
            let server = ServerName::parse(value.as_ref())
                .map_err(|e| Error::invalid_param(format!("{key} {value:?} is not a valid server name: {e}")))?;
            servers.push(server);
        }
    }
    Ok(servers)
}

/// Joins a room: as any event when this server is in the room, else through
/// one of `servers`, the inviter's server or the server of the room id.
async fn join_room(
    services: &Services,
    session: &Session,
    room_id: &OwnedRoomId,
    reason: Option<String>,
    mut servers: Vec<OwnedServerName>,
) -> Result<Json<Value>> {
    services.check_user_rate_limit(&session.user_id)?;
    let rooms = &services.rooms;
    if !rooms.is_resident(room_id).await? {
        if let Some(inviter) = rooms.remote_inviter_server(room_id, &session.user_id).await? {
            servers.push(inviter);
        }
        if let Some(server) = room_id.server_name() {
            servers.push(server.to_owned());
        }
        let mut seen = std::collections::HashSet::new();
        servers.retain(|s| *s != services.server_name && seen.insert(s.clone()));
        if !servers.is_empty() {
            rooms.join_remote(room_id, &session.user_id, &servers, reason).await?;
            return Ok(Json(json!({ "room_id": room_id })));
        }
    }
    if !rooms.exists(room_id).await? {
        return Err(Error::not_found(format!("room {room_id} is not known to this server")));
    }
    let room = rooms.state(room_id).await?;
    if !room.is_joined(&session.user_id) {
        rooms.change_membership(room_id, &session.user_id, &session.user_id, MembershipChange::Join, reason).await?;
    }
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/join
pub async fn join(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let servers = join_servers(query.as_deref())?;
    join_room(&services, &session, &room_id, body.reason, servers).await
}

/// POST /_matrix/client/v3/join/{roomIdOrAlias}
pub async fn join_by_id_or_alias(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(target): Path<String>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let mut servers = join_servers(query.as_deref())?;
    let room_id = if target.starts_with('#') {
        let alias = RoomAliasId::parse(&target)
            .map_err(|e| Error::invalid_param(format!("room alias {target:?} is invalid: {e}")))?;
        let (room_id, alias_servers) = crate::api::federation::query::resolve_alias(&services, &alias).await?;
        servers.extend(alias_servers.iter().filter_map(|s| ServerName::parse(s).ok()));
        parse_room_id(&room_id)?
    } else {
        parse_room_id(&target)?
    };
    join_room(&services, &session, &room_id, body.reason, servers).await
}

/// POST /_matrix/client/v3/knock/{roomIdOrAlias}
pub async fn knock(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(target): Path<String>,
    RawQuery(query): RawQuery,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    services.check_user_rate_limit(&session.user_id)?;
    let mut servers = join_servers(query.as_deref())?;
    let room_id = if target.starts_with('#') {
        let alias = RoomAliasId::parse(&target)
            .map_err(|e| Error::invalid_param(format!("room alias {target:?} is invalid: {e}")))?;
        let (room_id, alias_servers) = crate::api::federation::query::resolve_alias(&services, &alias).await?;
        servers.extend(alias_servers.iter().filter_map(|s| ServerName::parse(s).ok()));
        parse_room_id(&room_id)?
    } else {
        parse_room_id(&target)?
    };
    let rooms = &services.rooms;
    if rooms.is_resident(&room_id).await? {
        rooms
            .change_membership(&room_id, &session.user_id, &session.user_id, MembershipChange::Knock, body.reason)
            .await?;
        return Ok(Json(json!({ "room_id": room_id })));
    }
    if let Some(server) = room_id.server_name() {
        servers.push(server.to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    servers.retain(|s| *s != services.server_name && seen.insert(s.clone()));
    rooms.knock_remote(&room_id, &session.user_id, &servers, body.reason).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST /_matrix/client/v3/rooms/{roomId}/invite
pub async fn invite(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    services.check_user_rate_limit(&session.user_id)?;
    let room_id = parse_room_id(&room_id)?;
    let target = parse_user_id(&body.user_id, "user_id")?;
    joined_room(&services, &room_id, &session.user_id).await?;
    if target.server_name() == services.server_name
        && storage::users::get(&services.db.pool, target.as_str()).await?.is_none()
    {
        return Err(Error::not_found(format!("user {target} does not exist")));
    }
    services
        .rooms
        .change_membership(&room_id, &session.user_id, &target, MembershipChange::Invite, body.reason)
        .await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/leave
pub async fn leave(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    // An invite to a room this server is not in is rejected through the inviting server.
    if services.rooms.remote_inviter_server(&room_id, &session.user_id).await?.is_some() {
        services.rooms.reject_remote_invite(&room_id, &session.user_id, body.reason).await?;
        return Ok(Json(json!({})));
    }
    if services.rooms.remote_knock_server(&room_id, &session.user_id).await?.is_some() {
        services.rooms.withdraw_remote_knock(&room_id, &session.user_id, body.reason).await?;
        return Ok(Json(json!({})));
    }
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::not_found(format!("room {room_id} is not known to this server")));
    }
    let room = services.rooms.state(&room_id).await?;
    match room.membership(&session.user_id).as_deref() {
        Some("join" | "invite" | "knock") => {
            services
                .rooms
                .change_membership(&room_id, &session.user_id, &session.user_id, MembershipChange::Leave, body.reason)
                .await?;
        }
        // Leaving a room one already left succeeds without a new event.
        Some("leave") => {}
        _ => {
            return Err(Error::forbidden(format!("you are not a member of room {room_id}")));
        }
    }
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/forget
pub async fn forget(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let membership = storage::rooms::membership(&services.db.pool, room_id.as_str(), session.user_id.as_str()).await?;
    match membership.as_ref().map(|m| m.membership.as_str()) {
        Some("leave" | "ban") => {
            storage::rooms::forget(&services.db.pool, room_id.as_str(), session.user_id.as_str()).await?;
            Ok(Json(json!({})))
        }
        Some(_) => Err(Error::bad_json(format!("you must leave room {room_id} before forgetting it"))
            .with_status(axum::http::StatusCode::BAD_REQUEST)),
        None => Err(Error::not_found(format!("you have no membership in room {room_id}"))),
    }
}

async fn moderate(
    services: &Services,
    session: &Session,
    room_id: &str,
    body: TargetBody,
    change: MembershipChange,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let target = parse_user_id(&body.user_id, "user_id")?;
    joined_room(services, &room_id, &session.user_id).await?;
    services.rooms.change_membership(&room_id, &session.user_id, &target, change, body.reason).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/kick
pub async fn kick(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    moderate(&services, &session, &room_id, body, MembershipChange::Kick).await
}

/// POST /_matrix/client/v3/rooms/{roomId}/ban
pub async fn ban(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    moderate(&services, &session, &room_id, body, MembershipChange::Ban).await
}

/// POST /_matrix/client/v3/rooms/{roomId}/unban
pub async fn unban(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    moderate(&services, &session, &room_id, body, MembershipChange::Unban).await
}

#[derive(Deserialize)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// GET /_matrix/client/v3/rooms/{roomId}/members
pub async fn members(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<MembersQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let pool = &services.db.pool;
    for value in [&query.membership, &query.not_membership].into_iter().flatten() {
        if !matches!(value.as_str(), "join" | "invite" | "knock" | "leave" | "ban") {
            return Err(Error::invalid_param(format!("membership {value:?} is invalid")));
        }
    }
    // Members who left see the member list as it was when they left.
    let own = storage::rooms::membership(pool, room_id.as_str(), session.user_id.as_str())
        .await?
        .filter(|m| m.membership == "join" || m.membership == "leave" || m.membership == "ban")
        .ok_or_else(|| Error::forbidden(format!("you are not a member of room {room_id}")))?;
    let mut upto = if own.membership == "join" { i64::MAX } else { own.stream };
    if let Some(at) = &query.at {
        upto = upto.min(crate::sync::token::parse_pagination(at, "at")?);
    }
    let state = match storage::events::room_range(pool, &room_id, i64::MIN, upto, 1, true).await?.pop() {
        Some(event) => storage::state::load_group(pool, event.state_group).await?,
        None => Default::default(),
    };
    let ids: Vec<String> =
        state.into_iter().filter(|((kind, _), _)| kind == "m.room.member").map(|(_, id)| id).collect();
    let mut events = storage::events::get_many(pool, &ids).await?;
    events.retain(|e| {
        let membership = e.pdu.membership().unwrap_or_default();
        query.membership.as_ref().is_none_or(|m| *m == membership)
            && query.not_membership.as_ref().is_none_or(|m| *m != membership)
    });
    events.sort_by(|a, b| a.pdu.state_key.cmp(&b.pdu.state_key));
    Ok(Json(json!({ "chunk": client_events(pool, &events, None, true).await? })))
}

/// GET /_matrix/client/v3/rooms/{roomId}/joined_members
pub async fn joined_members(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = joined_room(&services, &room_id, &session.user_id).await?;
    let mut joined = Map::new();
    for ((kind, key), pdu) in &room.state {
        if *kind != StateEventType::RoomMember || pdu.membership().as_deref() != Some("join") {
            continue;
        }
        let content = pdu.content_value();
        joined.insert(
            key.clone(),
            json!({
                "display_name": content.get("displayname").cloned().unwrap_or(Value::Null),
                "avatar_url": content.get("avatar_url").cloned().unwrap_or(Value::Null),
            }),
        );
    }
    Ok(Json(json!({ "joined": joined })))
}
