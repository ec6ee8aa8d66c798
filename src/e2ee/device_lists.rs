//! Device-list tracking (spec: "Tracking the device list for a user"): which
//! users' devices a client must fetch again, and which users it may stop
//! tracking, between two sync tokens.
//!
//! A user is `changed` when their devices or keys changed and they share a
//! room with the caller (joined or invited), or when they started sharing a
//! room with the caller. The caller's own changes count too. A user is `left`
//! when they shared a room at some point in the window and share none now.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::{Services, error::Result, storage, sync::token::SyncToken};

#[derive(Debug, Default)]
pub struct DeviceListChanges {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

impl DeviceListChanges {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

fn membership_of(pdu: &str) -> Option<String> {
    let value: Value = serde_json::from_str(pdu).ok()?;
    value.pointer("/content/membership").and_then(Value::as_str).map(str::to_owned)
}

/// Computes the changes between `from` and `to` as seen by `user_id`.
pub async fn changes_between(
    services: &Services,
    user_id: &str,
    from: &SyncToken,
    to: &SyncToken,
) -> Result<DeviceListChanges> {
    let pool = &services.db.pool;
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut left_candidates: BTreeSet<String> = BTreeSet::new();
    if from.device_lists < to.device_lists {
        changed.extend(
            storage::e2ee::device_list_changes_visible_to(pool, user_id, from.device_lists, to.device_lists).await?,
        );
    }
    if from.events < to.events {
        for (room_id, target, pdu) in
            storage::e2ee::member_events_between(pool, user_id, from.events, to.events).await?
        {
            let Some(membership) = membership_of(&pdu) else {
                continue;
            };
            let joined_or_invited = matches!(membership.as_str(), "join" | "invite");
            if target == user_id {
                // The caller's own membership change concerns every member of the room.
                let mut members = storage::rooms::room_members(pool, &room_id, "join").await?;
                members.extend(storage::rooms::room_members(pool, &room_id, "invite").await?);
                if membership == "join" {
                    changed.extend(members);
                } else if !joined_or_invited {
                    left_candidates.extend(members);
                }
            } else if joined_or_invited {
                changed.insert(target);
            } else {
                left_candidates.insert(target);
            }
        }
    }
    if changed.is_empty() && left_candidates.is_empty() {
        return Ok(DeviceListChanges::default());
    }
    let sharing: BTreeSet<String> = storage::e2ee::users_sharing_rooms(pool, user_id).await?.into_iter().collect();
    changed.retain(|u| u == user_id || sharing.contains(u));
    let left = left_candidates.into_iter().filter(|u| u != user_id && !sharing.contains(u)).collect();
    Ok(DeviceListChanges { changed: changed.into_iter().collect(), left })
}
