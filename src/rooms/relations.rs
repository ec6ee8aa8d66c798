//! Aggregations of child events (spec: Client-Server API, "Aggregations of
//! child events"): for each event served with `unsigned.m.relations`, the
//! most recent valid edit (`m.replace`), the thread summary (`m.thread`) and
//! the events that reference it (`m.reference`).

use std::collections::HashMap;

use crate::{
    error::Result,
    rooms::serialize::Viewer,
    storage::{self, events::StoredEvent, relations::Related},
};

/// The child events bundled with one parent event.
#[derive(Debug, Default)]
pub struct Aggregations {
    /// The most recent valid replacement of the parent.
    pub replace: Option<StoredEvent>,
    pub thread: Option<Thread>,
    /// Ids of the events that reference the parent, oldest first.
    pub references: Vec<String>,
}

impl Aggregations {
    fn is_empty(&self) -> bool {
        self.replace.is_none() && self.thread.is_none() && self.references.is_empty()
    }
}

/// A thread summary: its latest event, its size, and whether the viewer took part.
#[derive(Debug)]
pub struct Thread {
    pub latest: StoredEvent,
    pub count: i64,
    pub current_user_participated: bool,
}

/// Candidate edits loaded per parent; a parent edited more often than this
/// falls back to older edits only when all of these newest are invalid.
const EDIT_CANDIDATES: usize = 8;

/// Computes the aggregations of `events` for `user_id`, keyed by event id.
/// Events without children, and state events, which the spec leaves out,
/// get no entry.
pub async fn aggregate(
    pool: &sqlx::AnyPool,
    events: &[StoredEvent],
    viewer: Viewer<'_>,
) -> Result<HashMap<String, Aggregations>> {
    let user_id = viewer.user_id.as_str();
    let parents: Vec<&StoredEvent> = events.iter().filter(|e| e.pdu.state_key.is_none()).collect();
    if parents.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = parents.iter().map(|e| e.pdu.event_id.to_string()).collect();
    let mut result: HashMap<String, Aggregations> = HashMap::new();

    let edits = storage::relations::of_parents(pool, &ids, "m.replace").await?;
    let chosen = latest_valid_edits(pool, &parents, edits).await?;
    for (parent, edit) in chosen {
        result.entry(parent).or_default().replace = Some(edit);
    }

    let summaries = storage::relations::thread_summaries(pool, &ids, user_id, viewer.ignored).await?;
    if !summaries.is_empty() {
        let latest_ids: Vec<String> = summaries.values().map(|s| s.latest_event_id.clone()).collect();
        let latest: HashMap<String, StoredEvent> = storage::events::get_many(pool, &latest_ids)
            .await?
            .into_iter()
            .map(|e| (e.pdu.event_id.to_string(), e))
            .collect();
        for parent in &parents {
            let id = parent.pdu.event_id.as_str();
            let Some(summary) = summaries.get(id) else { continue };
            let Some(latest) = latest.get(&summary.latest_event_id) else { continue };
            result.entry(id.to_owned()).or_default().thread = Some(Thread {
                latest: latest.clone(),
                count: summary.count,
                current_user_participated: summary.participated || parent.pdu.sender.as_str() == user_id,
            });
        }
    }

    let references = storage::relations::of_parents(pool, &ids, "m.reference").await?;
    for reference in references.into_iter().filter(|r| !viewer.ignored.contains(&r.sender)) {
        result.entry(reference.relates_to).or_default().references.push(reference.event_id);
    }
    result.retain(|_, aggregations| !aggregations.is_empty());
    Ok(result)
}

/// Picks each parent's most recent valid edit: sent by the parent's sender,
/// of the parent's type, with `m.new_content` (which encrypted edits carry
/// inside their ciphertext), on a parent that is not an edit itself. The most
/// recent is the one with the highest `origin_server_ts`, then the highest
/// event id.
async fn latest_valid_edits(
    pool: &sqlx::AnyPool,
    parents: &[&StoredEvent],
    edits: Vec<Related>,
) -> Result<Vec<(String, StoredEvent)>> {
    if edits.is_empty() {
        return Ok(Vec::new());
    }
    let mut by_parent: HashMap<&str, Vec<&Related>> = HashMap::new();
    for edit in &edits {
        by_parent.entry(edit.relates_to.as_str()).or_default().push(edit);
    }
    let mut candidates: Vec<(String, Vec<String>)> = Vec::new();
    for parent in parents {
        let pdu = &parent.pdu;
        let Some(list) = by_parent.get_mut(pdu.event_id.as_str()) else { continue };
        let is_edit = storage::relations::relation_of(pdu).is_some_and(|(_, rel_type)| rel_type == "m.replace");
        // A redacted event shows no edits, as its content is gone.
        if is_edit || parent.redacted_by.is_some() {
            continue;
        }
        let kind = pdu.kind.to_string();
        list.retain(|edit| edit.sender == pdu.sender.as_str() && edit.event_type == kind);
        list.sort_by(|a, b| (b.origin_server_ts, &b.event_id).cmp(&(a.origin_server_ts, &a.event_id)));
        let ids = list.iter().take(EDIT_CANDIDATES).map(|edit| edit.event_id.clone()).collect::<Vec<_>>();
        if !ids.is_empty() {
            candidates.push((pdu.event_id.to_string(), ids));
        }
    }
    let candidate_ids: Vec<String> = candidates.iter().flat_map(|(_, ids)| ids.iter().cloned()).collect();
    let mut loaded: HashMap<String, StoredEvent> = storage::events::get_many(pool, &candidate_ids)
        .await?
        .into_iter()
        .map(|e| (e.pdu.event_id.to_string(), e))
        .collect();
    let mut chosen = Vec::new();
    for (parent, ids) in candidates {
        let valid = ids.iter().find(|id| loaded.get(*id).is_some_and(has_new_content));
        if let Some(edit) = valid.and_then(|id| loaded.remove(id)) {
            chosen.push((parent, edit));
        }
    }
    Ok(chosen)
}

fn has_new_content(edit: &StoredEvent) -> bool {
    if edit.pdu.kind.to_string() == "m.room.encrypted" {
        return true;
    }
    serde_json::from_str::<serde_json::Value>(edit.pdu.content.get())
        .is_ok_and(|content| content.get("m.new_content").is_some_and(serde_json::Value::is_object))
}
