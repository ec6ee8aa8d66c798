//! History visibility: which events of a room a user may read, following the
//! spec's rules for `m.room.history_visibility` (`world_readable`, `shared`,
//! `invited`, `joined`) and the user's membership at each event.

use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::{error::Result, storage};

/// A user's membership history and the room's visibility history, in stream order.
pub struct Visibility {
    memberships: Vec<(i64, String)>,
    visibilities: Vec<(i64, String)>,
}

fn field(json: &str, name: &str) -> Option<String> {
    let value: Value = serde_json::from_str(json).ok()?;
    value.get("content")?.get(name)?.as_str().map(str::to_owned)
}

impl Visibility {
    pub async fn load(pool: &sqlx::AnyPool, room_id: &RoomId, user_id: &UserId) -> Result<Self> {
        let memberships = storage::events::state_history(pool, room_id.as_str(), "m.room.member", user_id.as_str())
            .await?
            .into_iter()
            .map(|(stream, json)| (stream, field(&json, "membership").unwrap_or_else(|| "leave".into())))
            .collect();
        let visibilities = storage::events::state_history(pool, room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .into_iter()
            .map(|(stream, json)| (stream, field(&json, "history_visibility").unwrap_or_else(|| "shared".into())))
            .collect();
        Ok(Self { memberships, visibilities })
    }

    /// The user's membership just after the event at `stream` (their own member event included).
    fn membership_at(&self, stream: i64) -> Option<&str> {
        self.memberships.iter().rev().find(|(s, _)| *s <= stream).map(|(_, m)| m.as_str())
    }

    /// The visibility setting in force when the event at `stream` was sent.
    fn visibility_at(&self, stream: i64) -> &str {
        self.visibilities.iter().rev().find(|(s, _)| *s < stream).map(|(_, v)| v.as_str()).unwrap_or("shared")
    }

    fn joined_after(&self, stream: i64) -> bool {
        self.memberships.iter().any(|(s, m)| *s > stream && m == "join")
    }

    /// Whether the user may see the event at `stream`. The user's own member
    /// events and `m.room.history_visibility` events are visible when the
    /// setting before or after them allows it, as the spec's history visibility
    /// rules require, so a member who leaves sees their own leave event.
    pub fn can_see(&self, stream: i64) -> bool {
        let membership = self.membership_at(stream);
        let visibility = self.visibility_at(stream);
        if self.allows(visibility, membership, stream) {
            return true;
        }
        if self.memberships.iter().any(|(s, _)| *s == stream) {
            let before = self.memberships.iter().rev().find(|(s, _)| *s < stream).map(|(_, m)| m.as_str());
            if self.allows(visibility, before, stream) {
                return true;
            }
            // A user who was only invited still sees the end of that invite (a
            // rejection, or a retraction sent for them), so that the left room's
            // timeline carries the leave event and its reason.
            if before == Some("invite") {
                return true;
            }
        }
        if let Some((_, introduced)) = self.visibilities.iter().find(|(s, _)| *s == stream) {
            return self.allows(introduced, membership, stream);
        }
        false
    }

    fn allows(&self, visibility: &str, membership: Option<&str>, stream: i64) -> bool {
        match visibility {
            "world_readable" => true,
            "invited" => matches!(membership, Some("join" | "invite")),
            "joined" => membership == Some("join"),
            // `shared`, and any unknown value, which the spec treats as `shared`.
            _ => membership == Some("join") || self.joined_after(stream),
        }
    }

    /// The stream position after which the user sees nothing more: their leave or
    /// ban, when that is their current membership.
    pub fn left_at(&self) -> Option<i64> {
        match self.memberships.last() {
            Some((stream, m)) if m == "leave" || m == "ban" => Some(*stream),
            _ => None,
        }
    }
}
