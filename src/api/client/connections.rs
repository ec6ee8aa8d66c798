//! Connection endpoints under `/_matrix/client/unstable/dev.lattice.connections/`,
//! documented in `docs/connections.md`. The work happens in `policy::connections`.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{parse_room_id, parse_user_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path, Query},
    error::{Error, Result},
    policy::connections,
    storage,
};

#[derive(Deserialize)]
pub struct RequestBody {
    user_id: String,
    note: Option<String>,
}

#[derive(Deserialize)]
pub struct MetricsQuery {
    from: Option<i64>,
    to: Option<i64>,
}

/// GET .../connections
pub async fn list(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let connections = connections::list(&services.db, &session.user_id).await?;
    Ok(Json(json!({ "connections": connections })))
}

/// DELETE .../connections/{userId}
pub async fn remove(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let other = parse_user_id(&user_id, "userId")?;
    connections::remove(&services.rooms, &services.db, &session.user_id, &other).await?;
    Ok(Json(json!({})))
}

/// GET .../requests
pub async fn pending(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let (incoming, outgoing) = connections::pending(&services.db, &session.user_id).await?;
    Ok(Json(json!({ "incoming": incoming, "outgoing": outgoing })))
}

/// POST .../requests
pub async fn send(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<RequestBody>,
) -> Result<Json<Value>> {
    services.check_user_rate_limit(&session.user_id)?;
    let invitee = parse_user_id(&body.user_id, "user_id")?;
    // A user of this server must exist to receive a request. Other servers check their own users.
    if invitee.server_name() == services.server_name {
        let stored = storage::users::get(&services.db.pool, invitee.as_str()).await?;
        if stored.is_none_or(|user| user.deactivated) {
            return Err(Error::not_found(format!("user_id {invitee} is not a user of this server")));
        }
    }
    let room_id =
        connections::send_request(&services.rooms, &services.db, &session.user_id, &invitee, body.note).await?;
    mark_direct(&services, &session.user_id, invitee.as_str(), room_id.as_str()).await;
    Ok(Json(json!({ "room_id": room_id })))
}

/// POST .../requests/{roomId}/accept
pub async fn accept(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    services.check_user_rate_limit(&session.user_id)?;
    let room_id = parse_room_id(&room_id)?;
    let requester = connections::accept(&services.rooms, &services.db, &session.user_id, &room_id).await?;
    mark_direct(&services, &session.user_id, &requester, room_id.as_str()).await;
    Ok(Json(json!({ "room_id": room_id })))
}

/// Adds `room_id` under `other` to the user's `m.direct` account data, as a client does for a new direct chat.
/// The request has succeeded by now, so a failure here is logged and not returned.
async fn mark_direct(services: &Services, user: &ruma::UserId, other: &str, room_id: &str) {
    let stored = match storage::account_data::get(&services.db.pool, user.as_str(), "", "m.direct").await {
        Ok(stored) => stored,
        Err(err) => {
            tracing::warn!(%user, error = %err, "could not read m.direct");
            return;
        }
    };
    let mut direct: serde_json::Map<String, Value> =
        stored.and_then(|content| serde_json::from_str(&content).ok()).unwrap_or_default();
    let rooms = direct.entry(other.to_owned()).or_insert_with(|| json!([]));
    if !rooms.is_array() {
        *rooms = json!([]);
    }
    let list = rooms.as_array_mut().expect("made an array above");
    if list.iter().any(|room| room == room_id) {
        return;
    }
    list.push(json!(room_id));
    if let Err(err) = super::account_data::store(services, user, "", "m.direct", &Value::Object(direct)).await {
        tracing::warn!(%user, error = %err, "could not update m.direct");
    }
}

/// POST .../requests/{roomId}/decline
pub async fn decline(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    connections::decline(&services.rooms, &services.db, &session.user_id, &room_id).await?;
    Ok(Json(json!({})))
}

/// POST .../requests/{roomId}/withdraw
pub async fn withdraw(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    connections::withdraw(&services.rooms, &services.db, &session.user_id, &room_id).await?;
    Ok(Json(json!({})))
}

/// GET .../degree/{userId}
pub async fn degree(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let other = parse_user_id(&user_id, "userId")?;
    let degree = connections::degree(&services.db, &session.user_id, &other).await?;
    Ok(Json(json!(degree)))
}

/// GET .../metrics?from=&to=
pub async fn metrics(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<MetricsQuery>,
) -> Result<Json<Value>> {
    let from = query.from.unwrap_or(0);
    let to = query.to.unwrap_or_else(|| storage::now_ms().saturating_add(1));
    let metrics = connections::metrics(&services.db, &session.user_id, from, to).await?;
    Ok(Json(json!(metrics)))
}
