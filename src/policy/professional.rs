//! The `professional` policy: people message only their connections, a new
//! direct room with one invitee is a connection request, and rooms and
//! senders have limits. `docs/connections.md` describes the rules for users.
//!
//! Every check reads committed data (the connections index, the events table)
//! and runs before the room service writes, so a rejected action leaves no
//! room, membership, event or counter behind.

use std::sync::Arc;

use axum::http::StatusCode;
use futures::future::BoxFuture;
use ruma::{OwnedUserId, RoomId, UserId, events::StateEventType};
use serde_json::{Map, json};

use super::{Invite, RoomCreation, RoomPolicy};
use crate::{
    appservice::AppServices,
    config::PolicyConfig,
    error::{Error, ErrorKind, Result},
    rooms::state::RoomState,
    storage::{
        self, Db,
        connections::{ConnectionStatus, MESSAGE_EVENT_TYPES},
    },
};

/// Maximum length of a connection request note, in characters.
pub const MAX_NOTE_CHARS: usize = 300;

/// The errcode of the daily message and weekly request limits. They are 403,
/// not 429, because clients retry a 429 on their own and a message would sit
/// in "sending" until the limit resets.
const LIMIT_EXCEEDED: &str = "DEV.LATTICE.LIMIT_EXCEEDED";

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const WEEK_MS: i64 = 7 * DAY_MS;

/// Rejects a connection request note longer than [`MAX_NOTE_CHARS`] with
/// `M_BAD_JSON` naming `field`.
pub fn check_note(field: &str, note: &str) -> Result<()> {
    let length = note.chars().count();
    if length > MAX_NOTE_CHARS {
        return Err(Error::bad_json(format!(
            "{field} is {length} characters long; a connection request note is at most {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(())
}

/// The `professional` room policy.
pub struct ProfessionalPolicy {
    db: Db,
    config: PolicyConfig,
    /// Application services whose users skip the daily and weekly limits
    /// unless `limit_appservice_users` is set.
    appservices: Option<Arc<AppServices>>,
}

impl ProfessionalPolicy {
    pub fn new(db: Db, config: PolicyConfig) -> Self {
        Self { db, config, appservices: None }
    }

    /// Exempts the users of these application services from the daily and
    /// weekly limits: senders, and namespace users of registrations with
    /// `rate_limited: false`. `limit_appservice_users = true` turns this off.
    pub fn with_appservices(mut self, appservices: Arc<AppServices>) -> Self {
        self.appservices = Some(appservices);
        self
    }

    fn is_exempt_from_limits(&self, user_id: &UserId) -> bool {
        !self.config.limit_appservice_users
            && self.appservices.as_ref().is_some_and(|appservices| appservices.is_exempt_from_limits(user_id))
    }

    fn group_size_error(&self, size: usize) -> Error {
        Error::forbidden(format!(
            "a room holds at most {} people, joined and invited together (policy.max_group_size); \
             this would make {size}",
            self.config.max_group_size
        ))
    }

    async fn is_connected(&self, user_a: &UserId, user_b: &UserId) -> Result<bool> {
        let rooms = storage::connections::rooms_between(
            &self.db.pool,
            user_a.as_str(),
            user_b.as_str(),
            ConnectionStatus::Connected,
        )
        .await?;
        Ok(!rooms.is_empty())
    }

    /// Checks a connection request: the note, one pending request per pair, and the weekly limit.
    async fn check_connection_request(&self, invite: &Invite<'_>) -> Result<()> {
        if let Some(note) = invite.reason {
            check_note("reason", note)?;
        }
        if self.is_connected(invite.sender, invite.invitee).await? {
            return Ok(());
        }
        let pending = storage::connections::rooms_between(
            &self.db.pool,
            invite.sender.as_str(),
            invite.invitee.as_str(),
            ConnectionStatus::Pending,
        )
        .await?;
        if let Some(request) = pending.first() {
            let message = if request.requester == invite.sender.as_str() {
                format!(
                    "you already have a pending connection request to {} in room {}; \
                     wait for an answer or withdraw it first",
                    invite.invitee, request.room_id
                )
            } else {
                format!(
                    "{} already sent you a connection request in room {}; accept it instead",
                    invite.invitee, request.room_id
                )
            };
            return Err(Error::forbidden(message));
        }

        let limit = self.config.weekly_connection_request_limit;
        if limit > 0 && !self.is_exempt_from_limits(invite.sender) {
            let now = storage::now_ms();
            let week_start = start_of_utc_week(now);
            let sent =
                storage::connections::count_requests_since(&self.db.pool, invite.sender.as_str(), week_start).await?;
            if sent >= i64::from(limit) {
                return Err(limit_exceeded(
                    format!(
                        "you have sent {sent} connection requests this week, the limit is {limit}; \
                         the count resets on Monday 00:00 UTC"
                    ),
                    limit,
                    week_start + WEEK_MS - now,
                ));
            }
        }
        Ok(())
    }

    /// Checks the daily message limit of `sender`.
    async fn check_daily_messages(&self, sender: &UserId) -> Result<()> {
        let limit = self.config.daily_message_limit;
        if limit == 0 || self.is_exempt_from_limits(sender) {
            return Ok(());
        }
        let now = storage::now_ms();
        let day_start = now - now.rem_euclid(DAY_MS);
        let sent = storage::connections::count_messages_since(&self.db.pool, sender.as_str(), day_start).await?;
        // NOTE: sends to different rooms are not serialized with each other, so
        // concurrent sends by one user can pass this check together and exceed
        // the limit by the number of rooms written at once.
        if sent >= i64::from(limit) {
            return Err(limit_exceeded(
                format!("you have sent {sent} messages today, the limit is {limit}; the count resets at 00:00 UTC"),
                limit,
                day_start + DAY_MS - now,
            ));
        }
        Ok(())
    }
}

/// Start of the week (Monday 00:00 UTC) that contains `now_ms`.
fn start_of_utc_week(now_ms: i64) -> i64 {
    let days = now_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday, three days after a Monday.
    let days_since_monday = (days + 3).rem_euclid(7);
    (days - days_since_monday) * DAY_MS
}

fn limit_exceeded(message: String, limit: u32, retry_after_ms: i64) -> Error {
    let mut extra = Map::new();
    extra.insert("limit".into(), json!(limit));
    extra.insert("retry_after_ms".into(), json!(retry_after_ms.max(0)));
    Error::new(ErrorKind::Custom { errcode: LIMIT_EXCEEDED.into(), status: StatusCode::FORBIDDEN, extra }, message)
}

/// Joined plus invited members of a room.
fn group_size(room: &RoomState) -> usize {
    room.count_membership("join") + room.count_membership("invite")
}

/// Whether `room` is a fresh room of `sender`: the sender is its only member
/// and nobody else has ever had a membership in it.
fn is_fresh_room_of(room: &RoomState, sender: &UserId) -> bool {
    let mut members = room.state.iter().filter(|((kind, _), _)| *kind == StateEventType::RoomMember);
    let only_sender = members.all(|((_, key), _)| key == sender.as_str());
    only_sender && room.is_joined(sender)
}

impl RoomPolicy for ProfessionalPolicy {
    fn name(&self) -> &'static str {
        "professional"
    }

    fn check_create_room<'a>(&'a self, request: RoomCreation<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let invitees = request.invites.iter().filter(|user| **user != request.creator).count();
            let size = 1 + invitees;
            if size > self.config.max_group_size as usize {
                return Err(self.group_size_error(size));
            }
            Ok(())
        })
    }

    fn check_invite<'a>(&'a self, invite: Invite<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let already_counted = matches!(invite.room.membership(invite.invitee).as_deref(), Some("join" | "invite"));
            let size = group_size(invite.room) + usize::from(!already_counted);
            if size > self.config.max_group_size as usize {
                return Err(self.group_size_error(size));
            }
            if invite.is_direct && is_fresh_room_of(invite.room, invite.sender) {
                return self.check_connection_request(&invite).await;
            }
            if !self.is_connected(invite.sender, invite.invitee).await? {
                return Err(Error::forbidden(format!(
                    "{} is not one of your connections; send them a connection request first",
                    invite.invitee
                )));
            }
            Ok(())
        })
    }

    fn check_inbound_invite<'a>(
        &'a self,
        _room_id: &'a RoomId,
        sender: &'a UserId,
        invitee: &'a UserId,
        is_direct: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // NOTE: an inbound direct invite is taken as a connection request
            // without checking that the room is fresh, because this server does
            // not see the inviting server's room state.
            if is_direct || self.is_connected(sender, invitee).await? {
                return Ok(());
            }
            Err(Error::forbidden(format!("{sender} is not one of {invitee}'s connections")))
        })
    }

    fn check_join<'a>(&'a self, room: &'a RoomState, user: &'a UserId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(request) = storage::connections::get(&self.db.pool, room.room_id.as_str()).await?
                && request.invitee == user.as_str()
                && request.status == ConnectionStatus::Withdrawn
            {
                return Err(Error::forbidden(format!(
                    "{} withdrew this connection request, so it can no longer be accepted",
                    request.requester
                )));
            }
            let already_counted = matches!(room.membership(user).as_deref(), Some("join" | "invite"));
            let size = group_size(room) + usize::from(!already_counted);
            if size > self.config.max_group_size as usize {
                return Err(self.group_size_error(size));
            }
            Ok(())
        })
    }

    fn check_send<'a>(
        &'a self,
        room: &'a RoomState,
        sender: &'a UserId,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !MESSAGE_EVENT_TYPES.contains(&event_type) {
                return Ok(());
            }
            if let Some(request) = storage::connections::get(&self.db.pool, room.room_id.as_str()).await?
                && request.status == ConnectionStatus::Pending
                && request.requester == sender.as_str()
            {
                let limit = self.config.pending_message_limit;
                let sent =
                    storage::connections::count_messages_in_room(&self.db.pool, room.room_id.as_str(), sender.as_str())
                        .await?;
                if sent >= i64::from(limit) {
                    return Err(Error::forbidden(format!(
                        "{} has not accepted your connection request yet; until they do, you can send \
                         {limit} message(s) in this room (policy.pending_message_limit)",
                        request.invitee
                    )));
                }
            }
            self.check_daily_messages(sender).await
        })
    }

    fn invites_retracted_by_leave<'a>(
        &'a self,
        room_id: &'a RoomId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<OwnedUserId>>> {
        Box::pin(async move {
            // The requester leaving a pending request withdraws it (the index
            // already says so), and a withdrawn request's invite must not stay
            // in the invitee's client as if it could still be accepted.
            let Some(request) = storage::connections::get(&self.db.pool, room_id.as_str()).await? else {
                return Ok(Vec::new());
            };
            let withdrawn_by_user = request.requester == user.as_str()
                && request.status == ConnectionStatus::Withdrawn
                && request.invitee_membership == "invite";
            if !withdrawn_by_user {
                return Ok(Vec::new());
            }
            let invitee = UserId::parse(request.invitee.as_str())
                .map_err(|e| Error::internal("reading the invitee of a connection request", e))?;
            Ok(vec![invitee])
        })
    }

    fn rank_directory_results<'a>(
        &'a self,
        searcher: &'a UserId,
        results: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move { super::connections::rank_by_degree(&self.db, searcher, results).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_starts_on_monday() {
        // 2024-01-01 was a Monday; 2024-01-03 12:00 UTC is the Wednesday after.
        let monday = 1_704_067_200_000;
        let wednesday_noon = monday + 2 * DAY_MS + 12 * 60 * 60 * 1000;
        assert_eq!(start_of_utc_week(wednesday_noon), monday);
        assert_eq!(start_of_utc_week(monday), monday);
        assert_eq!(start_of_utc_week(monday - 1), monday - WEEK_MS);
    }

    #[test]
    fn note_length_is_counted_in_characters() {
        let at_limit = "é".repeat(MAX_NOTE_CHARS);
        assert!(check_note("note", &at_limit).is_ok());
        let over = "a".repeat(MAX_NOTE_CHARS + 1);
        let error = check_note("note", &over).unwrap_err();
        assert_eq!(error.errcode(), "M_BAD_JSON");
        assert!(error.message.starts_with("note "), "{}", error.message);
    }
}
