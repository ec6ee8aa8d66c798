//! Reporting content (spec: Client-Server API, "Reporting content"): users
//! report events, rooms and other users to the server's operators, who list
//! the reports with `lattice reports`.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{EventId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{messages::visibility_for, rooms::parse_room_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    storage::{self, reports::NewReport},
    users::Session,
};

/// The maximum length of a reason, in characters.
const MAX_REASON: usize = 10_000;

#[derive(Deserialize)]
pub struct EventReport {
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct Report {
    reason: String,
}

fn check_reason(reason: Option<&str>) -> Result<()> {
    let length = reason.map_or(0, |r| r.chars().count());
    if length > MAX_REASON {
        return Err(Error::invalid_param(format!("reason is too long: {length} characters, at most {MAX_REASON}")));
    }
    Ok(())
}

async fn store(services: &Services, session: &Session, report: NewReport<'_>) -> Result<()> {
    check_reason(report.reason)?;
    services.check_user_rate_limit(&session.user_id)?;
    let (reporter, kind) = (report.reporter.to_owned(), report.kind.to_owned());
    let (room_id, event_id) = (report.room_id.map(str::to_owned), report.event_id.map(str::to_owned));
    let (user_id, reason) = (report.user_id.map(str::to_owned), report.reason.map(str::to_owned));
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let report = NewReport {
                    reporter: &reporter,
                    kind: &kind,
                    room_id: room_id.as_deref(),
                    event_id: event_id.as_deref(),
                    user_id: user_id.as_deref(),
                    reason: reason.as_deref(),
                };
                storage::reports::insert(&mut txn.conn, &report, storage::now_ms()).await?;
                Ok(())
            })
        })
        .await?;
    // The ids only: a reason may quote what was reported.
    tracing::info!(
        reporter = %session.user_id,
        kind = report.kind,
        room_id = report.room_id,
        event_id = report.event_id,
        user_id = report.user_id,
        "report received"
    );
    Ok(())
}

/// POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
pub async fn event(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<EventReport>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    // Only a member of the room who can see the event may report it.
    let not_found = || Error::not_found(format!("event {event_id} not found in a room you are joined to"));
    let joined = storage::rooms::membership(&services.db.pool, room_id.as_str(), session.user_id.as_str())
        .await?
        .is_some_and(|m| m.membership == "join");
    if !joined {
        return Err(not_found());
    }
    let visibility = visibility_for(&services, &room_id, &session.user_id).await?;
    let event = storage::events::get(&services.db.pool, event_id.as_str()).await?.ok_or_else(not_found)?;
    if event.pdu.room_id != room_id || !visibility.can_see(event.stream) {
        return Err(not_found());
    }
    let report = NewReport {
        reporter: session.user_id.as_str(),
        kind: "event",
        room_id: Some(room_id.as_str()),
        event_id: Some(event_id.as_str()),
        user_id: Some(event.pdu.sender.as_str()),
        reason: body.reason.as_deref(),
    };
    store(&services, &session, report).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/rooms/{roomId}/report
pub async fn room(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<Report>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    if !services.rooms.exists(&room_id).await? {
        return Err(Error::not_found(format!("room {room_id} not found")));
    }
    let report = NewReport {
        reporter: session.user_id.as_str(),
        kind: "room",
        room_id: Some(room_id.as_str()),
        event_id: None,
        user_id: None,
        reason: Some(&body.reason),
    };
    store(&services, &session, report).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/users/{userId}/report
pub async fn user(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<Report>,
) -> Result<Json<Value>> {
    let user_id =
        UserId::parse(&user_id).map_err(|e| Error::invalid_param(format!("user id {user_id:?} is invalid: {e}")))?;
    // Users of other servers cannot be checked here, so only local ones must exist.
    if user_id.server_name() == services.server_name
        && storage::users::get(&services.db.pool, user_id.as_str()).await?.is_none()
    {
        return Err(Error::not_found(format!("user {user_id} not found")));
    }
    let report = NewReport {
        reporter: session.user_id.as_str(),
        kind: "user",
        room_id: None,
        event_id: None,
        user_id: Some(user_id.as_str()),
        reason: Some(&body.reason),
    };
    store(&services, &session, report).await?;
    Ok(Json(json!({})))
}
