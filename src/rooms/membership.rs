//! Membership changes of local users: join, invite, leave, kick, ban, unban,
//! and the profile updates that rewrite a user's member events.

use ruma::{
    OwnedEventId, RoomId, UserId,
    events::{StateEventType, TimelineEventType},
};
use serde_json::{Value, json};

use super::{Rooms, builder::EventDraft, restricted::JoinAuthorisation};
use crate::{
    error::{Error, Result},
    policy::Invite,
    storage,
};

/// A membership change requested by `sender` for `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    Join,
    Invite,
    Leave,
    Kick,
    Ban,
    Unban,
    Knock,
}

impl Rooms {
    /// Applies a membership change. `reason` goes into the member event.
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        change: MembershipChange,
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        self.change_membership_direct(room_id, sender, target, change, reason, false).await
    }

    /// Applies a membership change like [`Rooms::change_membership`]; an
    /// invite with `is_direct` is marked as the start of a direct chat.
    pub async fn change_membership_direct(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        change: MembershipChange,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        let room = self.state(room_id).await?;
        let current = room.membership(target);
        let previous = room.get(&StateEventType::RoomMember, target.as_str()).map(|p| p.content_value());
        let mut authorisation = JoinAuthorisation::NotNeeded;

        let membership = match change {
            MembershipChange::Join => {
                if current.as_deref() == Some("ban") {
                    return Err(Error::forbidden(format!("{target} is banned from {room_id}")));
                }
                self.policy.check_join(&room, target).await?;
                authorisation = self.authorise_join(&room, target).await?;
                "join"
            }
            MembershipChange::Invite => {
                match current.as_deref() {
                    Some("join") => {
                        return Err(Error::forbidden(format!("{target} is already in the room")));
                    }
                    Some("ban") => {
                        return Err(Error::forbidden(format!("{target} is banned from the room")));
                    }
                    _ => {}
                }
                let invite = Invite { room: &room, sender, invitee: target, is_direct, reason: reason.as_deref() };
                self.policy.check_invite(invite).await?;
                "invite"
            }
            MembershipChange::Leave => {
                if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
                    return Err(Error::forbidden(format!("{target} is not in room {room_id}")));
                }
                "leave"
            }
            MembershipChange::Kick => {
                if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) {
                    return Err(Error::forbidden(format!("{target} is not in room {room_id}")));
                }
                "leave"
            }
            MembershipChange::Ban => "ban",
            MembershipChange::Knock => {
                if matches!(current.as_deref(), Some("join" | "invite" | "ban")) {
                    let current = current.unwrap_or_default();
                    return Err(Error::forbidden(format!("{target} cannot knock with membership {current}")));
                }
                "knock"
            }
            MembershipChange::Unban => {
                if current.as_deref() != Some("ban") {
                    return Err(Error::forbidden(format!("{target} is not banned from room {room_id}")));
                }
                "leave"
            }
        };

        let mut content = json!({ "membership": membership });
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        if membership == "invite" && is_direct {
            content["is_direct"] = json!(true);
        }
        if membership == "join" || membership == "invite" {
            self.fill_profile(&mut content, target, previous.as_ref()).await?;
        }
        if let JoinAuthorisation::Via(user) = authorisation {
            content["join_authorised_via_users_server"] = json!(user);
        }
        let draft = EventDraft::state(TimelineEventType::RoomMember, target.as_str(), content);
        // An invite of another server's user is countersigned by that server first.
        let remote_invitee = (membership == "invite" && target.server_name() != self.server_name).then_some(target);
        let event_id = self.append_countersigned(room_id, sender, draft, None, remote_invitee).await?;

        if membership == "leave" && sender == target {
            self.retract_invites_after_leave(room_id, sender).await;
        }
        Ok(event_id)
    }

    /// Rejects, on their behalf, the pending invites of local users that the
    /// policy ends because `user` left. The leave already committed, so a
    /// failure here is logged and does not fail the leave.
    async fn retract_invites_after_leave(&self, room_id: &RoomId, user: &UserId) {
        let invitees = match self.policy.invites_retracted_by_leave(room_id, user).await {
            Ok(invitees) => invitees,
            Err(err) => {
                tracing::warn!(%room_id, user_id = %user, error = %err, "could not find the invites that a leave retracts");
                return;
            }
        };
        for invitee in invitees {
            if let Err(err) = self.retract_invite(room_id, &invitee, user).await {
                tracing::warn!(%room_id, invitee = %invitee, error = %err, "could not retract an invite");
            }
        }
    }

    /// Retracts the pending invite of a local user because `inviter` withdrew
    /// it. The auth rules let only the invitee or a member with enough power
    /// to kick end an invite, and an inviter who has left has no power, so the
    /// server sends the invitee's own leave (a rejection) as the invitee's
    /// homeserver may. Returns `Ok(None)` when there is no invite to retract
    /// or the invitee is another server's user.
    pub async fn retract_invite(
        &self,
        room_id: &RoomId,
        invitee: &UserId,
        inviter: &UserId,
    ) -> Result<Option<OwnedEventId>> {
        if invitee.server_name() != self.server_name {
            return Ok(None);
        }
        let room = self.state(room_id).await?;
        if room.membership(invitee).as_deref() != Some("invite") {
            return Ok(None);
        }
        let content = json!({
            "membership": "leave",
            "reason": format!("{inviter} withdrew the invite"),
        });
        let draft = EventDraft::state(TimelineEventType::RoomMember, invitee.as_str(), content);
        self.append(room_id, invitee, draft, None).await.map(Some)
    }

    /// Copies the user's display name and avatar into new member content; keeps
    /// `is_direct` of a pending invite when joining it.
    pub(super) async fn fill_profile(
        &self,
        content: &mut Value,
        user: &UserId,
        previous: Option<&Value>,
    ) -> Result<()> {
        if user.server_name() == self.server_name {
            if let Some(row) = storage::users::get(&self.db.pool, user.as_str()).await? {
                if let Some(name) = row.displayname {
                    content["displayname"] = json!(name);
                }
                if let Some(url) = row.avatar_url {
                    content["avatar_url"] = json!(url);
                }
            }
        } else if let Some(previous) = previous {
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = previous.get(field) {
                    content[field] = value.clone();
                }
            }
        }
        Ok(())
    }

    /// Sends a new member event in every joined room of `user` after a profile change.
    pub async fn propagate_profile(&self, user: &UserId) -> Result<()> {
        let rooms = storage::rooms::joined_rooms(&self.db.pool, user.as_str()).await?;
        for room_id in rooms {
            let Ok(room_id) = ruma::OwnedRoomId::try_from(room_id) else {
                continue;
            };
            let room = self.state(&room_id).await?;
            let Some(member) = room.get(&StateEventType::RoomMember, user.as_str()) else {
                continue;
            };
            let mut content = member.content_value();
            if let Some(object) = content.as_object_mut() {
                object.remove("displayname");
                object.remove("avatar_url");
                object.remove("reason");
            }
            self.fill_profile(&mut content, user, None).await?;
            let draft = EventDraft::state(TimelineEventType::RoomMember, user.as_str(), content);
            if let Err(err) = self.append(&room_id, user, draft, None).await {
                tracing::warn!(%room_id, user_id = %user, error = %err, "could not update a member event after a profile change");
            }
        }
        Ok(())
    }
}
