//! Server-side key backups (spec: Client-Server API, "Server-side key backups").

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path, Query},
    e2ee::backup::{self, AllKeys, KeyBackupData, RoomKeys, Scope, VersionRequest},
    error::{Error, Result},
};

#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

impl VersionQuery {
    fn required(&self) -> Result<&str> {
        self.version.as_deref().ok_or_else(|| Error::missing_param("the version query parameter is required"))
    }
}

/// POST /_matrix/client/v3/room_keys/version
pub async fn create_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<VersionRequest>,
) -> Result<Json<Value>> {
    Ok(Json(backup::create_version(&services, &session, body).await?))
}

/// GET /_matrix/client/v3/room_keys/version
pub async fn latest_version(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    Ok(Json(backup::get_version(&services, &session, None).await?))
}

/// GET /_matrix/client/v3/room_keys/version/{version}
pub async fn get_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(backup::get_version(&services, &session, Some(&version)).await?))
}

/// PUT /_matrix/client/v3/room_keys/version/{version}
pub async fn update_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(version): Path<String>,
    JsonBody(body): JsonBody<VersionRequest>,
) -> Result<Json<Value>> {
    backup::update_version(&services, &session, &version, body).await?;
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/room_keys/version/{version}
pub async fn delete_version(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(version): Path<String>,
) -> Result<Json<Value>> {
    backup::delete_version(&services, &session, &version).await?;
    Ok(Json(json!({})))
}

/// PUT /_matrix/client/v3/room_keys/keys
pub async fn put_all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<AllKeys>,
) -> Result<Json<Value>> {
    let keys = body
        .rooms
        .into_iter()
        .flat_map(|(room, keys)| keys.sessions.into_iter().map(move |(session, data)| (room.clone(), session, data)))
        .collect();
    Ok(Json(backup::put_keys(&services, &session, query.required()?, keys).await?))
}

/// PUT /_matrix/client/v3/room_keys/keys/{roomId}
pub async fn put_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<RoomKeys>,
) -> Result<Json<Value>> {
    let keys = body.sessions.into_iter().map(|(session, data)| (room_id.clone(), session, data)).collect();
    Ok(Json(backup::put_keys(&services, &session, query.required()?, keys).await?))
}

/// PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
pub async fn put_session(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    JsonBody(body): JsonBody<KeyBackupData>,
) -> Result<Json<Value>> {
    let keys = vec![(room_id, session_id, body)];
    Ok(Json(backup::put_keys(&services, &session, query.required()?, keys).await?))
}

/// GET /_matrix/client/v3/room_keys/keys
pub async fn get_all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(backup::get_keys(&services, &session, query.required()?, Scope::All).await?))
}

/// GET /_matrix/client/v3/room_keys/keys/{roomId}
pub async fn get_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(backup::get_keys(&services, &session, query.required()?, Scope::Room(&room_id)).await?))
}

/// GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
pub async fn get_session(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let scope = Scope::Session(&room_id, &session_id);
    Ok(Json(backup::get_keys(&services, &session, query.required()?, scope).await?))
}

/// DELETE /_matrix/client/v3/room_keys/keys
pub async fn delete_all(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(backup::delete_keys(&services, &session, query.required()?, Scope::All).await?))
}

/// DELETE /_matrix/client/v3/room_keys/keys/{roomId}
pub async fn delete_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(backup::delete_keys(&services, &session, query.required()?, Scope::Room(&room_id)).await?))
}

/// DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
pub async fn delete_session(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let scope = Scope::Session(&room_id, &session_id);
    Ok(Json(backup::delete_keys(&services, &session, query.required()?, scope).await?))
}
