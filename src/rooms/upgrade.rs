//! Room upgrades (spec: Client-Server API, "Room Upgrades"): a new room of
//! another version that takes over the old room's settings, bans and local
//! aliases, and a tombstone in the old room that points members to it.

use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId, events::TimelineEventType};
use serde_json::{Map, Value, json};

use super::{Rooms, builder::EventDraft, create::CreateRoom, power, version};
use crate::{
    error::{Error, ErrorKind, Result},
    storage,
};

/// State copied into the new room as it is, when the old room has it.
const COPIED_STATE: [&str; 10] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.pinned_events",
];

/// The lowest level that may speak or invite in the old room afterwards.
const RESTRICTED_LEVEL: i64 = 50;

impl Rooms {
    /// Replaces `old` by a new room of `new_version`, created by `user`, and
    /// returns the new room's id.
    pub async fn upgrade(&self, user: &UserId, old: &RoomId, new_version: RoomVersionId) -> Result<OwnedRoomId> {
        let rules = version::rules(&new_version).ok_or_else(|| {
            Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {new_version} is not supported"))
        })?;
        let state = self.state(old).await?;
        if !state.is_joined(user) {
            return Err(Error::forbidden(format!("you are not joined to room {old}")));
        }
        let needed = power::event_level(&state, "m.room.tombstone", true);
        if power::user_level(&state, user) < needed && !power::is_privileged_creator(&state, user) {
            return Err(Error::forbidden(format!(
                "upgrading room {old} needs power level {needed} to send m.room.tombstone"
            )));
        }

        // The new room's create event names the old room as its predecessor.
        let old_create = state.content(&ruma::events::StateEventType::RoomCreate, "");
        let mut creation_content = Map::new();
        for key in ["type", "m.federate"] {
            if let Some(value) = old_create.get(key) {
                creation_content.insert(key.into(), value.clone());
            }
        }
        let mut predecessor = json!({ "room_id": old });
        if let Some(last) = state.extremities.first() {
            predecessor["event_id"] = json!(last);
        }
        creation_content.insert("predecessor".into(), predecessor);

        let mut power_levels =
            state.content(&ruma::events::StateEventType::RoomPowerLevels, "").as_object().cloned().unwrap_or_default();
        let mut old_power_levels = power_levels.clone();
        let users = power_levels.entry("users").or_insert_with(|| json!({}));
        if let Some(users) = users.as_object_mut() {
            if rules.authorization.explicitly_privilege_room_creators {
                // The upgrading user creates the new room, and creators of
                // such rooms have no entry in the power levels.
                users.remove(user.as_str());
            } else {
                // Without privileged creators, the creator needs the top level
                // to send the copied state.
                users.insert(user.to_string(), json!(100));
            }
        }

        let mut initial_state = Vec::new();
        for kind in COPIED_STATE {
            if let Some(pdu) = state.get(&kind.into(), "") {
                initial_state.push((kind.to_owned(), String::new(), pdu.content_value()));
            }
        }
        let join_rule = state.content(&"m.room.join_rules".into(), "")["join_rule"].as_str().map(str::to_owned);
        let public = join_rule.as_deref() == Some("public");
        if !public && state.get(&"m.room.guest_access".into(), "").is_none() {
            // The private preset would allow guests otherwise, which the old room did not.
            initial_state.push(("m.room.guest_access".into(), String::new(), json!({ "guest_access": "forbidden" })));
        }
        let request = CreateRoom {
            visibility_public: storage::rooms::get(&self.db.pool, old.as_str()).await?.is_some_and(|r| r.is_public),
            room_version: Some(new_version.clone()),
            creation_content,
            initial_state,
            preset: Some(if public { "public_chat" } else { "private_chat" }.into()),
            power_level_content_override: Some(power_levels),
            ..CreateRoom::default()
        };
        let new = self.create_room(user, request).await?;

        // Bans carry over, so that a banned user cannot come back through the new room.
        for ((kind, banned), pdu) in &state.state {
            if *kind == ruma::events::StateEventType::RoomMember && pdu.membership().as_deref() == Some("ban") {
                let reason = pdu.content_value().get("reason").cloned();
                let mut content = json!({ "membership": "ban" });
                if let Some(reason) = reason {
                    content["reason"] = reason;
                }
                let draft = EventDraft::state(TimelineEventType::RoomMember, banned.as_str(), content);
                if let Err(error) = self.append(&new, user, draft, None).await {
                    tracing::warn!(room_id = %new, user_id = %banned, %error, "could not copy a ban to the upgraded room");
                }
            }
        }

        // The old room points to the new one, and only moderators speak there.
        let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new });
        self.append(old, user, EventDraft::state(TimelineEventType::RoomTombstone, "", tombstone), None).await?;
        let users_default = old_power_levels.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let restricted = RESTRICTED_LEVEL.max(users_default + 1);
        let mut changed = false;
        for key in ["events_default", "invite"] {
            let current = old_power_levels.get(key).and_then(Value::as_i64).unwrap_or(0);
            if current < restricted {
                old_power_levels.insert(key.into(), json!(restricted));
                changed = true;
            }
        }
        if changed {
            let draft = EventDraft::state(TimelineEventType::RoomPowerLevels, "", Value::Object(old_power_levels));
            if let Err(error) = self.append(old, user, draft, None).await {
                tracing::warn!(room_id = %old, %error, "could not restrict the upgraded room's power levels");
            }
        }

        // Local aliases now lead to the new room.
        for alias in storage::rooms::room_aliases(&self.db.pool, old.as_str()).await? {
            if let Some((_, creator)) = storage::rooms::resolve_alias(&self.db.pool, &alias).await? {
                storage::rooms::delete_alias(&self.db.pool, &alias).await?;
                storage::rooms::insert_alias(&self.db.pool, &alias, new.as_str(), &creator, storage::now_ms()).await?;
            }
        }
        if state.get(&"m.room.canonical_alias".into(), "").is_some() {
            let draft = EventDraft::state(TimelineEventType::RoomCanonicalAlias, "", json!({}));
            if let Err(error) = self.append(old, user, draft, None).await {
                tracing::warn!(room_id = %old, %error, "could not remove the upgraded room's canonical alias");
            }
        }
        tracing::info!(old_room = %old, new_room = %new, version = %new_version, "upgraded room");
        Ok(new)
    }
}
