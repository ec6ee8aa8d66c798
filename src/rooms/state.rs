//! The in-memory state of a room that events are built on: its current state
//! events, forward extremities, depth and state group. Each room has one such
//! value behind a lock, so that writes to a room happen one at a time.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    OwnedEventId, OwnedRoomId, RoomVersionId, ServerName, UserId, events::StateEventType,
    room_version_rules::RoomVersionRules,
};

use super::pdu::Pdu;

/// After this many deltas a state group is stored as a full snapshot again,
/// so that loading any state costs at most this many steps.
pub const MAX_STATE_CHAIN: i64 = 100;

#[derive(Debug, Clone)]
pub struct RoomState {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub state: HashMap<(StateEventType, String), Arc<Pdu>>,
    pub extremities: Vec<OwnedEventId>,
    pub depth: i64,
    /// The state group of the state after the newest event (0 before the first).
    pub state_group: i64,
    pub chain_length: i64,
}

impl RoomState {
    pub fn new(room_id: OwnedRoomId, version: RoomVersionId, rules: RoomVersionRules) -> Self {
        Self {
            room_id,
            version,
            rules,
            state: HashMap::new(),
            extremities: Vec::new(),
            depth: 0,
            state_group: 0,
            chain_length: 0,
        }
    }

    pub fn get(&self, kind: &StateEventType, state_key: &str) -> Option<&Arc<Pdu>> {
        self.state.get(&(kind.clone(), state_key.to_owned()))
    }

    pub fn create_event(&self) -> Option<&Arc<Pdu>> {
        self.get(&StateEventType::RoomCreate, "")
    }

    /// The membership of a user (`join`, `invite`, `leave`, `ban`, `knock`), if any.
    pub fn membership(&self, user_id: &UserId) -> Option<String> {
        self.get(&StateEventType::RoomMember, user_id.as_str()).and_then(|pdu| pdu.membership())
    }

    pub fn is_joined(&self, user_id: &UserId) -> bool {
        self.get(&StateEventType::RoomMember, user_id.as_str()).and_then(|pdu| pdu.membership_str()) == Some("join")
    }

    /// Users of `server_name` who are joined or invited: the local audience of a new event.
    pub fn local_members(&self, server_name: &ServerName) -> Vec<ruma::OwnedUserId> {
        self.state
            .iter()
            .filter(|((kind, key), pdu)| {
                // A user id of `server_name` ends in `:server_name`; the
                // string test spares parsing the ids of other servers' users.
                *kind == StateEventType::RoomMember
                    && matches!(pdu.membership_str(), Some("join" | "invite"))
                    && key.strip_suffix(server_name.as_str()).is_some_and(|rest| rest.ends_with(':'))
            })
            .filter_map(|((_, key), _)| {
                UserId::parse(key.as_str()).ok().filter(|user| user.server_name() == server_name)
            })
            .collect()
    }

    /// The servers in the room: those with at least one joined member, in a
    /// stable order. This is the one place that derives it from membership
    /// state; outbound PDUs and EDUs go to these servers (except this one).
    pub fn servers(&self) -> Vec<ruma::OwnedServerName> {
        let mut servers: Vec<ruma::OwnedServerName> = self
            .state
            .iter()
            .filter(|((kind, _), pdu)| {
                *kind == StateEventType::RoomMember && pdu.membership().as_deref() == Some("join")
            })
            .filter_map(|((_, key), _)| UserId::parse(key.as_str()).ok().map(|u| u.server_name().to_owned()))
            .collect();
        servers.sort();
        servers.dedup();
        servers
    }

    /// The servers other than `own` that receive the room's new events and EDUs.
    pub fn remote_servers(&self, own: &ServerName) -> Vec<ruma::OwnedServerName> {
        self.servers().into_iter().filter(|s| s != own).collect()
    }

    /// Number of members with the given membership.
    pub fn count_membership(&self, membership: &str) -> usize {
        self.state
            .iter()
            .filter(|((kind, _), pdu)| *kind == StateEventType::RoomMember && pdu.membership_str() == Some(membership))
            .count()
    }

    /// The state event with the given event id, if it is part of the current state.
    pub fn find_event(&self, event_id: &ruma::EventId) -> Option<&Arc<Pdu>> {
        self.state.values().find(|pdu| pdu.event_id == event_id)
    }

    /// The content of a state event as JSON, or `Null`.
    pub fn content(&self, kind: &StateEventType, state_key: &str) -> serde_json::Value {
        self.get(kind, state_key).map(|pdu| pdu.content_value()).unwrap_or(serde_json::Value::Null)
    }
}
