//! Filters (`/user/{userId}/filter` and the `filter` parameter of `/sync` and
//! `/messages`), in the spec's format.

use serde::{Deserialize, Serialize};

use crate::rooms::pdu::Pdu;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_fields: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_format: Option<EventFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<EventFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_data: Option<EventFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomFilter>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    Client,
    Federation,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_senders: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_leave: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<RoomEventFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<RoomEventFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<RoomEventFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_data: Option<RoomEventFilter>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Whether `/sync` splits unread counts by thread (`unread_thread_notifications`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_thread_notifications: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_senders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lazy_load_members: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_redundant_members: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains_url: Option<bool>,
}

/// Whether `value` matches a filter type pattern, where `*` matches any run of characters.
pub fn matches_pattern(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            if !value.starts_with(prefix) {
                return false;
            }
            let tail = &value[prefix.len()..];
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| matches_pattern(rest, &tail[i..]))
        }
    }
}

fn allowed(list: &Option<Vec<String>>, not_list: &Option<Vec<String>>, value: &str, pattern: bool) -> bool {
    let matches = |p: &String| {
        if pattern { matches_pattern(p, value) } else { p == value }
    };
    if not_list.as_ref().is_some_and(|l| l.iter().any(matches)) {
        return false;
    }
    list.as_ref().is_none_or(|l| l.iter().any(matches))
}

impl RoomEventFilter {
    pub fn allows(&self, pdu: &Pdu) -> bool {
        allowed(&self.types, &self.not_types, &pdu.kind.to_string(), true)
            && allowed(&self.senders, &self.not_senders, pdu.sender.as_str(), false)
            && allowed(&self.rooms, &self.not_rooms, pdu.room_id.as_str(), false)
            && self.contains_url.is_none_or(|want| {
                let has = pdu.content_value().get("url").is_some_and(|u| u.is_string());
                has == want
            })
    }

    pub fn lazy_load(&self) -> bool {
        self.lazy_load_members.unwrap_or(false)
    }
}

impl EventFilter {
    pub fn allows_type(&self, kind: &str) -> bool {
        allowed(&self.types, &self.not_types, kind, true)
    }
}

impl RoomFilter {
    pub fn allows_room(&self, room_id: &str) -> bool {
        allowed(&self.rooms, &self.not_rooms, room_id, false)
    }
}

#[cfg(test)]
mod tests {
    use super::matches_pattern;

    #[test]
    fn wildcard_patterns() {
        assert!(matches_pattern("m.room.*", "m.room.message"));
        assert!(matches_pattern("*", "anything"));
        assert!(matches_pattern("m.*.message", "m.room.message"));
        assert!(!matches_pattern("m.room.*", "m.typing"));
        assert!(matches_pattern("m.room.member", "m.room.member"));
        assert!(!matches_pattern("m.room.member", "m.room.members"));
    }
}
