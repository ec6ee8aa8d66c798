//! Presence (spec: Client-Server API, "Presence").

use std::{collections::BTreeSet, sync::Arc};

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
    if user.server_name() == services.server_name {
        send_out(services, user, &audience).await?;
    }
    Ok(())
}

/// Queues an `m.presence` EDU with the local `user`'s stored presence to every
/// other server that has a member in one of the user's rooms.
async fn send_out(services: &Services, user: &UserId, audience: &[ruma::OwnedUserId]) -> Result<()> {
    let servers: BTreeSet<&ruma::ServerName> =
        audience.iter().map(|u| u.server_name()).filter(|server| *server != services.server_name).collect();
    if servers.is_empty() {
        return Ok(());
    }
    let Some(presence) = storage::users::get_presence(&services.db.pool, user.as_str()).await? else {
        return Ok(());
    };
    let mut update = json!({
        "user_id": user,
        "presence": presence.state,
        "last_active_ago": (storage::now_ms() - presence.last_active_ts).max(0),
        "currently_active": presence.state == "online",
    });
    if let Some(msg) = presence.status_msg {
        update["status_msg"] = json!(msg);
    }
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [update] } });
    for server in servers {
        if let Err(err) = services.sender.queue_edu(server, &edu).await {
            tracing::warn!(error = %err, destination = %server, "could not queue a presence EDU");
        }
    }
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
    // Remote users have no account here; their presence comes from their server's EDUs.
    let local = user_id.server_name() == services.server_name;
    if local && storage::users::get(pool, user_id.as_str()).await?.is_none() {
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
