//! Summaries of rooms this server is not in, read from other servers with
//! `GET /_matrix/federation/v1/hierarchy/{roomId}` (spec: Server-Server
//! API, "Spaces") for the client `/hierarchy`. Requests go to a few of the
//! servers of the child's `via` list with a short timeout, and responses are
//! cached for a short time, as the spec recommends.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use http::Method;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName};
use serde_json::{Map, Value, json};

use super::{Rooms, fetch::segment};

/// Maximum number of servers of a `via` list requested for one room, in list order.
const MAX_VIA_SERVERS: usize = 3;
/// Timeout of one server's response.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response stays in the cache.
const RESPONSE_TTL: Duration = Duration::from_secs(60);
/// How long a room that no server described stays in the cache as unavailable.
const FAILURE_TTL: Duration = Duration::from_secs(15);
/// Maximum number of cache entries. Expired entries are dropped first.
const MAX_CACHED: usize = 1000;

/// Another server's description of a space: the room itself, the summaries
/// of its children, and the children that server marked inaccessible.
#[derive(Debug)]
pub(super) struct RemoteSpace {
    pub(super) room: Value,
    pub(super) children: HashMap<OwnedRoomId, Value>,
    pub(super) inaccessible: HashSet<OwnedRoomId>,
}

/// A cached response, or `None` when no server described the room.
pub(super) struct CachedSpace {
    at: Instant,
    space: Option<Arc<RemoteSpace>>,
}

/// The cache of other servers' space responses, by room and `suggested_only`.
pub(super) type SpaceCache = std::sync::Mutex<HashMap<(OwnedRoomId, bool), CachedSpace>>;

/// Returns the string at `key` of `object` when it is a string.
fn string(object: &Map<String, Value>, key: &str) -> Option<Value> {
    object.get(key).filter(|v| v.is_string()).cloned()
}

/// Checks and copies one `children_state` entry: an `m.space.child` event
/// whose state key is a room id, with its content, sender and timestamp.
fn child_event(value: &Value) -> Option<Value> {
    let event = value.as_object()?;
    if event.get("type")?.as_str()? != "m.space.child" {
        return None;
    }
    let state_key = event.get("state_key")?.as_str()?;
    RoomId::parse(state_key).ok()?;
    let content = event.get("content").filter(|c| c.is_object())?;
    let sender = event.get("sender")?.as_str()?;
    let origin_server_ts = event.get("origin_server_ts")?.as_u64()?;
    Some(json!({
        "type": "m.space.child",
        "state_key": state_key,
        "content": content,
        "sender": sender,
        "origin_server_ts": origin_server_ts,
    }))
}

/// Checks and copies a room summary from another server, keeping only the
/// fields of the spec's room summary with the types it gives them. Returns
/// `None` for a summary without a valid `room_id`, `num_joined_members`,
/// `world_readable` or `guest_can_join`. A missing `join_rule` is `public`,
/// the spec's default; a missing `children_state` stays missing, since the
/// summaries of a space's children need not have one.
fn checked_summary(value: &Value) -> Option<(OwnedRoomId, Value)> {
    let object = value.as_object()?;
    let room_id = RoomId::parse(object.get("room_id")?.as_str()?).ok()?;
    let mut summary = Map::new();
    summary.insert("room_id".into(), json!(room_id));
    summary.insert("num_joined_members".into(), json!(object.get("num_joined_members")?.as_u64()?));
    summary.insert("world_readable".into(), json!(object.get("world_readable")?.as_bool()?));
    summary.insert("guest_can_join".into(), json!(object.get("guest_can_join")?.as_bool()?));
    summary.insert("join_rule".into(), string(object, "join_rule").unwrap_or_else(|| json!("public")));
    for key in ["name", "topic", "canonical_alias", "avatar_url", "room_type", "room_version", "encryption"] {
        if let Some(text) = string(object, key) {
            summary.insert(key.into(), text);
        }
    }
    if let Some(allowed) = object.get("allowed_room_ids").and_then(Value::as_array) {
        let ids: Vec<&str> = allowed.iter().filter_map(Value::as_str).filter(|id| RoomId::parse(*id).is_ok()).collect();
        summary.insert("allowed_room_ids".into(), json!(ids));
    }
    if let Some(list) = object.get("children_state").and_then(Value::as_array) {
        let children: Vec<Value> = list.iter().filter_map(child_event).collect();
        summary.insert("children_state".into(), Value::Array(children));
    }
    Some((room_id, Value::Object(summary)))
}

/// Reads a federation `/hierarchy` response for `room_id`, or `None` when its
/// `room` is not a valid summary of that room. Summaries and inaccessible
/// rooms are kept only for children that the room's `children_state` lists.
fn read_response(room_id: &RoomId, response: &Value) -> Option<RemoteSpace> {
    let (id, mut room) = checked_summary(&response["room"])?;
    if id != room_id {
        return None;
    }
    if room.get("children_state").is_none() {
        room["children_state"] = json!([]);
    }
    let listed: HashSet<&str> = room["children_state"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["state_key"].as_str()).collect())
        .unwrap_or_default();
    let children = response["children"]
        .as_array()
        .map(|list| list.iter().filter_map(checked_summary).filter(|(id, _)| listed.contains(id.as_str())).collect())
        .unwrap_or_default();
    let inaccessible = response["inaccessible_children"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|id| id.as_str().filter(|id| listed.contains(id)))
                .filter_map(|id| OwnedRoomId::try_from(id).ok())
                .collect()
        })
        .unwrap_or_default();
    Some(RemoteSpace { room, children, inaccessible })
}

/// Limits on the requests of one walk to other servers: a deadline, and the
/// number of rooms not in the cache that it may still request.
pub(super) struct RemoteBudget {
    pub(super) deadline: tokio::time::Instant,
    pub(super) requests_left: usize,
}

impl Rooms {
    /// Returns another server's description of `room_id`, from the cache or
    /// from the first of the `via` servers (at most [`MAX_VIA_SERVERS`],
    /// this server left out) whose response has a valid summary of it.
    /// Skips servers that are down or return an error, and returns `None`
    /// when no server succeeds within the budget.
    pub(super) async fn remote_space(
        &self,
        room_id: &RoomId,
        via: &[String],
        suggested_only: bool,
        budget: &mut RemoteBudget,
    ) -> Option<Arc<RemoteSpace>> {
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for name in via {
            let Ok(server) = ServerName::parse(name) else { continue };
            if server != self.server_name && !servers.contains(&server) {
                servers.push(server);
            }
        }
        if servers.is_empty() {
            return None;
        }
        let key = (room_id.to_owned(), suggested_only);
        if let Some(cached) = self.space_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            let ttl = if cached.space.is_some() { RESPONSE_TTL } else { FAILURE_TTL };
            if cached.at.elapsed() < ttl {
                return cached.space.clone();
            }
        }
        if budget.requests_left == 0 || tokio::time::Instant::now() >= budget.deadline {
            return None;
        }
        budget.requests_left -= 1;
        let federation = self.federation().ok()?;
        let path =
            format!("/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}", segment(room_id.as_str()));
        let mut found = None;
        for server in servers.into_iter().take(MAX_VIA_SERVERS) {
            let deadline = budget.deadline.min(tokio::time::Instant::now() + SERVER_TIMEOUT);
            let request = federation.send_json(&server, Method::GET, &path, None, true);
            let response = match tokio::time::timeout_at(deadline, request).await {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => {
                    tracing::info!(%server, %room_id, error = %err, "space hierarchy request failed");
                    continue;
                }
                Err(_) => {
                    tracing::info!(%server, %room_id, "space hierarchy request timed out");
                    continue;
                }
            };
            match read_response(room_id, &response) {
                Some(space) => {
                    found = Some(Arc::new(space));
                    break;
                }
                None => tracing::info!(%server, %room_id, "invalid space hierarchy response"),
            }
        }

        let mut cache = self.space_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, entry| entry.at.elapsed() < RESPONSE_TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, CachedSpace { at: Instant::now(), space: found.clone() });
        found
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{checked_summary, read_response};

    fn summary(room_id: &str) -> serde_json::Value {
        json!({
            "room_id": room_id,
            "num_joined_members": 3,
            "world_readable": false,
            "guest_can_join": false,
            "name": "Sub",
            "extra": "dropped",
            "children_state": [
                {
                    "type": "m.space.child",
                    "state_key": "!child:b.test",
                    "content": { "via": ["b.test"] },
                    "sender": "@bob:b.test",
                    "origin_server_ts": 5,
                },
                { "type": "m.room.name", "state_key": "!other:b.test", "content": {}, "sender": "@bob:b.test", "origin_server_ts": 5 },
            ],
        })
    }

    #[test]
    fn summary_keeps_spec_fields_only() {
        let (room_id, checked) = checked_summary(&summary("!space:b.test")).expect("a valid summary");
        assert_eq!(room_id.as_str(), "!space:b.test");
        assert_eq!(checked["name"], "Sub");
        assert_eq!(checked["join_rule"], "public");
        assert!(checked.get("extra").is_none());
        assert_eq!(checked["children_state"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn summary_without_required_fields_is_rejected() {
        let mut no_count = summary("!space:b.test");
        no_count.as_object_mut().unwrap().remove("num_joined_members");
        assert!(checked_summary(&no_count).is_none());
        let mut bad_flag = summary("!space:b.test");
        bad_flag["world_readable"] = json!("yes");
        assert!(checked_summary(&bad_flag).is_none());
        assert!(checked_summary(&summary("not a room id")).is_none());
    }

    #[test]
    fn response_keeps_listed_children_only() {
        let room_id = ruma::RoomId::parse("!space:b.test").unwrap();
        let response = json!({
            "room": summary("!space:b.test"),
            "children": [summary("!child:b.test"), summary("!stranger:c.test")],
            "inaccessible_children": ["!child:b.test", "!stranger:c.test"],
        });
        let space = read_response(&room_id, &response).expect("a valid response");
        assert_eq!(space.children.len(), 1);
        assert!(space.children.keys().all(|id| id.as_str() == "!child:b.test"));
        assert_eq!(space.inaccessible.len(), 1);

        let other = ruma::RoomId::parse("!elsewhere:b.test").unwrap();
        assert!(read_response(&other, &response).is_none(), "a summary of another room is rejected");
    }
}
