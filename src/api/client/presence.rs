//! Presence (spec: Client-Server API, "Presence").

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::parse_user_id;
use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    storage::{self, writer::Stream},
};

/// Stores a presence change and wakes the users who share a room with `user`.
/// A `status_msg` of `None` keeps the stored message, and `Some(None)` clears it.
/// With `only_if_changed`, an unchanged state writes nothing (used by `/sync`'s `set_presence`).
pub async fn update(
    services: &Services,
    user: &UserId,
    state: &str,
    status_msg: Option<Option<String>>,
    only_if_changed: bool,
) -> Result<()> {
    let pool = &services.db.pool;
    if only_if_changed
        && let Some(current) = storage::users::get_presence(pool, user.as_str()).await?
        && current.state == state
        && storage::now_ms() - current.last_active_ts < 60_000
    {
        return Ok(());
    }
    let status_msg = match status_msg {
        Some(msg) => msg,
        None => storage::users::get_presence(pool, user.as_str()).await?.and_then(|p| p.status_msg),
    };
    let user_owned = user.to_string();
    let state_owned = state.to_owned();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let stream = txn.next_position(Stream::Presence);
                storage::users::set_presence(
                    &mut txn.conn,
                    &user_owned,
                    &state_owned,
                    status_msg.as_deref(),
                    storage::now_ms(),
                    stream,
                )
                .await?;
                Ok(())
            })
        })
        .await?;
    let audience: Vec<ruma::OwnedUserId> = storage::rooms::users_sharing_rooms(pool, user.as_str())
        .await?
        .into_iter()
        .filter_map(|u| ruma::OwnedUserId::try_from(u).ok())
        .collect();
    services.notifier.wake(audience.iter().map(|u| &**u));
    Ok(())
}

/// GET /_matrix/client/v3/presence/{userId}/status
pub async fn get(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    let pool = &services.db.pool;
    if user_id != session.user_id {
        let shared = storage::rooms::users_sharing_rooms(pool, session.user_id.as_str()).await?;
        if !shared.iter().any(|u| u == user_id.as_str()) {
            return Err(Error::forbidden(format!("you share no room with {user_id}, so their presence is hidden")));
        }
    }
    if storage::users::get(pool, user_id.as_str()).await?.is_none() {
        return Err(Error::not_found(format!("user {user_id} not found")));
    }
    let Some(presence) = storage::users::get_presence(pool, user_id.as_str()).await? else {
        return Ok(Json(json!({ "presence": "offline" })));
    };
    let mut body = json!({
        "presence": presence.state,
        "last_active_ago": (storage::now_ms() - presence.last_active_ts).max(0),
        "currently_active": presence.state == "online",
    });
    if let Some(msg) = presence.status_msg {
        body["status_msg"] = json!(msg);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

/// PUT /_matrix/client/v3/presence/{userId}/status
pub async fn set(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<PresenceBody>,
) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    if user_id != session.user_id {
        return Err(Error::forbidden("you can only set your own presence"));
    }
    if !matches!(body.presence.as_str(), "online" | "offline" | "unavailable") {
        return Err(Error::invalid_param(format!(
            "presence {:?} is invalid: expected online, offline or unavailable",
            body.presence
        )));
    }
    // A PUT sets the whole status, so a missing or empty `status_msg` clears the old one.
    let status_msg = body.status_msg.filter(|m| !m.is_empty());
    update(&services, &user_id, &body.presence, Some(status_msg), false).await?;
    Ok(Json(json!({})))
}
