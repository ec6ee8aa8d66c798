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

    /// Loads the visibility history for a viewer that never had a membership
    /// in the room, such as a server none of whose users took part. Only
    /// `world_readable` history is visible to such a viewer.
    pub async fn load_outsider(pool: &sqlx::AnyPool, room_id: &RoomId) -> Result<Self> {
        let visibilities = storage::events::state_history(pool, room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .into_iter()
            .map(|(stream, json)| (stream, field(&json, "history_visibility").unwrap_or_else(|| "shared".into())))
            .collect();
        Ok(Self { memberships: Vec::new(), visibilities })
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

impl super::Rooms {
    /// Decides whether `server` may see an outlier of its room: an event
    /// outside the timeline, such as an auth chain event from `send_join` or
    /// a soft-failed event, which has no stream position to apply
    /// [`Visibility`] to. The rules are applied to the state after the
    /// event when it is known, and to the memberships of the server's users
    /// there: `world_readable` lets every server see it, `joined` a server
    /// with a joined user, `invited` one with a joined or invited user, and
    /// `shared` also a server with a user joined now. When that state is not
    /// known, the event counts as `shared` with no membership, so a server
    /// with a user joined now may see it.
    ///
    /// NOTE: under `shared`, a server whose users joined after the event
    /// and have since left may see such history in the timeline, but not
    /// here, because an outlier has no place in the room's order.
    pub async fn server_may_see_outlier(
        &self,
        event: &storage::events::StoredEvent,
        server: &ruma::ServerName,
    ) -> Result<bool> {
        let current = self.state(&event.pdu.room_id).await?;
        let joined_now = best_membership(current.state.iter(), server) == Some("join");
        if event.state_group == 0 {
            return Ok(joined_now);
        }
        let state = self.state_of_group(event.state_group).await?;
        let visibility = state
            .get(&(ruma::events::StateEventType::RoomHistoryVisibility, String::new()))
            .and_then(|pdu| pdu.content_str("history_visibility"))
            .unwrap_or_else(|| "shared".into());
        let membership = best_membership(state.iter(), server);
        Ok(match visibility.as_str() {
            "world_readable" => true,
            "joined" => membership == Some("join"),
            "invited" => matches!(membership, Some("join" | "invite")),
            // `shared`, and any unknown value, which the spec treats as `shared`.
            _ => membership == Some("join") || joined_now,
        })
    }
}

/// Returns the strongest membership (`join`, then `invite`) that a user of
/// `server` has in `state`.
fn best_membership<'a>(
    state: impl Iterator<Item = (&'a (ruma::events::StateEventType, String), &'a std::sync::Arc<super::pdu::Pdu>)>,
    server: &ruma::ServerName,
) -> Option<&'static str> {
    let mut best = None;
    for ((kind, key), pdu) in state {
        if *kind != ruma::events::StateEventType::RoomMember
            || UserId::parse(key.as_str()).map_or(true, |user| user.server_name() != server)
        {
            continue;
        }
        match pdu.membership().as_deref() {
            Some("join") => return Some("join"),
            Some("invite") => best = Some("invite"),
            _ => {}
        }
    }
    best
}
