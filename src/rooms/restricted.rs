//! Restricted join rules (spec: Client-Server API, "Restricted rooms", and
//! Server-Server API, "Restricted rooms"). In room versions 8 and later, a
//! room whose join rule is `restricted` (or, from version 10,
//! `knock_restricted`) lets in a user who is joined to one of the rooms of
//! its `allow` conditions of type `m.room_membership`. Such a join names, in
//! `join_authorised_via_users_server`, a user of a resident server who may
//! invite, and that server signs the join.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId, events::StateEventType};

use super::{Rooms, power, state::RoomState};
use crate::error::{Error, ErrorKind, Result};

/// The `join_authorised_via_users_server` that a join needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinAuthorisation {
    /// None: the join rule is not restricted, or the user is already invited
    /// or joined.
    NotNeeded,
    /// This local user, who may invite.
    Via(OwnedUserId),
}

/// Returns the room ids of the `m.room_membership` allow conditions of a room whose
/// join rule is restricted in its version, or `None` for any other room.
pub(super) fn allowed_rooms(room: &RoomState) -> Option<Vec<OwnedRoomId>> {
    let rules = &room.rules.authorization;
    let join_rules = room.content(&StateEventType::RoomJoinRules, "");
    let restricted = match join_rules["join_rule"].as_str() {
        Some("restricted") => rules.restricted_join_rule,
        Some("knock_restricted") => rules.knock_restricted_join_rule,
        _ => false,
    };
    if !restricted {
        return None;
    }
    let conditions = join_rules["allow"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rooms = conditions
        .iter()
        .filter(|condition| condition["type"] == "m.room_membership")
        .filter_map(|condition| condition["room_id"].as_str())
        .filter_map(|id| RoomId::parse(id).ok())
        .collect();
    Some(rooms)
}

impl Rooms {
    /// Decides whether `user` may join `room` through its allow conditions,
    /// and which local user authorises the join. The errors are those that
    /// the spec gives a resident server. A user who meets no condition gets
    /// 403 `M_FORBIDDEN`. When this server is in none of the allowed rooms,
    /// the error is 400 `M_UNABLE_TO_AUTHORISE_JOIN`, and when no joined
    /// local user may invite, 400 `M_UNABLE_TO_GRANT_JOIN`.
    pub(super) async fn authorise_join(&self, room: &RoomState, user: &UserId) -> Result<JoinAuthorisation> {
        let Some(allowed) = allowed_rooms(room) else {
            return Ok(JoinAuthorisation::NotNeeded);
        };
        if matches!(room.membership(user).as_deref(), Some("join" | "invite")) {
            return Ok(JoinAuthorisation::NotNeeded);
        }

        let mut checked_any = false;
        let mut meets_condition = false;
        for allowed_room in &allowed {
            if !self.is_resident(allowed_room).await? {
                continue;
            }
            checked_any = true;
            if self.state(allowed_room).await?.is_joined(user) {
                meets_condition = true;
                break;
            }
        }
        let room_id = &room.room_id;
        if !meets_condition {
            // A local user can only be joined to a room this server is in.
            if !checked_any && user.server_name() != self.server_name {
                return Err(Error::new(
                    ErrorKind::UnableToAuthoriseJoin,
                    format!("{} is in none of the rooms that the join rules of {room_id} allow", self.server_name),
                ));
            }
            return Err(Error::forbidden(format!(
                "{user} may not join {room_id}: its join rules require membership of one of {}",
                allowed.iter().map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }

        let invite_level = power::action_level(room, "invite", 0);
        let mut candidates: Vec<(i64, OwnedUserId)> = room
            .local_members(&self.server_name)
            .into_iter()
            .filter(|member| room.is_joined(member))
            .map(|member| (power::user_level(room, &member), member))
            .filter(|(level, _)| *level >= invite_level)
            .collect();
        // The joined local member with the highest power level, with ties broken by user id.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        match candidates.into_iter().next() {
            Some((_, via)) => Ok(JoinAuthorisation::Via(via)),
            None => Err(Error::new(
                ErrorKind::UnableToGrantJoin,
                format!("no user of {} in {room_id} may invite, so it cannot authorise the join", self.server_name),
            )),
        }
    }
}
