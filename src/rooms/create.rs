//! `createRoom`: the spec's sequence of initial events, built on a fresh room
//! state and committed together, so a rejected request leaves no room behind.

use std::sync::Arc;

use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
};
use serde_json::{Map, Value, json};

use super::{
    Rooms,
    builder::{self, EventDraft},
    persist::NewRoom,
    state::RoomState,
    version,
};
use crate::{
    error::{Error, ErrorKind, Result},
    policy::RoomCreation,
    storage,
};

/// A validated `createRoom` request.
#[derive(Debug, Clone, Default)]
pub struct CreateRoom {
    pub visibility_public: bool,
    pub alias_localpart: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub room_version: Option<RoomVersionId>,
    pub creation_content: Map<String, Value>,
    pub initial_state: Vec<(String, String, Value)>,
    pub preset: Option<String>,
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
    /// The `reason` of every invite, such as the note of a connection request.
    pub invite_reason: Option<String>,
}

impl Rooms {
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request.room_version.clone().unwrap_or_else(|| self.default_version.clone());
        let rules = version::rules(&version).ok_or_else(|| {
            Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version} is not supported"))
        })?;
        let preset = match request.preset.as_deref() {
            Some(p @ ("private_chat" | "trusted_private_chat" | "public_chat")) => p.to_owned(),
            Some(other) => return Err(Error::bad_json(format!("preset {other:?} is unknown"))),
            None if request.visibility_public => "public_chat".to_owned(),
            None => "private_chat".to_owned(),
        };

        self.policy
            .check_create_room(RoomCreation {
                creator,
                invites: &request.invite,
                is_direct: request.is_direct,
                preset: &preset,
            })
            .await?;

        let alias = match &request.alias_localpart {
            Some(localpart) => {
                let alias = OwnedRoomAliasId::try_from(format!("#{localpart}:{}", self.server_name))
                    .map_err(|e| Error::new(ErrorKind::InvalidParam, format!("room_alias_name is invalid: {e}")))?;
                if storage::rooms::resolve_alias(&self.db.pool, alias.as_str()).await?.is_some() {
                    return Err(Error::new(ErrorKind::RoomInUse, format!("room alias {alias} is already taken")));
                }
                Some(alias)
            }
            None => None,
        };

        let placeholder = OwnedRoomId::try_from(format!("!{}:{}", random_localpart(18), self.server_name))
            .map_err(|e| Error::internal("generating a room id", e))?;
        let mut room = RoomState::new(placeholder, version.clone(), rules.clone());
        let mut events = Vec::new();
        let mut add = |room: &mut RoomState, draft: EventDraft| -> Result<()> {
            events.push(builder::build(
                room,
                &self.server_name,
                &self.key,
                creator,
                draft,
                self.db.writer.positions(),
            )?);
            Ok(())
        };

        // 1. The create event.
        let mut create_content = request.creation_content.clone();
        create_content.insert("room_version".into(), json!(version.as_str()));
        if rules.authorization.use_room_create_sender {
            create_content.remove("creator");
        } else {
            create_content.insert("creator".into(), json!(creator));
        }
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
        if privileged_creators && preset == "trusted_private_chat" {
            // Creators outrank every power level here, so invitees get the creator's
            // level by becoming additional creators.
            let mut additional: Vec<Value> =
                create_content.get("additional_creators").and_then(Value::as_array).cloned().unwrap_or_default();
            for invitee in &request.invite {
                let invitee = json!(invitee);
                if !additional.contains(&invitee) {
                    additional.push(invitee);
                }
            }
            create_content.insert("additional_creators".into(), Value::Array(additional));
        }
        add(&mut room, EventDraft::state(TimelineEventType::RoomCreate, "", Value::Object(create_content)))?;

        // 2. The creator joins.
        let mut join = json!({ "membership": "join" });
        if let Some(user) = storage::users::get(&self.db.pool, creator.as_str()).await? {
            if let Some(name) = user.displayname {
                join["displayname"] = json!(name);
            }
            if let Some(url) = user.avatar_url {
                join["avatar_url"] = json!(url);
            }
        }
        add(&mut room, EventDraft::state(TimelineEventType::RoomMember, creator.as_str(), join))?;

        // 3. Power levels, from the preset and then the client's override.
        let mut users = Map::new();
        if !privileged_creators {
            users.insert(creator.to_string(), json!(100));
        }
        if preset == "trusted_private_chat" && !privileged_creators {
            for invitee in &request.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
        let mut power_levels = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": 100,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": if preset == "public_chat" { 50 } else { 0 },
            "notifications": { "room": 50 },
        });
        if let Some(overrides) = &request.power_level_content_override {
            for (key, value) in overrides {
                power_levels[key] = value.clone();
            }
        }
        add(&mut room, EventDraft::state(TimelineEventType::RoomPowerLevels, "", power_levels))?;

        // 4. The canonical alias.
        if let Some(alias) = &alias {
            add(&mut room, EventDraft::state(TimelineEventType::RoomCanonicalAlias, "", json!({ "alias": alias })))?;
        }

        // 5. The preset's join rules, history visibility and guest access.
        let join_rule = if preset == "public_chat" { "public" } else { "invite" };
        let in_initial_state =
            |kind: &str| request.initial_state.iter().any(|(k, state_key, _)| k == kind && state_key.is_empty());
        if !in_initial_state("m.room.join_rules") {
            add(&mut room, EventDraft::state(TimelineEventType::RoomJoinRules, "", json!({ "join_rule": join_rule })))?;
        }
        if !in_initial_state("m.room.history_visibility") {
            add(
                &mut room,
                EventDraft::state(
                    TimelineEventType::RoomHistoryVisibility,
                    "",
                    json!({ "history_visibility": "shared" }),
                ),
            )?;
        }
        if preset != "public_chat" && !in_initial_state("m.room.guest_access") {
            add(
                &mut room,
                EventDraft::state(TimelineEventType::RoomGuestAccess, "", json!({ "guest_access": "can_join" })),
            )?;
        }

        // 6. The client's initial state.
        for (kind, state_key, content) in &request.initial_state {
            if kind == "m.room.create" || kind == "m.room.member" || kind == "m.room.power_levels" {
                return Err(Error::bad_json(format!("initial_state may not contain {kind} events")));
            }
            add(&mut room, EventDraft::state(kind.as_str(), state_key.as_str(), content.clone()))?;
        }

        // 7. Name and topic.
        if let Some(name) = &request.name {
            if name.len() > 255 {
                return Err(Error::bad_json("name is longer than 255 bytes"));
            }
            add(&mut room, EventDraft::state(TimelineEventType::RoomName, "", json!({ "name": name })))?;
        }
        if let Some(topic) = &request.topic {
            add(&mut room, EventDraft::state(TimelineEventType::RoomTopic, "", json!({ "topic": topic })))?;
        }

        // 8. Invites.
        for invitee in &request.invite {
            if invitee == creator {
                return Err(Error::bad_json("invite must not contain the creator"));
            }
            let reason = request.invite_reason.as_deref();
            let invite =
                crate::policy::Invite { room: &room, sender: creator, invitee, is_direct: request.is_direct, reason };
            self.policy.check_invite(invite).await?;
            let mut content = json!({ "membership": "invite" });
            if request.is_direct {
                content["is_direct"] = json!(true);
            }
            if let Some(reason) = reason {
                content["reason"] = json!(reason);
            }
            if let Some(user) = storage::users::get(&self.db.pool, invitee.as_str()).await? {
                if let Some(name) = user.displayname {
                    content["displayname"] = json!(name);
                }
                if let Some(url) = user.avatar_url {
                    content["avatar_url"] = json!(url);
                }
            }
            add(&mut room, EventDraft::state(TimelineEventType::RoomMember, invitee.as_str(), content))?;
        }
        // Invites of other servers' users are countersigned by those servers
        // before anything is stored, so a refusal leaves no room behind.
        for built in &mut events {
            let Some(invitee) = built.pdu.state_key.as_deref().and_then(|key| UserId::parse(key).ok()) else {
                continue;
            };
            if built.pdu.membership().as_deref() == Some("invite") && invitee.server_name() != self.server_name {
                let countersigned = Arc::new(self.countersign_invite(&room, &built.pdu, &invitee).await?);
                room.state.insert((StateEventType::RoomMember, invitee.to_string()), countersigned.clone());
                built.pdu = countersigned;
            }
        }

        let room_id = room.room_id.clone();
        let new_room = NewRoom {
            version: version.to_string(),
            creator: creator.to_string(),
            is_public: request.visibility_public,
            alias: alias.map(|a| a.to_string()),
        };
        self.persist_new_room(room, events, new_room).await?;
        tracing::info!(%room_id, %creator, %version, "created room");
        Ok(room_id)
    }
}

pub fn random_localpart(length: usize) -> String {
    use rand::{Rng, distributions::Alphanumeric};
    rand::thread_rng().sample_iter(&Alphanumeric).take(length).map(char::from).collect()
}
