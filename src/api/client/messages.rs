//! Reading a room's timeline (spec: Client-Server API, "Getting events for a
//! room"): one event, `/messages` pagination in both directions, and `/context`.

use std::{collections::HashSet, sync::Arc};

use axum::{Json, extract::State};
use ruma::{EventId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::parse_room_id;
use crate::{
    Services,
    api::{Auth, Path, Query},
    error::{Error, Result},
    rooms::{
        serialize::{Viewer, client_events, client_events_bundled},
        visibility::Visibility,
    },
    storage::{self, backfill::EDGE_STATE_TOP, events::StoredEvent},
    sync::{
        filter::RoomEventFilter,
        token::{pagination_token, parse_pagination},
    },
    users::Session,
};

/// Largest page `/messages` and `/context` return.
const MAX_LIMIT: i64 = 1000;

/// Time that one request may spend backfilling history from other servers.
const BACKFILL_TIME: std::time::Duration = std::time::Duration::from_secs(15);

/// Backfill batches that one request may fetch.
const MAX_BACKFILL_BATCHES: usize = 20;

/// The visibility rules for a user who has, or had, a membership in the room.
pub(super) async fn visibility_for(services: &Services, room_id: &RoomId, user: &UserId) -> Result<Visibility> {
    let pool = &services.db.pool;
    let membership = storage::rooms::membership(pool, room_id.as_str(), user.as_str()).await?;
    let world_readable = services.rooms.exists(room_id).await?
        && services
            .rooms
            .state(room_id)
            .await?
            .content(&ruma::events::StateEventType::RoomHistoryVisibility, "")
            .get("history_visibility")
            .and_then(Value::as_str)
            == Some("world_readable");
    if membership.is_none() && !world_readable {
        return Err(Error::forbidden(format!("you are not a member of room {room_id}")));
    }
    Visibility::load(pool, room_id, user).await
}

/// Returns whether an event is a non-state event of a user the viewer ignores.
fn is_ignored(ignored: &HashSet<String>, event: &StoredEvent) -> bool {
    event.pdu.state_key.is_none() && ignored.contains(event.pdu.sender.as_str())
}

fn viewer<'a>(session: &'a Session, ignored: &'a HashSet<String>) -> Viewer<'a> {
    Viewer { user_id: &session.user_id, device_id: &session.device_id, ignored }
}

/// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
pub async fn event(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    let visibility = visibility_for(&services, &room_id, &session.user_id).await?;
    let not_found = || Error::not_found(format!("event {event_id} not found"));
    let event = storage::events::get(&services.db.pool, event_id.as_str()).await?.ok_or_else(not_found)?;
    if event.pdu.room_id != room_id || !visibility.can_see(event.stream) {
        return Err(not_found());
    }
    // Room versions 3 and later show a redaction to clients only once it applies to its target.
    if storage::redactions::is_held(&services.db.pool, event_id.as_str()).await? {
        return Err(not_found());
    }
    let ignored = services.users.ignored.of(&session.user_id).await?;
    let mut events = client_events_bundled(&services.db.pool, &[event], viewer(&session, &ignored), true).await?;
    Ok(Json(json!(events.pop())))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: String,
    limit: Option<i64>,
    filter: Option<String>,
}

/// Reads up to `limit` visible, filtered events of `user` from `from` in one
/// direction. Backwards, `from` is included; forwards, it is excluded.
/// Backwards, reaching the bottom of a gap in the history (see
/// `storage::backfill`) fills the gap from other servers. Backwards without
/// `to`, reaching the oldest stored event backfills older history. Both stop
/// after a time bound, and when they fail, the response has the stored
/// events. Returns the events in the order read and the token after the
/// last event read.
#[allow(clippy::too_many_arguments)]
async fn paginate(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    visibility: &mut Visibility,
    filter: &RoomEventFilter,
    from: i64,
    to: Option<i64>,
    backwards: bool,
    limit: usize,
) -> Result<(Vec<StoredEvent>, Option<i64>)> {
    let pool = &services.db.pool;
    let mut picked = Vec::new();
    let mut position = from;
    let chunk = (limit as i64 + 1).max(20);
    let deadline = tokio::time::Instant::now() + BACKFILL_TIME;
    let mut batches = 0;
    // The edge state lies below the timeline (see `storage::backfill`).
    let lowest = to.unwrap_or(EDGE_STATE_TOP).max(EDGE_STATE_TOP);
    let mut gaps = if backwards {
        storage::backfill::gaps(pool, room_id.as_str()).await?.into_iter().filter(|g| g.floor >= lowest).collect()
    } else {
        Vec::new()
    };
    loop {
        // Below the top of an open gap, reading stops at its floor until it is filled.
        let gap = gaps.iter().find(|g| g.floor < position).copied();
        let rows = if backwards {
            let lower = gap.map_or(lowest, |g| g.floor);
            storage::events::room_range(pool, room_id, lower, position, chunk, true).await?
        } else {
            let upper = to.unwrap_or(i64::MAX);
            storage::events::room_range(pool, room_id, position, upper, chunk, false).await?
        };
        if rows.is_empty() && gap.is_some() {
            let filled = if batches < MAX_BACKFILL_BATCHES {
                batches += 1;
                services.rooms.backfill(room_id, gap, deadline).await.unwrap_or_else(|err| {
                    tracing::warn!(%room_id, error = %err.message, "backfilling a gap failed");
                    0
                })
            } else {
                0
            };
            if filled > 0 {
                *visibility = Visibility::load(pool, room_id, user).await?;
            } else {
                // Unreachable for now: the events below it come next.
                gaps.retain(|g| Some(*g) != gap);
            }
            continue;
        }
        if rows.is_empty() {
            if backwards && to.is_none() && batches < MAX_BACKFILL_BATCHES {
                batches += 1;
                match services.rooms.backfill(room_id, None, deadline).await {
                    Ok(0) => {}
                    Ok(_) => {
                        // Backfilled member and history visibility events change what the user may see.
                        *visibility = Visibility::load(pool, room_id, user).await?;
                        continue;
                    }
                    Err(err) => tracing::warn!(%room_id, error = %err.message, "backfill failed"),
                }
            }
            return Ok((picked, None));
        }
        for event in rows {
            position = if backwards { event.stream - 1 } else { event.stream };
            if visibility.can_see(event.stream) && filter.allows(&event.pdu) {
                picked.push(event);
                if picked.len() == limit {
                    return Ok((picked, Some(position)));
                }
            }
        }
    }
}

/// GET /_matrix/client/v3/rooms/{roomId}/messages
pub async fn messages(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let backwards = match query.dir.as_str() {
        "b" => true,
        "f" => false,
        other => {
            return Err(Error::invalid_param(format!("dir {other:?} is invalid: expected \"b\" or \"f\"")));
        }
    };
    let limit = query.limit.unwrap_or(10);
    if limit < 0 {
        return Err(Error::invalid_param("limit must not be negative"));
    }
    let limit = limit.min(MAX_LIMIT) as usize;
    let filter = match &query.filter {
        Some(f) => serde_json::from_str::<RoomEventFilter>(f)
            .map_err(|e| Error::bad_json(format!("filter is invalid: {e}")))?,
        None => RoomEventFilter::default(),
    };
    let mut visibility = visibility_for(&services, &room_id, &session.user_id).await?;
    let current = crate::sync::assemble::current_token(&services).events;
    let from = match &query.from {
        Some(token) => parse_pagination(token, "from")?,
        None if backwards => current,
        None => EDGE_STATE_TOP,
    };
    // A user who left reads nothing after their leave.
    let from = match visibility.left_at() {
        Some(left) if backwards => from.min(left),
        _ => from,
    };
    let to = query.to.as_deref().map(|t| parse_pagination(t, "to")).transpose()?;
    let upper = match visibility.left_at() {
        Some(left) if !backwards => Some(to.map_or(left, |t| t.min(left))),
        _ => to,
    };
    if limit == 0 {
        return Ok(Json(json!({ "chunk": [], "start": pagination_token(from) })));
    }
    let user = &session.user_id;
    let (mut events, end) =
        paginate(&services, &room_id, user, &mut visibility, &filter, from, upper, backwards, limit).await?;
    // The page may come out short, which the spec allows: `end` still moves on.
    let ignored = services.users.ignored.of(&session.user_id).await?;
    events.retain(|event| !is_ignored(&ignored, event));

    let mut state = Vec::new();
    if filter.lazy_load() {
        let room = services.rooms.state(&room_id).await?;
        let mut senders: Vec<String> = events.iter().map(|e| e.pdu.sender.to_string()).collect();
        senders.sort();
        senders.dedup();
        let ids: Vec<String> = senders
            .iter()
            .filter_map(|s| room.get(&ruma::events::StateEventType::RoomMember, s).map(|p| p.event_id.to_string()))
            .collect();
        state = storage::events::get_many(&services.db.pool, &ids).await?;
    }

    let mut body = json!({
        "chunk": client_events_bundled(&services.db.pool, &events, viewer(&session, &ignored), true).await?,
        "start": pagination_token(from),
    });
    if let Some(end) = end {
        body["end"] = json!(pagination_token(end));
    }
    if !state.is_empty() {
        body["state"] = json!(client_events(&services.db.pool, &state, None, true).await?);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<i64>,
    filter: Option<String>,
}

/// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
pub async fn context(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(query): Query<ContextQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = EventId::parse(&event_id)
        .map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    let limit = query.limit.unwrap_or(10);
    if limit < 0 {
        return Err(Error::invalid_param("limit must not be negative"));
    }
    let limit = limit.min(MAX_LIMIT) as usize;
    let filter = match &query.filter {
        Some(f) => serde_json::from_str::<RoomEventFilter>(f)
            .map_err(|e| Error::bad_json(format!("filter is invalid: {e}")))?,
        None => RoomEventFilter::default(),
    };
    let mut visibility = visibility_for(&services, &room_id, &session.user_id).await?;
    let pool = &services.db.pool;
    let not_found = || Error::not_found(format!("event {event_id} not found"));
    let event = storage::events::get(pool, event_id.as_str()).await?.ok_or_else(not_found)?;
    if event.pdu.room_id != room_id
        || !visibility.can_see(event.stream)
        || storage::redactions::is_held(pool, event_id.as_str()).await?
    {
        return Err(not_found());
    }
    let before_count = limit / 2;
    let after_count = limit - before_count;
    let user = &session.user_id;
    let (before, start) = if before_count > 0 {
        let from = event.stream - 1;
        paginate(&services, &room_id, user, &mut visibility, &filter, from, None, true, before_count).await?
    } else {
        (Vec::new(), Some(event.stream - 1))
    };
    let upper = visibility.left_at();
    let (after, end) = if after_count > 0 {
        paginate(&services, &room_id, user, &mut visibility, &filter, event.stream, upper, false, after_count).await?
    } else {
        (Vec::new(), Some(event.stream))
    };
    let last_stream = after.last().map_or(event.stream, |e| e.stream);
    let ignored = services.users.ignored.of(&session.user_id).await?;
    let before: Vec<StoredEvent> = before.into_iter().filter(|e| !is_ignored(&ignored, e)).collect();
    let after: Vec<StoredEvent> = after.into_iter().filter(|e| !is_ignored(&ignored, e)).collect();
    let state = match storage::events::room_range(pool, &room_id, i64::MIN, last_stream, 1, true).await?.pop() {
        Some(latest) => storage::state::load_group(pool, latest.state_group).await?,
        None => Default::default(),
    };
    let mut state_events = storage::events::get_many(pool, &state.into_values().collect::<Vec<_>>()).await?;
    state_events.sort_by_key(|e| e.stream);

    let viewer = viewer(&session, &ignored);
    Ok(Json(json!({
        "event": client_events_bundled(pool, &[event.clone()], viewer, true).await?.pop(),
        "events_before": client_events_bundled(pool, &before, viewer, true).await?,
        "events_after": client_events_bundled(pool, &after, viewer, true).await?,
        "start": pagination_token(start.unwrap_or(EDGE_STATE_TOP)),
        "end": pagination_token(end.unwrap_or(last_stream)),
        "state": client_events(pool, &state_events, None, true).await?,
    })))
}
