//! The `/sync` response body. Events are carried as pre-serialized JSON, so a
//! large initial sync is written out once instead of being built as a tree.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, value::RawValue};

#[derive(Debug, Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub account_data: Events<Value>,
    pub presence: Events<Value>,
    pub to_device: Events<Value>,
    pub device_lists: DeviceLists,
    pub device_one_time_keys_count: BTreeMap<String, i64>,
    pub device_unused_fallback_key_types: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Rooms {
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: BTreeMap<String, Value>,
    pub leave: BTreeMap<String, LeftRoom>,
    pub knock: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct Events<T> {
    pub events: Vec<T>,
}

impl<T> Default for Events<T> {
    fn default() -> Self {
        Self { events: Vec::new() }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct DeviceLists {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Timeline {
    pub events: Vec<Box<RawValue>>,
    pub limited: bool,
    pub prev_batch: String,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    #[serde(rename = "m.heroes")]
    pub heroes: Vec<String>,
    #[serde(rename = "m.joined_member_count")]
    pub joined_member_count: usize,
    #[serde(rename = "m.invited_member_count")]
    pub invited_member_count: usize,
}

#[derive(Debug, Serialize)]
pub struct UnreadNotifications {
    pub notification_count: i64,
    pub highlight_count: i64,
}

#[derive(Debug, Serialize)]
pub struct JoinedRoom {
    pub timeline: Timeline,
    pub state: Events<Box<RawValue>>,
    pub ephemeral: Events<Value>,
    pub account_data: Events<Value>,
    pub summary: Summary,
    pub unread_notifications: UnreadNotifications,
}

#[derive(Debug, Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events<Box<RawValue>>,
    pub account_data: Events<Value>,
}
