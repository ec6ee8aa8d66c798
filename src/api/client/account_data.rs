//! Client config: account data, global and per room (spec: Client-Server API, "Client Config").

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use ruma::{OwnedRoomId, RoomId};
use serde_json::{Map, Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    storage::{self, writer::Stream},
    users::{
        Session,
        ignored::{self, IGNORED_USER_LIST},
    },
};

fn check_own(session: &Session, user_id: &str) -> Result<()> {
    if session.user_id.as_str() != user_id {
        return Err(Error::forbidden("you can only access your own account data"));
    }
    Ok(())
}

fn check_settable(kind: &str) -> Result<()> {
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(Error::bad_json(format!("account data of type {kind} is managed by the server"))
            .with_status(StatusCode::METHOD_NOT_ALLOWED));
    }
    Ok(())
}

fn parse_room(room_id: &str) -> Result<OwnedRoomId> {
    RoomId::parse(room_id).map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))
}

/// Stores account data and wakes the user's `/sync`.
pub async fn store(services: &Services, user: &ruma::UserId, room_id: &str, kind: &str, content: &Value) -> Result<()> {
    let changes_ignored = room_id.is_empty() && kind == IGNORED_USER_LIST;
    let user_owned = user.to_string();
    let room = room_id.to_owned();
    let kind = kind.to_owned();
    let content = content.to_string();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let stream = txn.next_position(Stream::AccountData);
                storage::account_data::put(&mut txn.conn, &user_owned, &room, &kind, &content, stream).await?;
                Ok(())
            })
        })
        .await?;
    if changes_ignored {
        services.users.ignored.forget(user);
    }
    services.notifier.wake([user]);
    Ok(())
}

/// PUT /_matrix/client/v3/user/{userId}/account_data/{type}
pub async fn put_global(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((user_id, kind)): Path<(String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    check_own(&session, &user_id)?;
    check_settable(&kind)?;
    let content = Value::Object(content);
    if kind == IGNORED_USER_LIST {
        ignored::check_content(&content)?;
    }
    store(&services, &session.user_id, "", &kind, &content).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/user/{userId}/account_data/{type}
pub async fn get_global(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((user_id, kind)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_own(&session, &user_id)?;
    let content = storage::account_data::get(&services.db.pool, &user_id, "", &kind)
        .await?
        .ok_or_else(|| Error::not_found(format!("no account data of type {kind}")))?;
    Ok(Json(serde_json::from_str(&content).map_err(|e| Error::internal("reading account data", e))?))
}

/// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
pub async fn put_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((user_id, room_id, kind)): Path<(String, String, String)>,
    JsonBody(content): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    check_own(&session, &user_id)?;
    let room_id = parse_room(&room_id)?;
    check_settable(&kind)?;
    store(&services, &session.user_id, room_id.as_str(), &kind, &Value::Object(content)).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
pub async fn get_room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((user_id, room_id, kind)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_own(&session, &user_id)?;
    let room_id = parse_room(&room_id)?;
    let content = storage::account_data::get(&services.db.pool, &user_id, room_id.as_str(), &kind)
        .await?
        .ok_or_else(|| Error::not_found(format!("no account data of type {kind} in room {room_id}")))?;
    Ok(Json(serde_json::from_str(&content).map_err(|e| Error::internal("reading account data", e))?))
}
