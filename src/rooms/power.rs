//! Reading power levels from a room's state, for the decisions the server makes
//! beside the authorization rules (redactions, room previews, presets).

use ruma::{UserId, events::StateEventType};
use serde_json::Value;

use super::state::RoomState;

/// A power level above every integer level, for room version 12 creators.
pub const CREATOR_LEVEL: i64 = i64::MAX;

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Whether the user is one of the room's creators in a version where creators
/// outrank everyone (room version 12).
pub fn is_privileged_creator(room: &RoomState, user_id: &UserId) -> bool {
    if !room.rules.authorization.explicitly_privilege_room_creators {
        return false;
    }
    let Some(create) = room.create_event() else {
        return false;
    };
    if create.sender == user_id {
        return true;
    }
    create
        .content_value()
        .get("additional_creators")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|v| v.as_str() == Some(user_id.as_str())))
}

pub fn user_level(room: &RoomState, user_id: &UserId) -> i64 {
    if is_privileged_creator(room, user_id) {
        return CREATOR_LEVEL;
    }
    let levels = room.content(&StateEventType::RoomPowerLevels, "");
    if levels.is_null() {
        // Without power levels the creator has 100 and everyone else 0.
        let creator = room.create_event().map(|c| c.sender.clone());
        return if creator.as_deref() == Some(user_id) { 100 } else { 0 };
    }
    int(levels.get("users").and_then(|u| u.get(user_id.as_str())))
        .or_else(|| int(levels.get("users_default")))
        .unwrap_or(0)
}

/// The level named by a top-level key such as `redact`, `kick` or `ban`.
pub fn action_level(room: &RoomState, action: &str, default: i64) -> i64 {
    int(room.content(&StateEventType::RoomPowerLevels, "").get(action)).unwrap_or(default)
}

/// The level needed to send an event of this type.
pub fn event_level(room: &RoomState, event_type: &str, is_state: bool) -> i64 {
    let levels = room.content(&StateEventType::RoomPowerLevels, "");
    if let Some(level) = int(levels.get("events").and_then(|e| e.get(event_type))) {
        return level;
    }
    if is_state {
        int(levels.get("state_default")).unwrap_or(if levels.is_null() { 0 } else { 50 })
    } else {
        int(levels.get("events_default")).unwrap_or(0)
    }
}
