//! State resolution between forks of a room (spec: room versions 2 and later,
//! "State resolution"). The state before an event with several
//! `prev_events` is the resolution of the states after each of them, and a
//! room's current state is the resolution of the states after its forward
//! extremities. ruma-state-res runs the algorithm; this module gathers what
//! it reads: the state maps, the auth chain of each, and the events of the
//! auth graph they reach (never the room's timeline).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId, events::StateEventType, room_version_rules::RoomVersionRules, state_res,
    state_res::utils::event_id_set::EventIdSet,
};

use super::{Rooms, pdu::Pdu};
use crate::{
    error::{Error, Result},
    storage::{self, events::StoredEvent},
};

/// A room state with its events.
pub type StateMap = HashMap<(StateEventType, String), Arc<Pdu>>;

/// Most events of the auth graph loaded for one resolution.
const MAX_AUTH_GRAPH: usize = 50_000;

impl Rooms {
    /// Loads events by id from the timeline and, for those not there, from the outliers.
    pub(super) async fn load_any(&self, ids: &[String]) -> Result<HashMap<OwnedEventId, StoredEvent>> {
        let mut found: HashMap<OwnedEventId, StoredEvent> = storage::events::get_many(&self.db.pool, ids)
            .await?
            .into_iter()
            .map(|e| (e.pdu.event_id.clone(), e))
            .collect();
        let rest: Vec<String> = if found.len() == ids.len() {
            Vec::new()
        } else {
            let have: HashSet<&str> = found.keys().map(|k| k.as_str()).collect();
            ids.iter().filter(|id| !have.contains(id.as_str())).cloned().collect()
        };
        if !rest.is_empty() {
            for event in storage::outliers::get_many(&self.db.pool, &rest).await? {
                found.insert(event.pdu.event_id.clone(), event);
            }
        }
        Ok(found)
    }

    /// The state a state group holds, with its events.
    pub(super) async fn state_of_group(&self, group: i64) -> Result<StateMap> {
        let entries = storage::state::load_group(&self.db.pool, group).await?;
        let ids: Vec<String> = entries.values().cloned().collect();
        let events: HashMap<String, StoredEvent> =
            self.load_any(&ids).await?.into_iter().map(|(id, e)| (id.to_string(), e)).collect();
        let mut state = StateMap::with_capacity(entries.len());
        for ((kind, key), id) in entries {
            let Some(event) = events.get(&id) else {
                return Err(Error::internal(
                    "loading a state group",
                    format!("event {id} of group {group} is missing"),
                ));
            };
            state.insert((StateEventType::from(kind), key), event.pdu.clone());
        }
        Ok(state)
    }

    /// Resolves several states of one room into one.
    pub(super) async fn resolve_states(&self, rules: &RoomVersionRules, states: &[StateMap]) -> Result<StateMap> {
        let Some(first) = states.first() else { return Ok(StateMap::new()) };
        let same = |a: &StateMap, b: &StateMap| {
            a.len() == b.len() && a.iter().all(|(key, pdu)| b.get(key).is_some_and(|o| o.event_id == pdu.event_id))
        };
        if states.iter().all(|s| same(first, s)) {
            return Ok(first.clone());
        }
        let Some(v2) = rules.state_res.v2_rules() else {
            return Err(Error::internal(
                "resolving room state",
                "room version 1 uses state resolution v1, which this server does not run",
            ));
        };

        // The auth graph that the states reach.
        let mut graph: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        for state in states {
            for pdu in state.values() {
                graph.entry(pdu.event_id.clone()).or_insert_with(|| pdu.clone());
            }
        }
        let mut frontier: Vec<String> = graph
            .values()
            .flat_map(|p| p.auth_events.iter())
            .filter(|id| !graph.contains_key(*id))
            .map(|id| id.to_string())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        while !frontier.is_empty() && graph.len() < MAX_AUTH_GRAPH {
            let found = self.load_any(&frontier).await?;
            for (id, event) in found {
                graph.insert(id, event.pdu);
            }
            let wanted: HashSet<String> = frontier.iter().cloned().collect();
            frontier = graph
                .values()
                .filter(|p| wanted.contains(p.event_id.as_str()))
                .flat_map(|p| p.auth_events.iter())
                .filter(|id| !graph.contains_key(*id))
                .map(|id| id.to_string())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
        }

        let chains: Vec<EventIdSet<OwnedEventId>> =
            states.iter().map(|state| auth_chain(&graph, state.values().flat_map(|p| p.auth_events.iter()))).collect();
        let maps: Vec<state_res::StateMap<OwnedEventId>> = states
            .iter()
            .map(|state| state.iter().map(|(key, pdu)| (key.clone(), pdu.event_id.clone())).collect())
            .collect();
        let fetch = |id: &EventId| graph.get(id).cloned();
        let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
            Some(conflicted_subgraph(&graph, conflicted.values().flatten()))
        };
        let resolved = state_res::resolve(&rules.authorization, v2, maps.iter(), chains, fetch, subgraph)
            .map_err(|e| Error::internal("resolving room state", e))?;
        Ok(resolved.into_iter().filter_map(|(key, id)| graph.get(&id).map(|pdu| (key, pdu.clone()))).collect())
    }
}

/// The events reachable through `auth_events` from `start`, with `start` itself.
fn auth_chain<'a>(
    graph: &HashMap<OwnedEventId, Arc<Pdu>>,
    start: impl Iterator<Item = &'a OwnedEventId>,
) -> EventIdSet<OwnedEventId> {
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<&OwnedEventId> = start.collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(pdu) = graph.get(id) {
            stack.extend(pdu.auth_events.iter());
        }
    }
    seen.into_iter().collect()
}

/// The conflicted state subgraph (room version 12): the events of the auth
/// graph that are both an ancestor of a conflicted event and a descendant of
/// one, the conflicted events included.
fn conflicted_subgraph<'a>(
    graph: &HashMap<OwnedEventId, Arc<Pdu>>,
    conflicted: impl Iterator<Item = &'a OwnedEventId>,
) -> EventIdSet<OwnedEventId> {
    let conflicted: HashSet<&OwnedEventId> = conflicted.collect();
    // Whether an event has a conflicted event among itself and its auth ancestors.
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    fn reaches_conflicted(
        id: &OwnedEventId,
        graph: &HashMap<OwnedEventId, Arc<Pdu>>,
        conflicted: &HashSet<&OwnedEventId>,
        memo: &mut HashMap<OwnedEventId, bool>,
    ) -> bool {
        if let Some(known) = memo.get(id) {
            return *known;
        }
        // Marked first so that a malformed cycle ends the walk.
        memo.insert(id.clone(), conflicted.contains(id));
        let parents: Vec<OwnedEventId> = graph.get(id).map(|p| p.auth_events.clone()).unwrap_or_default();
        let mut found = conflicted.contains(id);
        for parent in &parents {
            found |= reaches_conflicted(parent, graph, conflicted, memo);
        }
        memo.insert(id.clone(), found);
        found
    }
    let ancestors = auth_chain(graph, conflicted.iter().copied());
    ancestors
        .into_iter()
        .filter(|id| {
            conflicted.contains(id)
                || graph.get(id).is_some_and(|p| {
                    p.auth_events.iter().any(|parent| reaches_conflicted(parent, graph, &conflicted, &mut reaches))
                })
        })
        .collect()
}
