//! Room versions this server creates and joins, and their rules.
//!
//! Versions 6 and later are served: they enforce canonical JSON, which the
//! authorization rules of ruma-state-res require to be exact.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

pub const SUPPORTED: &[RoomVersionId] = &[
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

pub fn is_supported(version: &RoomVersionId) -> bool {
    SUPPORTED.contains(version)
}

/// The rules of a supported version.
pub fn rules(version: &RoomVersionId) -> Option<RoomVersionRules> {
    if is_supported(version) { version.rules() } else { None }
}
