//! Server-side search (spec: Client-Server API, "Server Side Search"):
//! `POST /search` over the `room_events` category, in the rooms the user is
//! joined to, with history visibility applied to every result.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use axum::{Json, extract::State};
use ruma::{OwnedRoomId, RoomId, events::StateEventType};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Query},
    error::{Error, Result},
    rooms::{
        serialize::{Viewer, client_events, client_events_bundled},
        visibility::Visibility,
    },
    storage::{
        self,
        backfill::EDGE_STATE_TOP,
        events::StoredEvent,
        search::{SearchQuery, words},
    },
    sync::{filter::RoomEventFilter, token::pagination_token},
    users::Session,
};

const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
const DEFAULT_KEYS: [&str; 3] = ["content.body", "content.name", "content.topic"];
/// Matches read per query when results the user may not see are skipped.
const SCAN_BATCH: i64 = 100;

#[derive(Deserialize)]
pub struct SearchParams {
    next_batch: Option<String>,
}

#[derive(Deserialize)]
pub struct SearchBody {
    search_categories: Categories,
}

#[derive(Deserialize)]
pub struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
pub struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<RoomEventFilter>,
    order_by: Option<String>,
    event_context: Option<EventContext>,
    #[serde(default)]
    include_state: bool,
    groupings: Option<Groupings>,
}

#[derive(Deserialize)]
pub struct EventContext {
    before_limit: Option<u64>,
    after_limit: Option<u64>,
    #[serde(default)]
    include_profile: bool,
}

#[derive(Deserialize)]
pub struct Groupings {
    #[serde(default)]
    group_by: Vec<GroupBy>,
}

#[derive(Deserialize)]
pub struct GroupBy {
    key: String,
}

/// POST /_matrix/client/v3/search
pub async fn search(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(params): Query<SearchParams>,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<Value>> {
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let results = room_events(&services, &session, criteria, params.next_batch.as_deref()).await?;
    Ok(Json(json!({ "search_categories": { "room_events": results } })))
}

async fn room_events(
    services: &Services,
    session: &Session,
    criteria: RoomEventsCriteria,
    next_batch: Option<&str>,
) -> Result<Value> {
    let recent = match criteria.order_by.as_deref() {
        None | Some("rank") => false,
        Some("recent") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "order_by {other:?} is invalid: expected \"rank\" or \"recent\""
            )));
        }
    };
    let keys: Vec<String> = match criteria.keys {
        Some(keys) => {
            if let Some(bad) = keys.iter().find(|k| !DEFAULT_KEYS.contains(&k.as_str())) {
                return Err(Error::invalid_param(format!(
                    "keys contains {bad:?}: expected content.body, content.name or content.topic"
                )));
            }
            keys
        }
        None => DEFAULT_KEYS.iter().map(|k| (*k).to_owned()).collect(),
    };
    let group_keys: Vec<String> =
        criteria.groupings.map(|g| g.group_by.into_iter().map(|g| g.key).collect()).unwrap_or_default();
    if let Some(bad) = group_keys.iter().find(|k| !matches!(k.as_str(), "room_id" | "sender")) {
        return Err(Error::invalid_param(format!(
            "group_by key {bad:?} is invalid: expected \"room_id\" or \"sender\""
        )));
    }
    let offset: i64 = match next_batch {
        Some(token) => token
            .parse()
            .ok()
            .filter(|n: &i64| *n >= 0)
            .ok_or_else(|| Error::invalid_param(format!("next_batch {token:?} is not a token of this endpoint")))?,
        None => 0,
    };
    let filter = criteria.filter.unwrap_or_default();
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize;

    // The rooms searched: those the user is joined to, narrowed by the filter.
    let pool = &services.db.pool;
    let rooms: Vec<String> = storage::rooms::user_memberships(pool, session.user_id.as_str())
        .await?
        .into_iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.room_id)
        .filter(|room| {
            filter.rooms.as_ref().is_none_or(|list| list.contains(room))
                && filter.not_rooms.as_ref().is_none_or(|list| !list.contains(room))
        })
        .collect();

    let words = words(&criteria.search_term);
    services.search_index.catch_up().await?;
    let ignored = services.users.ignored.of(&session.user_id).await?;
    let mut visibilities: HashMap<String, Visibility> = HashMap::new();
    let mut picked: Vec<(StoredEvent, f64)> = Vec::new();
    let mut position = offset;
    let mut more = false;
    let backend = services.db.backend;
    let total = storage::search::count(
        pool,
        backend,
        &SearchQuery { words: &words, rooms: &rooms, keys: &keys, recent, offset: 0, limit: 0 },
    )
    .await?;
    'scan: loop {
        let query =
            SearchQuery { words: &words, rooms: &rooms, keys: &keys, recent, offset: position, limit: SCAN_BATCH };
        let hits = storage::search::search(pool, backend, &query).await?;
        if hits.is_empty() {
            break;
        }
        let ids: Vec<String> = hits.iter().map(|hit| hit.event_id.clone()).collect();
        let events: HashMap<String, StoredEvent> =
            storage::events::get_many(pool, &ids).await?.into_iter().map(|e| (e.pdu.event_id.to_string(), e)).collect();
        for hit in &hits {
            if picked.len() == limit {
                more = true;
                break 'scan;
            }
            position += 1;
            // Edge-state events are not in the timeline (see `storage::backfill`).
            let Some(event) = events.get(&hit.event_id).filter(|e| e.stream > EDGE_STATE_TOP) else { continue };
            if !visibilities.contains_key(&hit.room_id) {
                let room_id =
                    RoomId::parse(&hit.room_id).map_err(|e| Error::internal("reading a stored room id", e))?;
                visibilities.insert(hit.room_id.clone(), Visibility::load(pool, &room_id, &session.user_id).await?);
            }
            let visible = visibilities.get(&hit.room_id).is_some_and(|v| v.can_see(event.stream));
            let ignored_sender = ignored.contains(event.pdu.sender.as_str());
            if visible && !ignored_sender && filter.allows(&event.pdu) {
                picked.push((event.clone(), hit.rank));
            }
        }
        if (hits.len() as i64) < SCAN_BATCH {
            break;
        }
    }

    let viewer = Viewer { user_id: &session.user_id, device_id: &session.device_id, ignored: &ignored };
    let events: Vec<StoredEvent> = picked.iter().map(|(event, _)| event.clone()).collect();
    let serialized = client_events_bundled(pool, &events, viewer, true).await?;
    let mut results = Vec::with_capacity(events.len());
    for ((event, rank), json) in picked.iter().zip(serialized) {
        let mut result = json!({ "rank": rank, "result": json });
        if let Some(context) = &criteria.event_context {
            result["context"] = event_context(services, session, event, context, &visibilities, &ignored).await?;
        }
        results.push(result);
    }

    let mut body = json!({ "results": results, "count": total, "highlights": words });
    if more {
        body["next_batch"] = json!(position.to_string());
    }
    if criteria.include_state {
        let mut state = serde_json::Map::new();
        let mut result_rooms: Vec<&str> = events.iter().map(|e| e.pdu.room_id.as_str()).collect();
        result_rooms.sort_unstable();
        result_rooms.dedup();
        for room in result_rooms {
            let room_id = OwnedRoomId::try_from(room).map_err(|e| Error::internal("reading a stored room id", e))?;
            let current = services.rooms.state(&room_id).await?;
            let ids: Vec<String> = current.state.values().map(|pdu| pdu.event_id.to_string()).collect();
            let mut state_events = storage::events::get_many(pool, &ids).await?;
            state_events.sort_by_key(|e| e.stream);
            state.insert(room.to_owned(), json!(client_events(pool, &state_events, None, true).await?));
        }
        body["state"] = Value::Object(state);
    }
    if !group_keys.is_empty() {
        body["groups"] = groups(&group_keys, &events);
    }
    Ok(body)
}

/// Groups result event ids by room or sender, groups ordered by their best result.
fn groups(keys: &[String], events: &[StoredEvent]) -> Value {
    let mut output = serde_json::Map::new();
    for key in keys {
        let mut groups: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            let value = if key == "room_id" { event.pdu.room_id.to_string() } else { event.pdu.sender.to_string() };
            let group = groups.entry(value).or_insert_with(|| (index, Vec::new()));
            group.1.push(event.pdu.event_id.to_string());
        }
        let mut ordered: Vec<(String, (usize, Vec<String>))> = groups.into_iter().collect();
        ordered.sort_by_key(|(_, (first, _))| *first);
        let mut section = serde_json::Map::new();
        for (order, (value, (_, ids))) in ordered.into_iter().enumerate() {
            section.insert(value, json!({ "results": ids, "order": order }));
        }
        output.insert(key.clone(), Value::Object(section));
    }
    Value::Object(output)
}

/// Builds the context of a result: the events around it, tokens to paginate
/// from there and, when requested, the senders' current profiles in the room.
async fn event_context(
    services: &Services,
    session: &Session,
    event: &StoredEvent,
    context: &EventContext,
    visibilities: &HashMap<String, Visibility>,
    ignored: &HashSet<String>,
) -> Result<Value> {
    let pool = &services.db.pool;
    let room_id = &event.pdu.room_id;
    let visibility = visibilities.get(room_id.as_str());
    let ignored_sender = |e: &StoredEvent| e.pdu.state_key.is_none() && ignored.contains(e.pdu.sender.as_str());
    let can_see = |e: &StoredEvent| visibility.is_some_and(|v| v.can_see(e.stream)) && !ignored_sender(e);
    let before_limit = context.before_limit.unwrap_or(5).min(MAX_LIMIT) as i64;
    let after_limit = context.after_limit.unwrap_or(5).min(MAX_LIMIT) as i64;

    // The edge state of a room joined over federation lies below its timeline.
    let mut before: Vec<StoredEvent> =
        storage::events::room_range(pool, room_id, EDGE_STATE_TOP, event.stream - 1, before_limit, true)
            .await?
            .into_iter()
            .filter(|e| can_see(e))
            .collect();
    let after: Vec<StoredEvent> =
        storage::events::room_range(pool, room_id, event.stream, i64::MAX, after_limit, false)
            .await?
            .into_iter()
            .filter(|e| can_see(e))
            .collect();

    let start = before.last().map_or(event.stream - 1, |e| e.stream - 1);
    let end = after.last().map_or(event.stream, |e| e.stream);
    let viewer = Viewer { user_id: &session.user_id, device_id: &session.device_id, ignored };
    let mut body = json!({
        "events_before": client_events(pool, &before, Some(viewer), true).await?,
        "events_after": client_events(pool, &after, Some(viewer), true).await?,
        "start": pagination_token(start),
        "end": pagination_token(end),
    });

    if context.include_profile {
        before.push(event.clone());
        let mut senders: Vec<String> = before.iter().chain(&after).map(|e| e.pdu.sender.to_string()).collect();
        senders.sort_unstable();
        senders.dedup();
        let state = services.rooms.state(room_id).await?;
        let mut profiles = serde_json::Map::new();
        for sender in senders {
            let content = state.content(&StateEventType::RoomMember, &sender);
            let mut profile = serde_json::Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|v| v.is_string()) {
                    profile.insert(field.to_owned(), value.clone());
                }
            }
            profiles.insert(sender, Value::Object(profile));
        }
        body["profile_info"] = Value::Object(profiles);
    }
    Ok(body)
}
