//! Connections as a service: listing them, sending, accepting, declining and
//! withdrawing connection requests, degrees between users, and messaging
//! metrics. These work with every room policy because the connections index is
//! kept from member events. The `professional` policy adds its checks when the
//! room service writes.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedRoomId, RoomId, UserId};
use serde::Serialize;

use super::check_note;
use crate::{
    error::{Error, Result},
    rooms::{CreateRoom, Rooms, membership::MembershipChange},
    storage::{
        self, Db,
        connections::{ConnectionRoom, ConnectionStatus, ConversationStats},
    },
};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A connection of the caller.
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub user_id: String,
    pub room_id: String,
    /// When the current connection started, in milliseconds since the Unix epoch.
    pub since: i64,
}

/// A pending connection request, described from one side.
#[derive(Debug, Clone, Serialize)]
pub struct PendingRequest {
    /// The other user: the requester for incoming requests, the invitee for outgoing ones.
    pub user_id: String,
    pub room_id: String,
    pub note: Option<String>,
    pub requested_ts: i64,
}

/// The degree of separation between two users.
#[derive(Debug, Clone, Serialize)]
pub struct Degree {
    pub user_id: String,
    /// 1 for a connection, 2 for a connection of a connection, 3 for third or beyond.
    pub degree: u8,
    pub mutual_connections: Vec<String>,
}

/// A user's messaging metrics over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub from: i64,
    pub to: i64,
    pub requests_sent: u64,
    pub requests_accepted: u64,
    pub requests_declined: u64,
    pub requests_withdrawn: u64,
    pub requests_pending: u64,
    /// `requests_accepted / requests_sent`, or `None` without requests.
    pub acceptance_rate: Option<f64>,
    pub conversations_started: u64,
    pub conversations_received: u64,
    /// Share of received conversations that the user replied to within 24 hours.
    pub answered_within_24h: Option<f64>,
    /// Share of received conversations that the user replied to within 7 days.
    pub answered_within_7d: Option<f64>,
    /// Median time from the first message of a received conversation to the
    /// user's first reply, over the answered ones, in milliseconds.
    pub median_first_reply_ms: Option<i64>,
}

/// Lists the users connected to `user`, one entry per user with the oldest
/// connection room when two users share several.
pub async fn list(db: &Db, user: &UserId) -> Result<Vec<Connection>> {
    let rooms = storage::connections::rooms_with_status(&db.pool, user.as_str(), ConnectionStatus::Connected).await?;
    let mut by_user: BTreeMap<String, Connection> = BTreeMap::new();
    for room in rooms {
        let other = other_side(&room, user).to_owned();
        let since = room.connected_ts.unwrap_or(room.requested_ts);
        let entry =
            by_user.entry(other.clone()).or_insert(Connection { user_id: other, room_id: room.room_id.clone(), since });
        if since < entry.since {
            entry.since = since;
            entry.room_id = room.room_id.clone();
        }
    }
    let mut connections: Vec<Connection> = by_user.into_values().collect();
    connections.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.user_id.cmp(&b.user_id)));
    Ok(connections)
}

/// Returns the pending requests that `user` received and sent, oldest first.
pub async fn pending(db: &Db, user: &UserId) -> Result<(Vec<PendingRequest>, Vec<PendingRequest>)> {
    let rooms = storage::connections::rooms_with_status(&db.pool, user.as_str(), ConnectionStatus::Pending).await?;
    let (outgoing, incoming): (Vec<_>, Vec<_>) = rooms.into_iter().partition(|room| room.requester == user.as_str());
    let describe = |room: ConnectionRoom| PendingRequest {
        user_id: other_side(&room, user).to_owned(),
        room_id: room.room_id.clone(),
        note: room.note.clone(),
        requested_ts: room.requested_ts,
    };
    Ok((incoming.into_iter().map(describe).collect(), outgoing.into_iter().map(describe).collect()))
}

/// Creates a connection request: a direct room with `invitee` as its only
/// invitee, created with the `trusted_private_chat` preset as Element's
/// "Start chat" does, and `note` as the invite's reason.
pub async fn send_request(
    rooms: &Rooms,
    db: &Db,
    requester: &UserId,
    invitee: &UserId,
    note: Option<String>,
) -> Result<OwnedRoomId> {
    if let Some(note) = &note {
        check_note("note", note)?;
    }
    if requester == invitee {
        return Err(Error::invalid_param("user_id is your own user id; you cannot connect with yourself"));
    }
    let connected = storage::connections::rooms_between(
        &db.pool,
        requester.as_str(),
        invitee.as_str(),
        ConnectionStatus::Connected,
    )
    .await?;
    if let Some(room) = connected.first() {
        return Err(Error::forbidden(format!("you are already connected with {invitee} in room {}", room.room_id)));
    }
    let request = CreateRoom {
        invite: vec![invitee.to_owned()],
        preset: Some("trusted_private_chat".into()),
        is_direct: true,
        invite_reason: note,
        ..CreateRoom::default()
    };
    rooms.create_room(requester, request).await
}

/// The pending request in `room_id`, or 404 when there is none that `user` may answer as `side`.
async fn pending_request(db: &Db, room_id: &RoomId, user: &UserId, side: Side) -> Result<ConnectionRoom> {
    let not_found =
        || Error::not_found(format!("there is no pending connection request {} in room {room_id}", side.describe()));
    let request = storage::connections::get(&db.pool, room_id.as_str()).await?.ok_or_else(not_found)?;
    let is_party = match side {
        Side::Invitee => request.invitee == user.as_str(),
        Side::Requester => request.requester == user.as_str(),
    };
    if !is_party {
        return Err(not_found());
    }
    match request.status {
        ConnectionStatus::Pending => Ok(request),
        ConnectionStatus::Withdrawn if side == Side::Invitee => Err(Error::forbidden(format!(
            "{} withdrew this connection request, so it can no longer be accepted",
            request.requester
        ))),
        _ => Err(not_found()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Requester,
    Invitee,
}

impl Side {
    fn describe(self) -> &'static str {
        match self {
            Side::Requester => "from you",
            Side::Invitee => "to you",
        }
    }
}

/// Accepts a request by joining its room, and returns the requester.
pub async fn accept(rooms: &Rooms, db: &Db, user: &UserId, room_id: &RoomId) -> Result<String> {
    let request = pending_request(db, room_id, user, Side::Invitee).await?;
    rooms.change_membership(room_id, user, user, MembershipChange::Join, None).await?;
    Ok(request.requester)
}

/// Declines a request by rejecting the invite.
pub async fn decline(rooms: &Rooms, db: &Db, user: &UserId, room_id: &RoomId) -> Result<()> {
    pending_request(db, room_id, user, Side::Invitee).await?;
    rooms.change_membership(room_id, user, user, MembershipChange::Leave, None).await?;
    Ok(())
}

/// Withdraws a request: the requester leaves the room, and the invite of an
/// invitee on this server is retracted by rejecting it on their behalf, so it
/// disappears from their invite list.
pub async fn withdraw(rooms: &Rooms, db: &Db, user: &UserId, room_id: &RoomId) -> Result<()> {
    let request = pending_request(db, room_id, user, Side::Requester).await?;
    rooms.change_membership(room_id, user, user, MembershipChange::Leave, None).await?;

    // The `professional` policy retracts the invite on the leave already;
    // other policies do not, so the endpoint retracts it here for every policy.
    let Ok(invitee) = UserId::parse(request.invitee.as_str()) else {
        return Ok(());
    };
    if let Err(err) = rooms.retract_invite(room_id, &invitee, user).await {
        tracing::warn!(%room_id, invitee = %invitee, error = %err, "could not retract a withdrawn connection request");
    }
    Ok(())
}

/// Removes the connection with `other` by leaving every room that connects the two.
pub async fn remove(rooms: &Rooms, db: &Db, user: &UserId, other: &UserId) -> Result<()> {
    let connected =
        storage::connections::rooms_between(&db.pool, user.as_str(), other.as_str(), ConnectionStatus::Connected)
            .await?;
    if connected.is_empty() {
        return Err(Error::not_found(format!("{other} is not one of your connections")));
    }
    for room in connected {
        let room_id =
            RoomId::parse(room.room_id.as_str()).map_err(|e| Error::internal("reading a connection room", e))?;
        rooms.change_membership(&room_id, user, user, MembershipChange::Leave, None).await?;
    }
    Ok(())
}

/// Computes the degree between `user` and `other` with their mutual connections.
pub async fn degree(db: &Db, user: &UserId, other: &UserId) -> Result<Degree> {
    if user == other {
        return Err(Error::invalid_param("user_id is your own user id; a degree needs two different users"));
    }
    let mine = storage::connections::connected_users(&db.pool, user.as_str()).await?;
    let theirs = storage::connections::connected_users(&db.pool, other.as_str()).await?;
    let mutual: BTreeSet<String> = mine.intersection(&theirs).cloned().collect();
    let degree = if mine.contains(other.as_str()) {
        1
    } else if !mutual.is_empty() {
        2
    } else {
        3
    };
    Ok(Degree { user_id: other.to_string(), degree, mutual_connections: mutual.into_iter().collect() })
}

/// Orders `users` for `searcher`: connections first, then users who share a
/// connection with the searcher (2nd degree), then everyone else. The sort is
/// stable, so each group keeps the order of `users`.
pub async fn rank_by_degree(db: &Db, searcher: &UserId, mut users: Vec<String>) -> Result<Vec<String>> {
    let first = storage::connections::connected_users(&db.pool, searcher.as_str()).await?;
    let second = storage::connections::second_degree_users(&db.pool, searcher.as_str()).await?;
    users.sort_by_key(|user| {
        if first.contains(user) {
            1
        } else if second.contains(user) {
            2
        } else {
            3
        }
    });
    Ok(users)
}

/// Computes the messaging metrics of `user` over `[from, to)`.
pub async fn metrics(db: &Db, user: &UserId, from: i64, to: i64) -> Result<Metrics> {
    if from > to {
        return Err(Error::invalid_param(format!("from ({from}) is after to ({to})")));
    }
    let requests = storage::connections::requests_sent_between(&db.pool, user.as_str(), from, to);
    let conversations = storage::connections::conversation_stats(&db.pool, user.as_str(), from, to);
    let (requests, conversations) = tokio::try_join!(requests, conversations)?;
    Ok(compute_metrics(&requests, &conversations, from, to))
}

/// Derives the metrics from the requests sent in the period and the
/// conversations whose first message was sent in it. Replies count whenever
/// they came, also after `to`.
fn compute_metrics(requests: &[ConnectionRoom], conversations: &ConversationStats, from: i64, to: i64) -> Metrics {
    let count = |status: ConnectionStatus| requests.iter().filter(|r| r.status == status).count() as u64;
    let requests_sent = requests.len() as u64;
    let requests_accepted = requests.iter().filter(|r| r.accepted_ts.is_some()).count() as u64;

    let received = conversations.received;
    let reply_delays = &conversations.reply_delays;
    let answered_within = |limit_ms: i64| reply_delays.iter().filter(|delay| **delay <= limit_ms).count() as u64;

    Metrics {
        from,
        to,
        requests_sent,
        requests_accepted,
        requests_declined: count(ConnectionStatus::Declined),
        requests_withdrawn: requests
            .iter()
            .filter(|r| r.status == ConnectionStatus::Withdrawn && r.accepted_ts.is_none())
            .count() as u64,
        requests_pending: count(ConnectionStatus::Pending),
        acceptance_rate: ratio(requests_accepted, requests_sent),
        conversations_started: conversations.started,
        conversations_received: received,
        answered_within_24h: ratio(answered_within(DAY_MS), received),
        answered_within_7d: ratio(answered_within(7 * DAY_MS), received),
        median_first_reply_ms: median(reply_delays),
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The median of sorted values; the mean of the two middle values, rounded
/// down, for an even count.
fn median(sorted: &[i64]) -> Option<i64> {
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]).div_euclid(2)),
    }
}

fn other_side<'a>(room: &'a ConnectionRoom, user: &UserId) -> &'a str {
    if room.requester == user.as_str() { &room.invitee } else { &room.requester }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "@me:example.org";
    const HOUR: i64 = 60 * 60 * 1000;

    fn request(status: ConnectionStatus, requested_ts: i64, accepted_ts: Option<i64>) -> ConnectionRoom {
        ConnectionRoom {
            room_id: format!("!r{requested_ts}"),
            requester: ME.into(),
            invitee: "@other:example.org".into(),
            note: None,
            status,
            requester_membership: "join".into(),
            invitee_membership: "join".into(),
            requested_ts,
            accepted_ts,
            connected_ts: accepted_ts,
            closed_ts: None,
        }
    }

    #[test]
    fn metrics_from_scripted_history() {
        let requests = [
            request(ConnectionStatus::Connected, 1, Some(2)),
            request(ConnectionStatus::Removed, 3, Some(4)),
            request(ConnectionStatus::Declined, 5, None),
            request(ConnectionStatus::Pending, 6, None),
            request(ConnectionStatus::Withdrawn, 7, None),
        ];
        // One conversation started and four received, three of which got a
        // reply after 2 h, 30 h and 8 days.
        let conversations =
            ConversationStats { started: 1, received: 4, reply_delays: vec![2 * HOUR, 30 * HOUR, 8 * 24 * HOUR] };
        let metrics = compute_metrics(&requests, &conversations, 0, 1_000);

        assert_eq!(metrics.requests_sent, 5);
        assert_eq!(metrics.requests_accepted, 2);
        assert_eq!(metrics.requests_declined, 1);
        assert_eq!(metrics.requests_pending, 1);
        assert_eq!(metrics.requests_withdrawn, 1);
        assert_eq!(metrics.acceptance_rate, Some(0.4));
        assert_eq!(metrics.conversations_started, 1);
        assert_eq!(metrics.conversations_received, 4);
        assert_eq!(metrics.answered_within_24h, Some(0.25));
        assert_eq!(metrics.answered_within_7d, Some(0.5));
        // Delays of 2 h, 30 h and 192 h: the median is 30 h.
        assert_eq!(metrics.median_first_reply_ms, Some(30 * HOUR));
    }

    #[test]
    fn metrics_without_history_have_no_rates() {
        let metrics = compute_metrics(&[], &ConversationStats::default(), 0, 1_000);
        assert_eq!(metrics.requests_sent, 0);
        assert_eq!(metrics.acceptance_rate, None);
        assert_eq!(metrics.answered_within_24h, None);
        assert_eq!(metrics.median_first_reply_ms, None);
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle() {
        assert_eq!(median(&[1, 3, 8, 100]), Some(5));
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[]), None);
    }
}
