//! Event relationships (spec: Client-Server API, "Relationships API" and
//! "Querying threads in a room"): the child events of an event, and the
//! threads of a room, most recently active first.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::EventId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{messages::visibility_for, rooms::parse_room_id};
use crate::{
    Services,
    api::{Auth, Path, Query},
    error::{Error, Result},
    rooms::serialize::{Viewer, client_events_bundled},
    storage::{
        self,
        events::StoredEvent,
        relations::{ChildQuery, MAX_RECURSION_DEPTH},
    },
    sync::token::{pagination_token, parse_pagination},
};

/// Page size when the client names none, and the largest it may ask for.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

#[derive(Deserialize)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    dir: Option<String>,
    recurse: Option<bool>,
}

fn page_limit(limit: Option<i64>) -> Result<i64> {
    match limit {
        Some(limit) if limit < 1 => Err(Error::invalid_param(format!("limit must be at least 1, not {limit}"))),
        Some(limit) => Ok(limit.min(MAX_LIMIT)),
        None => Ok(DEFAULT_LIMIT),
    }
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}
pub async fn all(
    State(services): State<Arc<Services>>,
    auth: Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(query): Query<RelationsQuery>,
) -> Result<Json<Value>> {
    children(&services, auth, &room_id, &event_id, None, None, query).await
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}
pub async fn of_type(
    State(services): State<Arc<Services>>,
    auth: Auth,
    Path((room_id, event_id, rel_type)): Path<(String, String, String)>,
    Query(query): Query<RelationsQuery>,
) -> Result<Json<Value>> {
    children(&services, auth, &room_id, &event_id, Some(&rel_type), None, query).await
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}
pub async fn of_type_and_event_type(
    State(services): State<Arc<Services>>,
    auth: Auth,
    Path((room_id, event_id, rel_type, event_type)): Path<(String, String, String, String)>,
    Query(query): Query<RelationsQuery>,
) -> Result<Json<Value>> {
    children(&services, auth, &room_id, &event_id, Some(&rel_type), Some(&event_type), query).await
}

async fn children(
    services: &Services,
    Auth(session): Auth,
    room_id: &str,
    event_id: &str,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    query: RelationsQuery,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let parent_id =
        EventId::parse(event_id).map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    let backwards = match query.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(other) => {
            return Err(Error::invalid_param(format!("dir {other:?} is invalid: expected \"b\" or \"f\"")));
        }
    };
    let limit = page_limit(query.limit)?;
    let pool = &services.db.pool;

    // The parent must be an event of the room that the user may see.
    let visibility = visibility_for(services, &room_id, &session.user_id).await?;
    let ignored = services.users.ignored.of(&session.user_id).await?;
    let not_found = || Error::not_found(format!("event {parent_id} not found"));
    let parent = storage::events::get(pool, parent_id.as_str()).await?.ok_or_else(not_found)?;
    if parent.pdu.room_id != room_id || !visibility.can_see(parent.stream) {
        return Err(not_found());
    }

    let current = crate::sync::assemble::current_token(services).events;
    let from = match &query.from {
        Some(token) => parse_pagination(token, "from")?,
        None if backwards => current,
        None => i64::MIN,
    };
    let to = query.to.as_deref().map(|t| parse_pagination(t, "to")).transpose()?;
    let depth = if query.recurse == Some(true) { MAX_RECURSION_DEPTH } else { 1 };

    // Children the user may not see are skipped, so a page reads on until it
    // is full or the children run out.
    let mut picked = Vec::new();
    let mut position = from;
    let mut next = None;
    loop {
        let rows = storage::relations::children(
            pool,
            &ChildQuery {
                parent: parent_id.as_str(),
                rel_type,
                event_type,
                from: position,
                to,
                backwards,
                limit: limit + 1,
                depth,
            },
        )
        .await?;
        let exhausted = rows.len() as i64 <= limit;
        let ids: Vec<String> = rows.iter().map(|child| child.event_id.clone()).collect();
        let mut loaded = storage::events::get_many(pool, &ids).await?;
        loaded.sort_by_key(|event| if backwards { -event.stream } else { event.stream });
        for event in loaded {
            if picked.len() as i64 == limit {
                next = Some(position);
                break;
            }
            position = if backwards { event.stream - 1 } else { event.stream };
            let ignored_sender = ignored.contains(event.pdu.sender.as_str());
            if visibility.can_see(event.stream) && !ignored_sender {
                picked.push(event);
            }
        }
        if next.is_some() || exhausted {
            break;
        }
    }

    let viewer = Viewer { user_id: &session.user_id, device_id: &session.device_id, ignored: &ignored };
    let mut body = json!({ "chunk": client_events_bundled(pool, &picked, viewer, true).await? });
    if let Some(next) = next {
        body["next_batch"] = json!(pagination_token(next));
    }
    if let Some(from) = &query.from {
        body["prev_batch"] = json!(from);
    }
    if query.recurse.is_some() {
        body["recursion_depth"] = json!(depth);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct ThreadsQuery {
    include: Option<String>,
    limit: Option<i64>,
    from: Option<String>,
}

/// GET /_matrix/client/v1/rooms/{roomId}/threads
pub async fn threads(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<ThreadsQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let participated = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "include {other:?} is invalid: expected \"all\" or \"participated\""
            )));
        }
    };
    let limit = page_limit(query.limit)?;
    let visibility = visibility_for(&services, &room_id, &session.user_id).await?;
    let ignored = services.users.ignored.of(&session.user_id).await?;
    let pool = &services.db.pool;
    // Tokens are the position of the latest reply of the last thread served.
    let mut before = match &query.from {
        Some(token) => parse_pagination(token, "from")?,
        None => i64::MAX,
    };
    let participant = participated.then_some(session.user_id.as_str());

    let mut picked = Vec::new();
    let mut next = None;
    loop {
        let roots = storage::relations::thread_roots(pool, room_id.as_str(), before, participant, limit + 1).await?;
        let exhausted = roots.len() as i64 <= limit;
        let ids: Vec<String> = roots.iter().map(|root| root.root_id.clone()).collect();
        let loaded = storage::events::get_many(pool, &ids).await?;
        for root in roots {
            if picked.len() as i64 == limit {
                next = Some(before);
                break;
            }
            before = root.latest;
            let event = loaded.iter().find(|e| e.pdu.event_id.as_str() == root.root_id);
            let visible_root = |e: &&StoredEvent| {
                e.pdu.room_id == room_id && visibility.can_see(e.stream) && !ignored.contains(e.pdu.sender.as_str())
            };
            if let Some(event) = event.filter(visible_root) {
                picked.push(event.clone());
            }
        }
        if next.is_some() || exhausted {
            break;
        }
    }

    let viewer = Viewer { user_id: &session.user_id, device_id: &session.device_id, ignored: &ignored };
    let mut body = json!({ "chunk": client_events_bundled(pool, &picked, viewer, true).await? });
    if let Some(next) = next {
        body["next_batch"] = json!(pagination_token(next));
    }
    Ok(Json(body))
}
