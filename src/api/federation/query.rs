//! Queries and the room directory over federation (spec: Server-Server API,
//! "Query Types" and "Public Room Directory"):
//! `GET /_matrix/federation/v1/query/directory`, `/query/profile`, and
//! `GET`/`POST /_matrix/federation/v1/publicRooms`. The client side of each
//! (a local client asking about a remote alias, user or directory) is here too.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use http::Method;
use ruma::{RoomAliasId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::FederationAuth;
use crate::{
    Services,
    api::{Query, client::room_directory::local_public_rooms},
    error::{Error, ErrorKind, Result},
    storage,
};

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/query/directory", get(query_directory))
        .route("/_matrix/federation/v1/query/profile", get(query_profile))
        .route("/_matrix/federation/v1/publicRooms", get(public_rooms).post(search_public_rooms))
}

#[derive(Deserialize)]
struct DirectoryQuery {
    room_alias: Option<String>,
}

/// GET /_matrix/federation/v1/query/directory?room_alias=
async fn query_directory(
    State(services): State<Arc<Services>>,
    Query(query): Query<DirectoryQuery>,
    _auth: FederationAuth,
) -> Result<Json<Value>> {
    let alias = query.room_alias.ok_or_else(|| Error::missing_param("the room_alias query parameter is required"))?;
    let alias = RoomAliasId::parse(&alias)
        .map_err(|e| Error::invalid_param(format!("room_alias {alias:?} is invalid: {e}")))?;
    if alias.server_name() != services.server_name {
        return Err(Error::not_found(format!("room alias {alias} does not belong to this server")));
    }
    let (room_id, _) = storage::rooms::resolve_alias(&services.db.pool, alias.as_str())
        .await?
        .ok_or_else(|| Error::not_found(format!("room alias {alias} not found")))?;
    // This server first, then the other servers with joined members.
    let mut servers = vec![services.server_name.to_string()];
    for member in storage::rooms::room_members(&services.db.pool, &room_id, "join").await? {
        if let Ok(user_id) = UserId::parse(&member) {
            let server = user_id.server_name().to_string();
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
    }
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

#[derive(Deserialize)]
struct ProfileQuery {
    user_id: Option<String>,
    field: Option<String>,
}

/// GET /_matrix/federation/v1/query/profile?user_id=&field=
async fn query_profile(
    State(services): State<Arc<Services>>,
    Query(query): Query<ProfileQuery>,
    _auth: FederationAuth,
) -> Result<Json<Value>> {
    let user_id = query.user_id.ok_or_else(|| Error::missing_param("the user_id query parameter is required"))?;
    let user_id =
        UserId::parse(&user_id).map_err(|e| Error::invalid_param(format!("user_id {user_id:?} is invalid: {e}")))?;
    if let Some(field) = query.field.as_deref()
        && field != "displayname"
        && field != "avatar_url"
    {
        return Err(Error::invalid_param(format!("field {field:?} is invalid: expected displayname or avatar_url")));
    }
    if user_id.server_name() != services.server_name {
        return Err(Error::not_found(format!("user {user_id} does not belong to this server")));
    }
    let user = storage::users::get(&services.db.pool, user_id.as_str())
        .await?
        .filter(|user| !user.deactivated)
        .ok_or_else(|| Error::not_found(format!("profile of {user_id} not found")))?;
    let mut body = json!({});
    let requested = |name: &str| query.field.as_deref().is_none_or(|field| field == name);
    if let Some(name) = user.displayname.filter(|_| requested("displayname")) {
        body["displayname"] = json!(name);
    }
    if let Some(url) = user.avatar_url.filter(|_| requested("avatar_url")) {
        body["avatar_url"] = json!(url);
    }
    Ok(Json(body))
}

#[derive(Deserialize, Default)]
struct PublicRoomsQuery {
    limit: Option<usize>,
    since: Option<String>,
    include_all_networks: Option<bool>,
    third_party_instance_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
}

#[derive(Deserialize, Default)]
struct PublicRoomsBody {
    limit: Option<usize>,
    since: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
    include_all_networks: Option<bool>,
    third_party_instance_id: Option<String>,
}

/// Checks whether a request asks only for rooms of a third-party network.
/// This server bridges none, so such a request lists nothing.
fn third_party_only(include_all_networks: Option<bool>, instance: Option<&str>) -> bool {
    instance.is_some() && include_all_networks != Some(true)
}

fn empty_directory() -> Json<Value> {
    Json(json!({ "chunk": [], "total_room_count_estimate": 0 }))
}

/// GET /_matrix/federation/v1/publicRooms
async fn public_rooms(
    State(services): State<Arc<Services>>,
    Query(query): Query<PublicRoomsQuery>,
    _auth: FederationAuth,
) -> Result<Json<Value>> {
    if third_party_only(query.include_all_networks, query.third_party_instance_id.as_deref()) {
        return Ok(empty_directory());
    }
    local_public_rooms(&services, query.limit, query.since.as_deref(), None).await
}

/// POST /_matrix/federation/v1/publicRooms
async fn search_public_rooms(State(services): State<Arc<Services>>, auth: FederationAuth) -> Result<Json<Value>> {
    let body: PublicRoomsBody = if auth.body.is_empty() {
        PublicRoomsBody::default()
    } else {
        serde_json::from_slice(&auth.body).map_err(|e| Error::bad_json(format!("invalid publicRooms body: {e}")))?
    };
    if third_party_only(body.include_all_networks, body.third_party_instance_id.as_deref()) {
        return Ok(empty_directory());
    }
    local_public_rooms(&services, body.limit, body.since.as_deref(), body.filter.generic_search_term.as_deref()).await
}

fn bad_gateway(message: String) -> Error {
    Error::new(ErrorKind::Unknown, message).with_status(http::StatusCode::BAD_GATEWAY)
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

/// Resolves an alias of another server through its `query/directory`:
/// `(room id, servers)`. A remote 404 stays 404 `M_NOT_FOUND`.
pub async fn remote_alias(services: &Services, alias: &RoomAliasId) -> Result<(String, Vec<String>)> {
    let path = format!("/_matrix/federation/v1/query/directory?{}", query_string(&[("room_alias", alias.as_str())]));
    let body = services.federation.send_json(alias.server_name(), Method::GET, &path, None, true).await?;
    let room_id = body["room_id"]
        .as_str()
        .ok_or_else(|| bad_gateway(format!("{} answered the alias query without a room_id", alias.server_name())))?
        .to_owned();
    let servers = body["servers"]
        .as_array()
        .map(|servers| servers.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok((room_id, servers))
}

/// Resolves a room alias of this server or of another one: `(room id, servers)`.
pub async fn resolve_alias(services: &Services, alias: &RoomAliasId) -> Result<(String, Vec<String>)> {
    if alias.server_name() != services.server_name {
        return remote_alias(services, alias).await;
    }
    // Local aliases include those that an application service creates when asked.
    let room_id = crate::appservice::query::resolve_alias(services, alias)
        .await?
        .ok_or_else(|| Error::not_found(format!("room alias {alias} not found")))?;
    Ok((room_id, vec![services.server_name.to_string()]))
}

/// Fetches the profile of a user of another server through its
/// `query/profile`, keeping only the fields the spec defines.
pub async fn remote_profile(services: &Services, user_id: &UserId, field: Option<&str>) -> Result<Value> {
    let mut pairs = vec![("user_id", user_id.as_str())];
    if let Some(field) = field {
        pairs.push(("field", field));
    }
    let path = format!("/_matrix/federation/v1/query/profile?{}", query_string(&pairs));
    let body = services.federation.send_json(user_id.server_name(), Method::GET, &path, None, true).await?;
    let mut profile = json!({});
    for name in ["displayname", "avatar_url"] {
        if field.is_none_or(|field| field == name)
            && let Some(value) = body.get(name).and_then(Value::as_str)
        {
            profile[name] = json!(value);
        }
    }
    Ok(profile)
}

/// Lists the public rooms of another server: `GET publicRooms` without a
/// search term, `POST publicRooms` with one.
pub async fn remote_public_rooms(
    services: &Services,
    server: &ServerName,
    limit: Option<usize>,
    since: Option<&str>,
    term: Option<&str>,
) -> Result<Json<Value>> {
    let body = match term {
        None => {
            let limit = limit.map(|limit| limit.to_string());
            let mut pairs = Vec::new();
            if let Some(limit) = &limit {
                pairs.push(("limit", limit.as_str()));
            }
            if let Some(since) = since {
                pairs.push(("since", since));
            }
            let path = if pairs.is_empty() {
                "/_matrix/federation/v1/publicRooms".to_owned()
            } else {
                format!("/_matrix/federation/v1/publicRooms?{}", query_string(&pairs))
            };
            services.federation.send_json(server, Method::GET, &path, None, true).await?
        }
        Some(term) => {
            let mut request = json!({ "filter": { "generic_search_term": term } });
            if let Some(limit) = limit {
                request["limit"] = json!(limit);
            }
            if let Some(since) = since {
                request["since"] = json!(since);
            }
            services
                .federation
                .send_json(server, Method::POST, "/_matrix/federation/v1/publicRooms", Some(&request), true)
                .await?
        }
    };
    if !body["chunk"].is_array() {
        return Err(bad_gateway(format!("{server} answered publicRooms without a chunk")));
    }
    Ok(Json(body))
}
