//! Fetching what a received PDU refers to but this server lacks (spec:
//! Server-Server API, "Checks performed on receipt of a PDU" and
//! "Backfilling and retrieving missing events"):
//!
//! 1. unknown auth events: the event's auth chain from `/event_auth`;
//! 2. unknown previous events: `/get_missing_events` from the sending
//!    server, bounded by `limit` and `min_depth`, each returned event then
//!    received like the PDU itself, oldest first;
//! 3. a gap that remains: the state at each missing previous event from
//!    `/state_ids`, its unknown events from `/event` (or all at once from
//!    `/state`), checked and stored as outliers. The missing previous event
//!    becomes an outlier that carries that state, so the PDU is checked
//!    against it and becomes a forward extremity beside the room's others.
//!
//! Fetched events pass the same checks as received ones (signatures, hashes,
//! auth against their auth events). Every step is bounded in count, and the
//! caller bounds the time, so a failing remote server delays a transaction
//! response only up to that bound.

use std::collections::HashSet;

use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, ServerName};
use serde_json::{Value, json};

use super::{
    Rooms,
    builder::{BuiltEvent, StateChange},
    pdu::Pdu,
    persist,
    remote::{Rejected, entries, event_id_of, ids},
    resolve::StateMap,
};
use crate::{federation::Federation, storage::writer::Stream};

/// Events asked for in one `/get_missing_events` request.
const MISSING_EVENTS_LIMIT: usize = 20;
/// Previous events of one PDU whose state is fetched when a gap remains.
const MAX_GAPS: usize = 3;
/// Events fetched one by one with `/event`; more are fetched with `/state`.
const MAX_SINGLE_FETCHES: usize = 50;
/// Events of one state or auth chain stored as outliers.
const MAX_FETCHED: usize = 2000;

const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub(super) fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

type Fetch<T> = std::result::Result<T, String>;

impl Rooms {
    /// Fetches from `origin` the previous and auth events of the verified
    /// `pdu` that are unknown here (see the module documentation).
    pub(super) async fn fill_gaps(&self, federation: &Federation, origin: &ServerName, pdu: &Pdu) -> Fetch<()> {
        let room_id = &pdu.room_id;
        let room = self.state(room_id).await.map_err(|e| e.message)?;
        // The common case needs no query: the PDU extends the room's forward
        // extremities with auth events of its current state.
        let in_memory =
            |id: &OwnedEventId| room.extremities.contains(id) || room.state.values().any(|state| state.event_id == *id);
        if pdu.prev_events.iter().all(in_memory) && pdu.auth_events.iter().all(in_memory) {
            return Ok(());
        }
        // Events of this transaction may still be in flight.
        self.flush_writes().await.map_err(|e| e.message)?;
        let event_id = &pdu.event_id;
        if self.unknown(&[event_id.to_string()]).await?.is_empty() {
            return Ok(());
        }
        self.fill_auth(federation, origin, room_id, event_id, &ids(&pdu.auth_events)).await?;
        let missing = self.unknown(&ids(&pdu.prev_events)).await?;
        if missing.is_empty() {
            return Ok(());
        }

        // The events between the room's forward extremities and the PDU.
        let extremities: Vec<String> = room.extremities.iter().map(|id| id.to_string()).collect();
        let depths = self.load_any(&extremities).await.map_err(|e| e.message)?;
        let min_depth = depths.values().map(|e| e.pdu.depth).min().unwrap_or(0);
        let body = json!({
            "earliest_events": extremities,
            "latest_events": [event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min_depth,
        });
        let path = format!("/_matrix/federation/v1/get_missing_events/{}", segment(room_id.as_str()));
        match federation.send_json(origin, Method::POST, &path, Some(&body), true).await {
            Ok(answer) => {
                let mut events = objects(&answer["events"]);
                events.truncate(MISSING_EVENTS_LIMIT);
                events.sort_by_key(depth);
                for event in events {
                    let Ok(id) = event_id_of(&event, &room.rules) else { continue };
                    if !self.unknown(&[id.to_string()]).await?.is_empty() {
                        self.fill_auth(federation, origin, room_id, &id, &refs(&event, "auth_events")).await?;
                        let gaps = self.unknown(&refs(&event, "prev_events")).await?;
                        self.fill_state_gaps(federation, origin, room_id, gaps).await?;
                        let keys = federation.signing_keys(&event).await;
                        if let Err(Rejected(reason)) = self.receive_pdu(room_id, event, &keys).await {
                            tracing::info!(event_id = %id, reason, "rejected a fetched missing event");
                        }
                    }
                }
            }
            Err(err) => tracing::info!(%origin, error = %err, "get_missing_events failed"),
        }
        let gaps = self.unknown(&ids(&pdu.prev_events)).await?;
        self.fill_state_gaps(federation, origin, room_id, gaps).await
    }

    /// Fetches the auth chain of `event_id` when some of its auth events are unknown.
    pub(super) async fn fill_auth(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &OwnedEventId,
        auth_events: &[String],
    ) -> Fetch<()> {
        if self.unknown(auth_events).await?.is_empty() {
            return Ok(());
        }
        let path =
            format!("/_matrix/federation/v1/event_auth/{}/{}", segment(room_id.as_str()), segment(event_id.as_str()));
        let answer = federation.send_json(origin, Method::GET, &path, None, true).await.map_err(|e| e.to_string())?;
        let chain = objects(&answer["auth_chain"]);
        self.store_outliers(federation, room_id, chain).await
    }

    /// For each missing previous event (a few at most), fetches the state
    /// before it and the event itself, and stores them as outliers, the
    /// missing event with the state after it.
    async fn fill_state_gaps(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        missing: Vec<String>,
    ) -> Fetch<()> {
        for prev in missing.into_iter().take(MAX_GAPS) {
            let mut state = self.fetch_state_before(federation, origin, room_id, &prev, true).await?;
            let stored = self.load_any(std::slice::from_ref(&prev)).await.map_err(|e| e.message)?;
            let Some(pdu) = stored.into_values().next().map(|event| event.pdu) else {
                return Err(format!("the missing event {prev} could not be fetched or failed its checks"));
            };
            if let Some(key) = &pdu.state_key {
                state.insert((ruma::events::StateEventType::from(pdu.kind.to_string()), key.clone()), pdu.clone());
            }
            let group = self.db.writer.positions().reserve(Stream::StateGroups);
            let built = BuiltEvent {
                pdu,
                state_change: StateChange::Snapshot { group, entries: entries(&state) },
                redaction: None,
                chain_length: 0,
                state_group: group,
                replaces_state: None,
            };
            let room_name = room_id.to_string();
            self.db
                .writer
                .write(move |w| Box::pin(persist::persist_outliers(w, room_name, vec![(built, false)])))
                .await
                .map_err(|e| e.message)?;
        }
        Ok(())
    }

    /// Fetches the state before `event_id` from `origin` with `/state_ids`,
    /// and the events of it and of its auth chain that are unknown here
    /// (with `/event`, or all at once with `/state`), which are checked and
    /// stored as outliers. With `with_event`, the event itself is fetched
    /// too when it is unknown.
    pub(super) async fn fetch_state_before(
        &self,
        federation: &Federation,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &str,
        with_event: bool,
    ) -> Fetch<StateMap> {
        let room = self.state(room_id).await.map_err(|e| e.message)?;
        let query = format!("{}?event_id={}", segment(room_id.as_str()), segment(event_id));
        let path = format!("/_matrix/federation/v1/state_ids/{query}");
        let answer = federation.send_json(origin, Method::GET, &path, None, true).await.map_err(|e| e.to_string())?;
        let state_ids = strings(&answer["pdu_ids"]);
        let mut needed: Vec<String> = strings(&answer["auth_chain_ids"]);
        needed.extend(state_ids.iter().cloned());
        if with_event {
            needed.push(event_id.to_owned());
        }
        let needed: Vec<String> = needed.into_iter().collect::<HashSet<_>>().into_iter().collect();
        let unknown = self.unknown(&needed).await?;
        if unknown.len() > MAX_FETCHED {
            return Err(format!("the state at {event_id} has {} unknown events, more than fetched", unknown.len()));
        }
        let mut fetched = Vec::new();
        if unknown.len() <= MAX_SINGLE_FETCHES {
            for id in &unknown {
                fetched.extend(self.fetch_event(federation, origin, id).await?);
            }
        } else {
            let path = format!("/_matrix/federation/v1/state/{query}");
            let answer =
                federation.send_json(origin, Method::GET, &path, None, true).await.map_err(|e| e.to_string())?;
            fetched.extend(objects(&answer["pdus"]));
            fetched.extend(objects(&answer["auth_chain"]));
            if with_event {
                fetched.extend(self.fetch_event(federation, origin, event_id).await?);
            }
        }
        // Only the events asked for are kept.
        let unknown: HashSet<&String> = unknown.iter().collect();
        fetched.retain(|event| event_id_of(event, &room.rules).is_ok_and(|id| unknown.contains(&id.to_string())));
        self.store_outliers(federation, room_id, fetched).await?;

        let events = self.load_any(&state_ids).await.map_err(|e| e.message)?;
        if events.len() != state_ids.len() {
            return Err(format!("some events of the state at {event_id} could not be fetched"));
        }
        Ok(events
            .into_values()
            .filter_map(|e| {
                let key = e.pdu.state_key.clone()?;
                Some(((ruma::events::StateEventType::from(e.pdu.kind.to_string()), key), e.pdu))
            })
            .collect())
    }

    /// Fetches one event with `/event`.
    async fn fetch_event(
        &self,
        federation: &Federation,
        origin: &ServerName,
        id: &str,
    ) -> Fetch<Vec<CanonicalJsonObject>> {
        let path = format!("/_matrix/federation/v1/event/{}", segment(id));
        match federation.send_json(origin, Method::GET, &path, None, true).await {
            Ok(answer) => Ok(objects(&answer["pdus"]).into_iter().take(1).collect()),
            Err(err) => {
                tracing::info!(%origin, event_id = id, error = %err, "could not fetch an event");
                Ok(Vec::new())
            }
        }
    }

    /// Checks fetched events, oldest first, and stores those that pass as
    /// outliers without state. Those that fail are left out.
    async fn store_outliers(
        &self,
        federation: &Federation,
        room_id: &RoomId,
        mut events: Vec<CanonicalJsonObject>,
    ) -> Fetch<()> {
        events.truncate(MAX_FETCHED);
        events.sort_by_key(depth);
        let room = self.state(room_id).await.map_err(|e| e.message)?;
        for object in events {
            let Ok(id) = event_id_of(&object, &room.rules) else { continue };
            if !self.unknown(&[id.to_string()]).await?.is_empty() {
                if matches!(object.get("type"), Some(CanonicalJsonValue::String(kind)) if kind == "m.room.create") {
                    // The create event is known to every server in the room; a different one is not this room's.
                    continue;
                }
                let keys = federation.signing_keys(&object).await;
                match self.check_without_state(&room, id.clone(), object, &keys, &Default::default()).await {
                    Ok(pdu) => {
                        let built = BuiltEvent {
                            pdu: std::sync::Arc::new(pdu),
                            state_change: StateChange::None,
                            redaction: None,
                            chain_length: 0,
                            state_group: 0,
                            replaces_state: None,
                        };
                        let room_name = room_id.to_string();
                        self.db
                            .writer
                            .write(move |w| Box::pin(persist::persist_outliers(w, room_name, vec![(built, false)])))
                            .await
                            .map_err(|e| e.message)?;
                    }
                    Err(Rejected(reason)) => tracing::info!(event_id = %id, reason, "rejected a fetched event"),
                }
            }
        }
        Ok(())
    }

    /// The ids among `ids` that are neither in the timeline nor outliers.
    pub(super) async fn unknown(&self, ids: &[String]) -> Fetch<Vec<String>> {
        let known = self.load_any(ids).await.map_err(|e| e.message)?;
        let known: HashSet<&str> = known.keys().map(|k| k.as_str()).collect();
        Ok(ids.iter().filter(|id| !known.contains(id.as_str())).cloned().collect())
    }
}

pub(super) fn refs(object: &CanonicalJsonObject, field: &str) -> Vec<String> {
    match object.get(field) {
        Some(CanonicalJsonValue::Array(ids)) => ids.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn depth(object: &CanonicalJsonObject) -> i64 {
    match object.get("depth") {
        Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
        _ => 0,
    }
}

pub(super) fn objects(value: &Value) -> Vec<CanonicalJsonObject> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| match CanonicalJsonValue::try_from(v.clone()) {
            Ok(CanonicalJsonValue::Object(object)) => Some(object),
            _ => None,
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}
