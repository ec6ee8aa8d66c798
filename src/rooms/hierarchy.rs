//! Space hierarchies (spec: Client-Server API, "Spaces"): the summaries of
//! a space's rooms, found by walking `m.space.child` state events depth
//! first, in the order the spec gives children.

use std::{cmp::Ordering, collections::HashSet};

use ruma::{OwnedRoomId, RoomId, UserId, events::StateEventType};
use serde_json::{Map, Value, json};

use super::{Rooms, state::RoomState};
use crate::error::Result;

/// The requester of a summary: a local user, or another server for its users.
#[derive(Clone, Copy)]
pub enum Requester<'a> {
    User(&'a UserId),
    Server(&'a ruma::ServerName),
}

/// A room's place in a walk: the room and how far below the root it is.
struct Pending {
    room_id: OwnedRoomId,
    depth: u64,
}

/// The result of a walk of the tree: summaries in depth-first order.
pub struct Walk {
    pub rooms: Vec<Value>,
    /// Whether rooms remain after the last one returned.
    pub more: bool,
}

/// A child of a space: its `m.space.child` event's state key and content.
struct Child {
    room_id: String,
    order: Option<String>,
    origin_server_ts: u64,
}

/// Returns whether `order` is valid for ordering: at most 50 characters, all
/// printable ASCII (0x20 to 0x7E).
fn valid_order(order: &str) -> bool {
    order.len() <= 50 && order.chars().all(|c| (' '..='~').contains(&c))
}

/// Lists the valid children of a space (those whose `via` is a non-empty
/// list), ordered by `order`, then timestamp, then room id.
fn children(state: &RoomState, suggested_only: bool) -> Vec<Child> {
    let mut list: Vec<Child> = state
        .state
        .iter()
        .filter(|((kind, _), _)| *kind == StateEventType::SpaceChild)
        .filter_map(|((_, key), pdu)| {
            let content = pdu.content_value();
            let via = content.get("via").and_then(Value::as_array).filter(|v| !v.is_empty())?;
            if via.iter().any(|server| !server.is_string()) {
                return None;
            }
            if suggested_only && content.get("suggested").and_then(Value::as_bool) != Some(true) {
                return None;
            }
            RoomId::parse(key).ok()?;
            let order = content.get("order").and_then(Value::as_str).filter(|o| valid_order(o)).map(str::to_owned);
            Some(Child { room_id: key.clone(), order, origin_server_ts: pdu.origin_server_ts.get().into() })
        })
        .collect();
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
        let visibility = state.content(&StateEventType::RoomHistoryVisibility, "");
        if matches!(join_rule, "public" | "knock")
            || visibility.get("history_visibility").and_then(Value::as_str) == Some("world_readable")
        {
            return Ok(true);
        }
        let Some(allowed_rooms) = super::restricted::allowed_rooms(state) else {
            return Ok(false);
        };
        for allowed in allowed_rooms {
            if !self.exists(&allowed).await? {
                continue;
            }
            let allowed_state = self.state(&allowed).await?;
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

    /// Walks the tree below `root` depth first, skipping the first `skip`
    /// rooms, and returns up to `limit` summaries of rooms the requester may
    /// preview. Rooms this server is not in are left out, with the rooms
    /// below them.
    pub async fn walk_hierarchy(
        &self,
        root: &RoomId,
        requester: Requester<'_>,
        suggested_only: bool,
        max_depth: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Walk> {
        let mut stack = vec![Pending { room_id: root.to_owned(), depth: 0 }];
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        let mut rooms = Vec::new();
        let mut counted = 0usize;
        while let Some(next) = stack.pop() {
            if !seen.insert(next.room_id.clone()) || !self.exists(&next.room_id).await? {
                continue;
            }
            let state = self.state(&next.room_id).await?;
            if !self.may_preview(&state, requester).await? {
                continue;
            }
            if counted >= skip {
                if rooms.len() == limit {
                    return Ok(Walk { rooms, more: true });
                }
                rooms.push(summary(&state, suggested_only));
            }
            counted += 1;
            if next.depth < max_depth {
                for child in children(&state, suggested_only).into_iter().rev() {
                    if let Ok(room_id) = OwnedRoomId::try_from(child.room_id) {
                        stack.push(Pending { room_id, depth: next.depth + 1 });
                    }
                }
            }
        }
        Ok(Walk { rooms, more: false })
    }
}
