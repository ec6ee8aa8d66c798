//! Room aliases and the public room directory (spec: Client-Server API, "Room
//! aliases" and "Listing rooms").

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use ruma::{RoomAliasId, events::StateEventType};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{joined_room, parse_room_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path, Query},
    appservice::query,
    error::{Error, ErrorKind, Result},
    rooms::power,
    storage,
};

fn parse_alias(alias: &str) -> Result<ruma::OwnedRoomAliasId> {
    RoomAliasId::parse(alias).map_err(|e| Error::invalid_param(format!("room alias {alias:?} is invalid: {e}")))
}

/// GET /_matrix/client/v3/directory/room/{roomAlias}
pub async fn resolve_alias(State(services): State<Arc<Services>>, Path(alias): Path<String>) -> Result<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let room_id = query::resolve_alias(&services, &alias)
        .await?
        .ok_or_else(|| Error::not_found(format!("room alias {alias} not found")))?;
    Ok(Json(json!({ "room_id": room_id, "servers": [services.server_name] })))
}

#[derive(Deserialize)]
pub struct PutAliasBody {
    room_id: String,
}

/// PUT /_matrix/client/v3/directory/room/{roomAlias}
pub async fn put_alias(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(alias): Path<String>,
    JsonBody(body): JsonBody<PutAliasBody>,
) -> Result<Json<Value>> {
    let alias = parse_alias(&alias)?;
    if alias.server_name() != services.server_name {
        return Err(Error::invalid_param(format!("room alias {alias} does not belong to this server")));
    }
    query::check_alias_namespace(&services, alias.as_str(), session.appservice.as_deref())?;
    let room_id = parse_room_id(&body.room_id)?;
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::not_found(format!("room {room_id} is not known to this server")));
    }
    let created = storage::rooms::insert_alias(
        &services.db.pool,
        alias.as_str(),
        room_id.as_str(),
        session.user_id.as_str(),
        storage::now_ms(),
    )
    .await?;
    if !created {
        return Err(Error::new(ErrorKind::Unknown, format!("room alias {alias} already exists"))
            .with_status(StatusCode::CONFLICT));
    }
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/directory/room/{roomAlias}
pub async fn delete_alias(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(alias): Path<String>,
) -> Result<Json<Value>> {
    let alias = parse_alias(&alias)?;
    let (room_id, creator) = storage::rooms::resolve_alias(&services.db.pool, alias.as_str())
        .await?
        .ok_or_else(|| Error::not_found(format!("room alias {alias} not found")))?;
    query::check_alias_namespace(&services, alias.as_str(), session.appservice.as_deref())?;
    // An application service has full control over the aliases of its namespace.
    let mut allowed = creator == session.user_id.as_str()
        || session.appservice.as_ref().is_some_and(|registration| registration.covers_alias(alias.as_str()))
        || services.users.is_admin(&session.user_id).await?;
    if !allowed && let Ok(room_id) = parse_room_id(&room_id) {
        let room = services.rooms.state(&room_id).await?;
        allowed = room.is_joined(&session.user_id)
            && power::user_level(&room, &session.user_id) >= power::event_level(&room, "m.room.canonical_alias", true);
    }
    if !allowed {
        return Err(Error::forbidden(format!("you may not remove the room alias {alias}")));
    }
    storage::rooms::delete_alias(&services.db.pool, alias.as_str()).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/rooms/{roomId}/aliases
pub async fn room_aliases(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    joined_room(&services, &room_id, &session.user_id).await?;
    let aliases = storage::rooms::room_aliases(&services.db.pool, room_id.as_str()).await?;
    Ok(Json(json!({ "aliases": aliases })))
}

/// GET /_matrix/client/v3/directory/list/room/{roomId}
pub async fn get_visibility(State(services): State<Arc<Services>>, Path(room_id): Path<String>) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let room = storage::rooms::get(&services.db.pool, room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found(format!("room {room_id} not found")))?;
    Ok(Json(json!({ "visibility": if room.is_public { "public" } else { "private" } })))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// PUT /_matrix/client/v3/directory/list/room/{roomId}
pub async fn set_visibility(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<VisibilityBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let public = match body.visibility.as_deref() {
        Some("public") => true,
        Some("private") | None => false,
        Some(other) => {
            return Err(Error::invalid_param(format!("visibility {other:?} is invalid: expected public or private")));
        }
    };
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::not_found(format!("room {room_id} not found")));
    }
    let room = joined_room(&services, &room_id, &session.user_id).await?;
    if power::user_level(&room, &session.user_id) < power::event_level(&room, "m.room.canonical_alias", true) {
        return Err(Error::forbidden("you need a higher power level to change the room's directory visibility"));
    }
    storage::rooms::set_public(&services.db.pool, room_id.as_str(), public).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    server: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
}

async fn list_public_rooms(
    services: &Services,
    limit: Option<usize>,
    since: Option<&str>,
    server: Option<&str>,
    term: Option<&str>,
) -> Result<Json<Value>> {
    if let Some(server) = server
        && server != services.server_name.as_str()
    {
        return Err(Error::not_found(format!("the room directory of {server} is not reachable from this server")));
    }
    let offset: usize = match since {
        Some(token) => token
            .strip_prefix('p')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::invalid_param(format!("since is not a valid token: {token:?}")))?,
        None => 0,
    };
    let term = term.map(str::to_lowercase);
    let mut chunk = Vec::new();
    for room_id in storage::rooms::public_rooms(&services.db.pool).await? {
        let Ok(room_id) = parse_room_id(&room_id) else {
            continue;
        };
        let room = services.rooms.state(&room_id).await?;
        let text = |kind: StateEventType, field: &str| {
            room.content(&kind, "").get(field).and_then(Value::as_str).map(str::to_owned)
        };
        let name = text(StateEventType::RoomName, "name");
        let topic = text(StateEventType::RoomTopic, "topic");
        let alias = text(StateEventType::RoomCanonicalAlias, "alias");
        if let Some(term) = &term {
            let haystack = format!(
                "{} {} {}",
                name.clone().unwrap_or_default(),
                topic.clone().unwrap_or_default(),
                alias.clone().unwrap_or_default()
            )
            .to_lowercase();
            if !haystack.contains(term.as_str()) {
                continue;
            }
        }
        let mut entry = json!({
            "room_id": room_id,
            "num_joined_members": room.count_membership("join"),
            "world_readable": text(StateEventType::RoomHistoryVisibility, "history_visibility").as_deref() == Some("world_readable"),
            "guest_can_join": text(StateEventType::RoomGuestAccess, "guest_access").as_deref() == Some("can_join"),
            "join_rule": text(StateEventType::RoomJoinRules, "join_rule").unwrap_or_else(|| "invite".into()),
        });
        for (key, value) in [
            ("name", name),
            ("topic", topic),
            ("canonical_alias", alias),
            ("avatar_url", text(StateEventType::RoomAvatar, "url")),
        ] {
            if let Some(value) = value {
                entry[key] = json!(value);
            }
        }
        if let Some(kind) = room.create_event().and_then(|c| c.content_str("type")) {
            entry["room_type"] = json!(kind);
        }
        chunk.push(entry);
    }
    chunk.sort_by(|a, b| b["num_joined_members"].as_u64().cmp(&a["num_joined_members"].as_u64()));
    let total = chunk.len();
    let limit = limit.unwrap_or(usize::MAX).max(1);
    let page: Vec<Value> = chunk.into_iter().skip(offset).take(limit).collect();
    let mut body = json!({ "chunk": page, "total_room_count_estimate": total });
    if offset + limit < total {
        body["next_batch"] = json!(format!("p{}", offset + limit));
    }
    if offset > 0 {
        body["prev_batch"] = json!(format!("p{}", offset.saturating_sub(limit)));
    }
    Ok(Json(body))
}

/// GET /_matrix/client/v3/publicRooms
pub async fn public_rooms(
    State(services): State<Arc<Services>>,
    Query(query): Query<PublicRoomsQuery>,
) -> Result<Json<Value>> {
    list_public_rooms(&services, query.limit, query.since.as_deref(), query.server.as_deref(), None).await
}

/// POST /_matrix/client/v3/publicRooms
pub async fn search_public_rooms(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    Query(query): Query<PublicRoomsQuery>,
    JsonBody(body): JsonBody<PublicRoomsBody>,
) -> Result<Json<Value>> {
    let server = body.server.or(query.server);
    list_public_rooms(
        &services,
        body.limit,
        body.since.as_deref(),
        server.as_deref(),
        body.filter.generic_search_term.as_deref(),
    )
    .await
}
