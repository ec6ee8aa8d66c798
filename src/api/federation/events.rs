//! Reading room events over federation (spec: Server-Server API, "Retrieving
//! events", "Backfilling and retrieving missing events"):
//! `GET /_matrix/federation/v1/event/{eventId}`, `/state/{roomId}`,
//! `/state_ids/{roomId}`, `/event_auth/{roomId}/{eventId}`,
//! `/backfill/{roomId}` and `POST /get_missing_events/{roomId}`.
//!
//! Events are served as stored: the signed PDU, without an `unsigned` object.
//! A server may read an event when one of its users could read it under the
//! room's history visibility, or when the room's history is `world_readable`
//! (spec: "Authorization of the request"). Other events are left out, and a
//! request that names an event the server may not read gets 403 `M_FORBIDDEN`.

use std::{
    collections::{BinaryHeap, HashMap, HashSet},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    routing::{get, post},
};
use ruma::{EventId, OwnedRoomId, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::FederationAuth;
use crate::{
    Services,
    api::{Path, Query},
    error::{Error, Result},
    rooms::visibility::Visibility,
    storage::{self, events::StoredEvent},
};

/// Maximum number of events returned by one backfill or get_missing_events request.
const MAX_EVENTS: usize = 100;

/// Maximum number of events visited while walking back through a room's history for one request.
const MAX_WALK: usize = 2000;

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/event/{event_id}", get(event))
        .route("/_matrix/federation/v1/state/{room_id}", get(state))
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(state_ids))
        .route("/_matrix/federation/v1/event_auth/{room_id}/{event_id}", get(event_auth))
        .route("/_matrix/federation/v1/backfill/{room_id}", get(backfill))
        .route("/_matrix/federation/v1/get_missing_events/{room_id}", post(get_missing_events))
}

/// The history visibility of a room for one server: the rules applied to each
/// of its users that ever had a membership there, and to an outsider.
struct ServerView {
    viewers: Vec<Visibility>,
}

impl ServerView {
    async fn load(services: &Services, room_id: &RoomId, server: &ServerName) -> Result<Self> {
        let pool = &services.db.pool;
        let rows = sqlx::query(
            "SELECT DISTINCT state_key FROM events WHERE room_id = $1 AND event_type = 'm.room.member' \
             AND state_key IS NOT NULL",
        )
        .bind(room_id.as_str())
        .fetch_all(pool)
        .await?;
        let mut viewers = vec![Visibility::load_outsider(pool, room_id).await?];
        for row in rows {
            let state_key: String = row.try_get(0)?;
            let Ok(user_id) = UserId::parse(&state_key) else {
                continue;
            };
            if user_id.server_name() == server {
                viewers.push(Visibility::load(pool, room_id, &user_id).await?);
            }
        }
        Ok(Self { viewers })
    }

    fn can_see(&self, event: &StoredEvent) -> bool {
        self.viewers.iter().any(|viewer| viewer.can_see(event.stream))
    }
}

fn parse_room_id(room_id: &str) -> Result<OwnedRoomId> {
    RoomId::parse(room_id).map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))
}

fn parse_event_id(event_id: &str, field: &str) -> Result<ruma::OwnedEventId> {
    EventId::parse(event_id).map_err(|e| Error::invalid_param(format!("{field} {event_id:?} is invalid: {e}")))
}

/// Converts a stored event to the PDU sent to other servers: the signed JSON without `unsigned`.
fn federation_pdu(event: &StoredEvent) -> Result<Value> {
    let mut value: Value =
        serde_json::from_str(&event.pdu.json).map_err(|e| Error::internal("reading a stored PDU", e))?;
    if let Some(object) = value.as_object_mut() {
        object.remove("unsigned");
    }
    Ok(value)
}

fn federation_pdus(events: &[StoredEvent]) -> Result<Vec<Value>> {
    events.iter().map(federation_pdu).collect()
}

/// Builds the transaction body that the event and backfill endpoints return.
fn transaction(services: &Services, pdus: Vec<Value>) -> Json<Value> {
    Json(json!({
        "origin": services.server_name,
        "origin_server_ts": storage::now_ms(),
        "pdus": pdus,
    }))
}

/// Checks that the room is known and that `origin` may see something of it.
async fn room_view(services: &Services, room_id: &RoomId, origin: &ServerName) -> Result<ServerView> {
    if !services.rooms.exists(room_id).await? {
        return Err(Error::not_found(format!("room {room_id} is not known to this server")));
    }
    ServerView::load(services, room_id, origin).await
}

/// Loads an event of `room_id` that `origin` may see: 404 when it is not in
/// the room, 403 when the server may not see it.
async fn visible_event(
    services: &Services,
    view: &ServerView,
    room_id: &RoomId,
    event_id: &EventId,
    origin: &ServerName,
) -> Result<StoredEvent> {
    let event = storage::events::get(&services.db.pool, event_id.as_str())
        .await?
        .filter(|event| event.pdu.room_id == room_id)
        .ok_or_else(|| Error::not_found(format!("event {event_id} not found in room {room_id}")))?;
    if !view.can_see(&event) {
        tracing::info!(%origin, %event_id, %room_id, "rejected a federation read of an event the server may not see");
        return Err(Error::forbidden(format!("{origin} may not see event {event_id} in room {room_id}")));
    }
    Ok(event)
}

/// GET /_matrix/federation/v1/event/{eventId}
///
/// Serves timeline events and outliers (events held outside the timeline,
/// such as auth chain events from `send_join` and soft-failed events).
async fn event(
    State(services): State<Arc<Services>>,
    Path(event_id): Path<String>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let event_id = parse_event_id(&event_id, "eventId")?;
    let not_found = || Error::not_found(format!("event {event_id} not found"));
    let Some(event) = storage::events::get(&services.db.pool, event_id.as_str()).await? else {
        let outlier = storage::outliers::get_many(&services.db.pool, &[event_id.to_string()])
            .await?
            .pop()
            .ok_or_else(not_found)?;
        if !services.rooms.exists(&outlier.pdu.room_id).await? {
            return Err(not_found());
        }
        if !services.rooms.server_may_see_outlier(&outlier, &auth.origin).await? {
            tracing::info!(origin = %auth.origin, %event_id, "rejected a federation read of an outlier the server may not see");
            return Err(Error::forbidden(format!("{} may not see event {event_id}", auth.origin)));
        }
        return Ok(transaction(&services, vec![federation_pdu(&outlier)?]));
    };
    let view = ServerView::load(&services, &event.pdu.room_id, &auth.origin).await?;
    if !view.can_see(&event) {
        tracing::info!(origin = %auth.origin, %event_id, "rejected a federation read of an event the server may not see");
        return Err(Error::forbidden(format!("{} may not see event {event_id}", auth.origin)));
    }
    Ok(transaction(&services, vec![federation_pdu(&event)?]))
}

#[derive(Deserialize)]
struct AtEventQuery {
    event_id: Option<String>,
}

/// Lists the event ids of the room state before `event`, which the event was
/// checked against. This is the state after it, with its own state entry undone.
async fn state_before(services: &Services, event: &StoredEvent) -> Result<Vec<String>> {
    let mut state = storage::state::load_group(&services.db.pool, event.state_group).await?;
    if let Some(state_key) = &event.pdu.state_key {
        let key = (event.pdu.kind.to_string(), state_key.clone());
        match &event.replaces_state {
            Some(previous) => state.insert(key, previous.clone()),
            None => state.remove(&key),
        };
    }
    let mut ids: Vec<String> = state.into_values().collect();
    ids.sort();
    Ok(ids)
}

/// Loads events by id, in the order of `ids`.
async fn load_in_order(services: &Services, ids: &[String]) -> Result<Vec<StoredEvent>> {
    let mut found: HashMap<String, StoredEvent> = storage::events::get_many(&services.db.pool, ids)
        .await?
        .into_iter()
        .map(|event| (event.pdu.event_id.to_string(), event))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// Collects the full auth chain of `events`: their auth events, recursively, without
/// the events themselves unless they are reached as an auth event. The room's
/// create event is always part of it, also in room versions whose events do
/// not list it in `auth_events`. Sorted by depth, then event id.
async fn auth_chain(services: &Services, room_id: &RoomId, events: &[StoredEvent]) -> Result<Vec<StoredEvent>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut chain = Vec::new();
    let create = services.rooms.state(room_id).await?.create_event().map(|create| create.event_id.to_string());
    let mut frontier: Vec<String> = events
        .iter()
        .flat_map(|event| event.pdu.auth_events.iter().map(ToString::to_string))
        .chain(create)
        .filter(|id| seen.insert(id.clone()))
        .collect();
    while !frontier.is_empty() {
        let found = storage::events::get_many(&services.db.pool, &frontier).await?;
        frontier = found
            .iter()
            .flat_map(|event| event.pdu.auth_events.iter().map(ToString::to_string))
            .filter(|id| seen.insert(id.clone()))
            .collect();
        chain.extend(found);
    }
    chain.sort_by(|a, b| (a.pdu.depth, &a.pdu.event_id).cmp(&(b.pdu.depth, &b.pdu.event_id)));
    Ok(chain)
}

/// Resolves `event_id` of a state request: a visible event of the room.
async fn state_request(
    services: &Services,
    room_id: &str,
    query: AtEventQuery,
    origin: &ServerName,
) -> Result<(Vec<StoredEvent>, Vec<StoredEvent>)> {
    let room_id = parse_room_id(room_id)?;
    let event_id = query.event_id.ok_or_else(|| Error::missing_param("the event_id query parameter is required"))?;
    let event_id = parse_event_id(&event_id, "event_id")?;
    let view = room_view(services, &room_id, origin).await?;
    let event = visible_event(services, &view, &room_id, &event_id, origin).await?;
    let state = load_in_order(services, &state_before(services, &event).await?).await?;
    let chain = auth_chain(services, &room_id, &state).await?;
    Ok((state, chain))
}

fn ids(events: &[StoredEvent]) -> Vec<String> {
    events.iter().map(|event| event.pdu.event_id.to_string()).collect()
}

/// GET /_matrix/federation/v1/state/{roomId}?event_id=
async fn state(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    Query(query): Query<AtEventQuery>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let (state, chain) = state_request(&services, &room_id, query, &auth.origin).await?;
    Ok(Json(json!({ "pdus": federation_pdus(&state)?, "auth_chain": federation_pdus(&chain)? })))
}

/// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=
async fn state_ids(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    Query(query): Query<AtEventQuery>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let (state, chain) = state_request(&services, &room_id, query, &auth.origin).await?;
    Ok(Json(json!({ "pdu_ids": ids(&state), "auth_chain_ids": ids(&chain) })))
}

/// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
async fn event_auth(
    State(services): State<Arc<Services>>,
    Path((room_id, event_id)): Path<(String, String)>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id, "eventId")?;
    let view = room_view(&services, &room_id, &auth.origin).await?;
    let event = visible_event(&services, &view, &room_id, &event_id, &auth.origin).await?;
    let chain = auth_chain(&services, &room_id, std::slice::from_ref(&event)).await?;
    Ok(Json(json!({ "auth_chain": federation_pdus(&chain)? })))
}

/// Walks the room DAG backwards from `start` through `prev_events`, newest
/// first (by depth, then stream order), and returns at most `limit` events
/// that `accept` keeps. Events in `stop` are neither returned nor walked past.
async fn walk_back(
    services: &Services,
    room_id: &RoomId,
    start: Vec<StoredEvent>,
    stop: &HashSet<String>,
    limit: usize,
    accept: impl Fn(&StoredEvent) -> bool,
) -> Result<Vec<StoredEvent>> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut heap = BinaryHeap::new();
    let mut pending: HashMap<String, StoredEvent> = HashMap::new();
    for event in start {
        let id = event.pdu.event_id.to_string();
        if event.pdu.room_id == room_id && !stop.contains(&id) && seen.insert(id.clone()) {
            heap.push((event.pdu.depth, event.stream, id.clone()));
            pending.insert(id, event);
        }
    }
    let mut out = Vec::new();
    let mut visited = 0;
    while let Some((_, _, id)) = heap.pop() {
        if out.len() >= limit || visited >= MAX_WALK {
            break;
        }
        visited += 1;
        let Some(event) = pending.remove(&id) else {
            continue;
        };
        let prev: Vec<String> = event
            .pdu
            .prev_events
            .iter()
            .map(ToString::to_string)
            .filter(|id| !stop.contains(id) && seen.insert(id.clone()))
            .collect();
        for found in storage::events::get_many(&services.db.pool, &prev).await? {
            if found.pdu.room_id == room_id {
                let id = found.pdu.event_id.to_string();
                heap.push((found.pdu.depth, found.stream, id.clone()));
                pending.insert(id, found);
            }
        }
        if accept(&event) {
            out.push(event);
        }
    }
    Ok(out)
}

/// Reads the repeated `v` and the `limit` parameters of a backfill request.
fn backfill_params(raw: Option<&str>) -> Result<(Vec<String>, usize)> {
    let mut starts = Vec::new();
    let mut limit = None;
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "v" => starts.push(parse_event_id(&value, "v")?.to_string()),
            "limit" => {
                let parsed: usize = value
                    .parse()
                    .map_err(|_| Error::invalid_param(format!("limit {value:?} is not a non-negative integer")))?;
                limit = Some(parsed);
            }
            _ => {}
        }
    }
    if starts.is_empty() {
        return Err(Error::missing_param("the v query parameter is required (the event ids to start from)"));
    }
    let limit = limit.ok_or_else(|| Error::missing_param("the limit query parameter is required"))?;
    Ok((starts, limit.min(MAX_EVENTS)))
}

/// GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=
async fn backfill(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    RawQuery(raw): RawQuery,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let (starts, limit) = backfill_params(raw.as_deref())?;
    let view = room_view(&services, &room_id, &auth.origin).await?;
    let start = load_in_order(&services, &starts).await?;
    if start.is_empty() || start.iter().all(|event| event.pdu.room_id != room_id) {
        return Err(Error::not_found(format!("none of the events in v is known in room {room_id}")));
    }
    if !start.iter().any(|event| view.can_see(event)) {
        return Err(Error::forbidden(format!("{} may not see the history of room {room_id}", auth.origin)));
    }
    let events = walk_back(&services, &room_id, start, &HashSet::new(), limit, |e| view.can_see(e)).await?;
    Ok(transaction(&services, federation_pdus(&events)?))
}

#[derive(Deserialize)]
struct MissingEventsBody {
    #[serde(default)]
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    limit: Option<usize>,
    min_depth: Option<i64>,
}

/// POST /_matrix/federation/v1/get_missing_events/{roomId}
async fn get_missing_events(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let body: MissingEventsBody = serde_json::from_slice(&auth.body)
        .map_err(|e| Error::bad_json(format!("invalid get_missing_events body: {e}")))?;
    if body.latest_events.is_empty() {
        return Err(Error::bad_json("latest_events is empty: it must list at least one event id"));
    }
    for id in body.earliest_events.iter().chain(&body.latest_events) {
        parse_event_id(id, "event id")?;
    }
    let view = room_view(&services, &room_id, &auth.origin).await?;
    let latest = load_in_order(&services, &body.latest_events).await?;
    if !latest.iter().any(|event| event.pdu.room_id == room_id && view.can_see(event)) {
        return Err(Error::forbidden(format!("{} may not see any of latest_events in room {room_id}", auth.origin)));
    }
    let limit = body.limit.unwrap_or(10).min(MAX_EVENTS);
    let min_depth = body.min_depth.unwrap_or(0);
    let stop: HashSet<String> = body.earliest_events.iter().cloned().collect();
    let latest_ids: HashSet<String> = body.latest_events.iter().cloned().collect();
    // The caller already has the latest events, so the missing ones are those before them.
    let mut events = walk_back(&services, &room_id, latest, &stop, limit + latest_ids.len(), |event| {
        !latest_ids.contains(event.pdu.event_id.as_str()) && event.pdu.depth >= min_depth && view.can_see(event)
    })
    .await?;
    events.truncate(limit);
    events.reverse();
    Ok(Json(json!({ "events": federation_pdus(&events)? })))
}
