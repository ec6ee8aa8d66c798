//! Space hierarchies (spec: Client-Server API, "Spaces"): the summaries of
//! a space's rooms, found by walking `m.space.child` state events depth
//! first, in the order the spec gives children. Rooms this server is not in
//! are described by the servers of their `via` lists (see
//! [`super::remote_space`]).

use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet},
    time::Duration,
};

use ruma::{OwnedRoomId, RoomId, UserId, events::StateEventType};
use serde_json::{Map, Value, json};

use super::{Rooms, remote_space::RemoteBudget, state::RoomState};
use crate::{error::Result, storage};

/// How long one walk may spend asking other servers.
const REMOTE_WALK_TIME: Duration = Duration::from_secs(10);
/// Maximum number of rooms one walk requests from other servers, besides cached responses.
const MAX_REMOTE_REQUESTS: usize = 10;

/// The requester of a summary: a local user, or another server for its users.
#[derive(Clone, Copy)]
pub enum Requester<'a> {
    User(&'a UserId),
    Server(&'a ruma::ServerName),
}

/// A room's place in a walk: the room, how far below the root it is, and
/// the servers its parent's `m.space.child` event names.
struct Pending {
    room_id: OwnedRoomId,
    depth: u64,
    via: Vec<String>,
}

/// The result of a walk of the tree: summaries in depth-first order.
pub struct Walk {
    pub rooms: Vec<Value>,
    /// Whether rooms remain after the last one returned.
    pub more: bool,
}

/// Knowledge a walk gathered about rooms this server is not in: the child
/// summaries in other servers' responses, and the rooms those servers
/// marked inaccessible.
#[derive(Default)]
struct Learned {
    summaries: HashMap<OwnedRoomId, Value>,
    inaccessible: HashSet<OwnedRoomId>,
}

/// A child of a space: its `m.space.child` event's state key and content.
struct Child {
    room_id: String,
    order: Option<String>,
    origin_server_ts: u64,
    via: Vec<String>,
}

/// Returns whether `order` is valid for ordering: at most 50 characters, all
/// printable ASCII (0x20 to 0x7E).
fn valid_order(order: &str) -> bool {
    order.len() <= 50 && order.chars().all(|c| (' '..='~').contains(&c))
}

/// Reads a valid child (one whose `via` is a non-empty list of strings,
/// and `suggested` with `suggested_only`) from an `m.space.child` event.
fn parse_child(state_key: &str, content: &Value, origin_server_ts: u64, suggested_only: bool) -> Option<Child> {
    let via = content.get("via").and_then(Value::as_array).filter(|v| !v.is_empty())?;
    let via: Vec<String> = via.iter().map(|server| server.as_str().map(str::to_owned)).collect::<Option<_>>()?;
    if suggested_only && content.get("suggested").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    RoomId::parse(state_key).ok()?;
    let order = content.get("order").and_then(Value::as_str).filter(|o| valid_order(o)).map(str::to_owned);
    Some(Child { room_id: state_key.to_owned(), order, origin_server_ts, via })
}

/// Orders children by `order`, then timestamp, then room id.
fn ordered(mut list: Vec<Child>) -> Vec<Child> {
    list.sort_by(|a, b| {
        let by_order = match (&a.order, &b.order) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_order.then(a.origin_server_ts.cmp(&b.origin_server_ts)).then_with(|| a.room_id.cmp(&b.room_id))
    });
    list
}

/// Lists the valid children of a space in its state, in the spec's order.
fn children(state: &RoomState, suggested_only: bool) -> Vec<Child> {
    let list = state
        .state
        .iter()
        .filter(|((kind, _), _)| *kind == StateEventType::SpaceChild)
        .filter_map(|((_, key), pdu)| {
            parse_child(key, &pdu.content_value(), pdu.origin_server_ts.get().into(), suggested_only)
        })
        .collect();
    ordered(list)
}

/// Lists the valid children of a summary's `children_state`, in the spec's order.
fn summary_children(summary: &Value, suggested_only: bool) -> Vec<Child> {
    let list = summary["children_state"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|event| {
                    let ts = event["origin_server_ts"].as_u64()?;
                    parse_child(event["state_key"].as_str()?, &event["content"], ts, suggested_only)
                })
                .collect()
        })
        .unwrap_or_default();
    ordered(list)
}

/// Keeps in a summary from another server only the `children_state`
/// entries of valid children, as for a local summary.
fn keep_valid_children(summary: &mut Value, suggested_only: bool) {
    let listed: HashSet<String> = summary_children(summary, suggested_only).into_iter().map(|c| c.room_id).collect();
    if let Some(events) = summary.get_mut("children_state").and_then(Value::as_array_mut) {
        events.retain(|event| event["state_key"].as_str().is_some_and(|key| listed.contains(key)));
    } else {
        summary["children_state"] = json!([]);
    }
}

/// Builds the summary of a room with its `children_state`.
pub fn summary(state: &RoomState, suggested_only: bool) -> Value {
    let text = |kind: StateEventType, field: &str| {
        state.content(&kind, "").get(field).and_then(Value::as_str).map(str::to_owned)
    };
    let join_rule = text(StateEventType::RoomJoinRules, "join_rule").unwrap_or_else(|| "invite".into());
    let mut summary = Map::new();
    summary.insert("room_id".into(), json!(state.room_id));
    summary.insert("num_joined_members".into(), json!(state.count_membership("join")));
    summary.insert(
        "world_readable".into(),
        json!(text(StateEventType::RoomHistoryVisibility, "history_visibility").as_deref() == Some("world_readable")),
    );
    summary.insert(
        "guest_can_join".into(),
        json!(text(StateEventType::RoomGuestAccess, "guest_access").as_deref() == Some("can_join")),
    );
    summary.insert("join_rule".into(), json!(join_rule));
    summary.insert("room_version".into(), json!(state.version));
    for (key, kind, field) in [
        ("name", StateEventType::RoomName, "name"),
        ("topic", StateEventType::RoomTopic, "topic"),
        ("canonical_alias", StateEventType::RoomCanonicalAlias, "alias"),
        ("avatar_url", StateEventType::RoomAvatar, "url"),
        ("room_type", StateEventType::RoomCreate, "type"),
        ("encryption", StateEventType::RoomEncryption, "algorithm"),
    ] {
        if let Some(value) = text(kind, field) {
            summary.insert(key.into(), json!(value));
        }
    }
    if let Some(allowed) = super::restricted::allowed_rooms(state) {
        summary.insert("allowed_room_ids".into(), json!(allowed));
    }

    let listed: HashSet<String> = children(state, suggested_only).into_iter().map(|c| c.room_id).collect();
    let mut children_state: Vec<Value> = state
        .state
        .iter()
        .filter(|((kind, key), _)| *kind == StateEventType::SpaceChild && listed.contains(key))
        .map(|((_, key), pdu)| {
            json!({
                "type": "m.space.child",
                "state_key": key,
                "content": pdu.content,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
            })
        })
        .collect();
    children_state.sort_by(|a, b| a["state_key"].as_str().cmp(&b["state_key"].as_str()));
    summary.insert("children_state".into(), Value::Array(children_state));
    Value::Object(summary)
}

impl Rooms {
    /// Returns whether a requester may read a room's summary. Members may,
    /// and so may anyone for a public, knockable or world-readable room. A
    /// restricted room is also shown to members of an allowed room, or to
    /// servers with such members.
    pub async fn may_preview(&self, state: &RoomState, requester: Requester<'_>) -> Result<bool> {
        if let Requester::User(user) = requester
            && matches!(state.membership(user).as_deref(), Some("join" | "invite" | "knock"))
        {
            return Ok(true);
        }
        let content = state.content(&StateEventType::RoomJoinRules, "");
        let join_rule = content.get("join_rule").and_then(Value::as_str).unwrap_or("invite");
        let knockable = join_rule == "knock"
            || (join_rule == "knock_restricted" && state.rules.authorization.knock_restricted_join_rule);
        let visibility = state.content(&StateEventType::RoomHistoryVisibility, "");
        if join_rule == "public"
            || knockable
            || visibility.get("history_visibility").and_then(Value::as_str) == Some("world_readable")
        {
            return Ok(true);
        }
        let Some(allowed_rooms) = super::restricted::allowed_rooms(state) else {
            return Ok(false);
        };
        self.in_any_room(&allowed_rooms, requester).await
    }

    /// Returns whether the requester (a user, or a server for its users) is
    /// joined to one of `rooms`, among the rooms this server has stored.
    async fn in_any_room(&self, rooms: &[OwnedRoomId], requester: Requester<'_>) -> Result<bool> {
        for allowed in rooms {
            if !self.exists(allowed).await? {
                continue;
            }
            let allowed_state = self.state(allowed).await?;
            let member = match requester {
                Requester::User(user) => allowed_state.is_joined(user),
                Requester::Server(server) => allowed_state.servers().iter().any(|s| s == server),
            };
            if member {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Returns whether a requester may read another server's summary of a
    /// room this server is not in. The rules are those of
    /// [`Rooms::may_preview`], applied to the user's pending invite to the
    /// room and to the summary's join rule, `world_readable` and `allowed_room_ids`.
    async fn may_preview_summary(&self, summary: &Value, requester: Requester<'_>) -> Result<bool> {
        let room_id = summary["room_id"].as_str().unwrap_or_default();
        if let Requester::User(user) = requester
            && storage::invites::get(&self.db.pool, room_id, user.as_str()).await?.is_some()
        {
            return Ok(true);
        }
        let join_rule = summary["join_rule"].as_str().unwrap_or("public");
        if matches!(join_rule, "public" | "knock" | "knock_restricted") || summary["world_readable"] == true {
            return Ok(true);
        }
        if join_rule != "restricted" {
            return Ok(false);
        }
        let allowed: Vec<OwnedRoomId> = summary["allowed_room_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(|id| OwnedRoomId::try_from(id.as_str()?).ok()).collect())
            .unwrap_or_default();
        self.in_any_room(&allowed, requester).await
    }

    /// Returns the summary of one room of a walk when the requester may
    /// preview it. The summary comes from this server's state when it is in
    /// the room, else from other servers (or earlier responses of the walk),
    /// else from the stored state of a room this server left. `descend` is
    /// set when the walk needs the room's `children_state`.
    async fn walk_node(
        &self,
        next: &Pending,
        requester: Requester<'_>,
        suggested_only: bool,
        descend: bool,
        learned: &mut Learned,
        budget: &mut RemoteBudget,
    ) -> Result<Option<Value>> {
        let local = |state: &RoomState| summary(state, suggested_only);
        if self.is_resident(&next.room_id).await? {
            let state = self.state(&next.room_id).await?;
            return Ok(self.may_preview(&state, requester).await?.then(|| local(&state)));
        }
        if learned.inaccessible.contains(&next.room_id) {
            return Ok(None);
        }

        let mut remote = learned.summaries.get(&next.room_id).cloned();
        let complete = remote.as_ref().is_some_and(|s| !descend || s.get("children_state").is_some());
        if !complete && let Some(space) = self.remote_space(&next.room_id, &next.via, suggested_only, budget).await {
            for (id, child) in &space.children {
                learned.summaries.entry(id.clone()).or_insert_with(|| child.clone());
            }
            learned.inaccessible.extend(space.inaccessible.iter().cloned());
            remote = Some(space.room.clone());
        }
        let Some(mut remote) = remote else {
            if !self.exists(&next.room_id).await? {
                return Ok(None);
            }
            let state = self.state(&next.room_id).await?;
            return Ok(self.may_preview(&state, requester).await?.then(|| local(&state)));
        };
        keep_valid_children(&mut remote, suggested_only);
        Ok(self.may_preview_summary(&remote, requester).await?.then_some(remote))
    }

    /// Walks the tree below `root` depth first, skipping the first `skip`
    /// rooms, and returns up to `limit` summaries of rooms the requester may
    /// preview. Rooms this server is not in are described by the servers of
    /// their `via` lists, within a bounded time and number of requests. Rooms
    /// that no server describes are left out, with the rooms below them.
    pub async fn walk_hierarchy(
        &self,
        root: &RoomId,
        requester: Requester<'_>,
        suggested_only: bool,
        max_depth: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Walk> {
        let mut stack = vec![Pending { room_id: root.to_owned(), depth: 0, via: Vec::new() }];
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        let mut learned = Learned::default();
        let mut budget = RemoteBudget {
            deadline: tokio::time::Instant::now() + REMOTE_WALK_TIME,
            requests_left: MAX_REMOTE_REQUESTS,
        };
        let mut rooms = Vec::new();
        let mut counted = 0usize;
        while let Some(next) = stack.pop() {
            if !seen.insert(next.room_id.clone()) {
                continue;
            }
            let descend = next.depth < max_depth;
            let node = self.walk_node(&next, requester, suggested_only, descend, &mut learned, &mut budget).await?;
            let Some(summary) = node else { continue };
            if counted >= skip {
                if rooms.len() == limit {
                    return Ok(Walk { rooms, more: true });
                }
                rooms.push(summary.clone());
            }
            counted += 1;
            if descend {
                for child in summary_children(&summary, suggested_only).into_iter().rev() {
                    if let Ok(room_id) = OwnedRoomId::try_from(child.room_id) {
                        stack.push(Pending { room_id, depth: next.depth + 1, via: child.via });
                    }
                }
            }
        }
        Ok(Walk { rooms, more: false })
    }
}
