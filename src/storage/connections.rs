//! The connections index: who is connected to whom, since when, and which
//! connection requests are pending, derived from member events. For the
//! messaging metrics, it also holds each room's first message and each
//! sender's earliest message there, derived from messages. Both parts are
//! kept as events are persisted, so they hold for every room policy and can
//! be rebuilt from the events table.
//!
//! A connection room is a room whose first member event for anyone other than
//! its creator is an invite sent by the creator with `is_direct: true`. The
//! creator is the requester and that user the invitee. If a third user is
//! invited or joins before the invitee has ever joined, the room is a group
//! after all and leaves the index. Once the request was accepted, third users
//! do not change the pair's connection.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, AnyPool, Row, any::AnyRow};

/// Event types that count as messages for the message limits and the metrics.
/// The SQL below spells out the same list.
pub const MESSAGE_EVENT_TYPES: &[&str] = &["m.room.message", "m.room.encrypted", "m.sticker"];

/// The state of a connection room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// The requester is joined and the invitee invited.
    Pending,
    /// Both are joined.
    Connected,
    /// The invitee rejected the invite before ever joining.
    Declined,
    /// The requester left, or kicked the invitee, before the invitee ever joined.
    Withdrawn,
    /// One of the two left after both had been joined.
    Removed,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Declined => "declined",
            Self::Withdrawn => "withdrawn",
            Self::Removed => "removed",
        }
    }

    fn parse(value: &str) -> Self {
        match value {
            "pending" => Self::Pending,
            "connected" => Self::Connected,
            "declined" => Self::Declined,
            "withdrawn" => Self::Withdrawn,
            _ => Self::Removed,
        }
    }
}

/// One row of `connection_rooms`. Timestamps are milliseconds since the Unix
/// epoch, taken from the `origin_server_ts` of the member events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRoom {
    pub room_id: String,
    pub requester: String,
    pub invitee: String,
    /// The `reason` of the invite.
    pub note: Option<String>,
    pub status: ConnectionStatus,
    pub requester_membership: String,
    pub invitee_membership: String,
    pub requested_ts: i64,
    /// When the invitee first joined.
    pub accepted_ts: Option<i64>,
    /// Start of the current connection, while the status is `Connected`.
    pub connected_ts: Option<i64>,
    /// When the request was declined or withdrawn, or the connection removed.
    pub closed_ts: Option<i64>,
}

/// The fields of a member event that the index needs.
#[derive(Debug, Clone, Copy)]
pub struct MemberEvent<'a> {
    pub sender: &'a str,
    /// The `state_key`: the user whose membership changes.
    pub target: &'a str,
    pub membership: &'a str,
    pub is_direct: bool,
    pub reason: Option<&'a str>,
    pub origin_server_ts: i64,
}

/// What a member event does to a room's index row.
#[derive(Debug, PartialEq, Eq)]
enum IndexChange {
    Nothing,
    Insert(ConnectionRoom),
    Update(ConnectionRoom),
    Delete,
}

/// Derives the index change of one member event. `others_seen` is true when
/// any user besides the creator and the event's target has had a membership in
/// the room before this event.
fn derive_change(
    current: Option<&ConnectionRoom>,
    room_id: &str,
    creator: &str,
    event: &MemberEvent<'_>,
    others_seen: bool,
) -> IndexChange {
    let Some(current) = current else {
        let is_request = event.target != creator
            && event.sender == creator
            && event.membership == "invite"
            && event.is_direct
            && !others_seen;
        if !is_request {
            return IndexChange::Nothing;
        }
        return IndexChange::Insert(ConnectionRoom {
            room_id: room_id.to_owned(),
            requester: creator.to_owned(),
            invitee: event.target.to_owned(),
            note: event.reason.map(str::to_owned),
            status: ConnectionStatus::Pending,
            requester_membership: "join".to_owned(),
            invitee_membership: "invite".to_owned(),
            requested_ts: event.origin_server_ts,
            accepted_ts: None,
            connected_ts: None,
            closed_ts: None,
        });
    };

    let is_requester = event.target == current.requester;
    let is_invitee = event.target == current.invitee;
    if !is_requester && !is_invitee {
        let third_user_enters = matches!(event.membership, "invite" | "join");
        if current.accepted_ts.is_none() && third_user_enters {
            return IndexChange::Delete;
        }
        return IndexChange::Nothing;
    }

    let mut row = current.clone();
    if is_requester {
        row.requester_membership = event.membership.to_owned();
    } else {
        row.invitee_membership = event.membership.to_owned();
    }
    let ts = event.origin_server_ts;
    let both_joined = row.requester_membership == "join" && row.invitee_membership == "join";
    if both_joined {
        if row.status != ConnectionStatus::Connected {
            row.connected_ts = Some(ts);
            row.closed_ts = None;
        }
        row.accepted_ts.get_or_insert(ts);
        row.status = ConnectionStatus::Connected;
    } else if row.status == ConnectionStatus::Connected {
        row.status = ConnectionStatus::Removed;
        row.connected_ts = None;
        row.closed_ts = Some(ts);
    } else if row.status == ConnectionStatus::Pending {
        if row.requester_membership != "join" {
            row.status = ConnectionStatus::Withdrawn;
            row.closed_ts = Some(ts);
        } else if row.invitee_membership != "invite" {
            // The invitee leaving on their own is a decline; the requester
            // kicking the invitee withdraws the request.
            row.status =
                if event.sender == row.invitee { ConnectionStatus::Declined } else { ConnectionStatus::Withdrawn };
            row.closed_ts = Some(ts);
        }
    }
    // Declined, withdrawn and removed rows keep their status until both users
    // are joined again.
    IndexChange::Update(row)
}

const COLUMNS: &str = "room_id, requester, invitee, note, status, requester_membership, invitee_membership, \
                       requested_ts, accepted_ts, connected_ts, closed_ts";

fn connection_row(row: &AnyRow) -> ConnectionRoom {
    ConnectionRoom {
        room_id: row.get(0),
        requester: row.get(1),
        invitee: row.get(2),
        note: row.get(3),
        status: ConnectionStatus::parse(row.get::<&str, _>(4)),
        requester_membership: row.get(5),
        invitee_membership: row.get(6),
        requested_ts: row.get(7),
        accepted_ts: row.get(8),
        connected_ts: row.get(9),
        closed_ts: row.get(10),
    }
}

async fn get_in_txn(conn: &mut AnyConnection, room_id: &str) -> Result<Option<ConnectionRoom>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM connection_rooms WHERE room_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(&mut *conn).await?;
    Ok(row.as_ref().map(connection_row))
}

async fn write_change(conn: &mut AnyConnection, change: IndexChange, room_id: &str) -> Result<(), sqlx::Error> {
    let row = match change {
        IndexChange::Nothing => return Ok(()),
        IndexChange::Delete => {
            sqlx::query("DELETE FROM connection_rooms WHERE room_id = $1").bind(room_id).execute(&mut *conn).await?;
            return Ok(());
        }
        IndexChange::Insert(row) | IndexChange::Update(row) => row,
    };
    sqlx::query(
        "INSERT INTO connection_rooms (room_id, requester, invitee, note, status, requester_membership, \
         invitee_membership, requested_ts, accepted_ts, connected_ts, closed_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (room_id) DO UPDATE SET \
         status = excluded.status, requester_membership = excluded.requester_membership, \
         invitee_membership = excluded.invitee_membership, accepted_ts = excluded.accepted_ts, \
         connected_ts = excluded.connected_ts, closed_ts = excluded.closed_ts",
    )
    .bind(&row.room_id)
    .bind(&row.requester)
    .bind(&row.invitee)
    .bind(&row.note)
    .bind(row.status.as_str())
    .bind(&row.requester_membership)
    .bind(&row.invitee_membership)
    .bind(row.requested_ts)
    .bind(row.accepted_ts)
    .bind(row.connected_ts)
    .bind(row.closed_ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Updates the index for a member event of a room that this server is not
/// in: an invite of a local user received from another server, or that
/// user's rejection. This server does not see the room's creator, so the
/// inviter (`requester`) stands for it, and no third member is known.
pub async fn apply_remote_member_event(
    conn: &mut AnyConnection,
    room_id: &str,
    requester: &str,
    event: &MemberEvent<'_>,
) -> Result<(), sqlx::Error> {
    let current = get_in_txn(conn, room_id).await?;
    let change = derive_change(current.as_ref(), room_id, requester, event, false);
    write_change(conn, change, room_id).await
}

/// Updates the index for a member event that is being persisted. Runs in the
/// event's write transaction after its `memberships` row was written, so the
/// index commits or rolls back together with the event.
pub async fn apply_member_event(
    conn: &mut AnyConnection,
    room_id: &str,
    event: &MemberEvent<'_>,
) -> Result<(), sqlx::Error> {
    let Some(creator_row) =
        sqlx::query("SELECT creator FROM rooms WHERE room_id = $1").bind(room_id).fetch_optional(&mut *conn).await?
    else {
        return Ok(());
    };
    let creator: String = creator_row.get(0);
    let current = get_in_txn(conn, room_id).await?;
    let others_seen = if current.is_none() {
        sqlx::query("SELECT 1 FROM memberships WHERE room_id = $1 AND user_id <> $2 AND user_id <> $3 LIMIT 1")
            .bind(room_id)
            .bind(&creator)
            .bind(event.target)
            .fetch_optional(&mut *conn)
            .await?
            .is_some()
    } else {
        false
    };
    let change = derive_change(current.as_ref(), room_id, &creator, event, others_seen);
    write_change(conn, change, room_id).await
}

/// Rebuilds `connection_rooms` from the stored member events when the schema
/// migration asked for it, in one transaction. Runs at startup before the writer starts.
pub async fn rebuild_if_requested(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let requested =
        sqlx::query("SELECT COUNT(*) FROM connection_index_rebuild").fetch_one(pool).await?.get::<i64, _>(0);
    if requested == 0 {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM connection_rooms").execute(&mut *tx).await?;
    let creators: HashMap<String, String> = sqlx::query("SELECT room_id, creator FROM rooms")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let events = sqlx::query(
        "SELECT room_id, sender, state_key, origin_server_ts, pdu FROM events \
         WHERE event_type = 'm.room.member' AND state_key IS NOT NULL ORDER BY stream_ordering",
    )
    .fetch_all(&mut *tx)
    .await?;

    let mut rows: HashMap<String, ConnectionRoom> = HashMap::new();
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let mut touched: HashSet<String> = HashSet::new();
    for event in &events {
        let room_id: String = event.get(0);
        let Some(creator) = creators.get(&room_id) else {
            continue;
        };
        let sender: String = event.get(1);
        let target: String = event.get(2);
        let pdu: serde_json::Value = serde_json::from_str(event.get::<&str, _>(4)).unwrap_or_default();
        let content = &pdu["content"];
        let Some(membership) = content["membership"].as_str() else {
            continue;
        };
        let member_event = MemberEvent {
            sender: &sender,
            target: &target,
            membership,
            is_direct: content["is_direct"].as_bool().unwrap_or(false),
            reason: content["reason"].as_str(),
            origin_server_ts: event.get(3),
        };
        let members = seen.entry(room_id.clone()).or_default();
        let others_seen = members.iter().any(|user| user != creator && *user != target);
        members.insert(target.clone());
        match derive_change(rows.get(&room_id), &room_id, creator, &member_event, others_seen) {
            IndexChange::Nothing => {}
            IndexChange::Insert(row) | IndexChange::Update(row) => {
                rows.insert(room_id.clone(), row);
            }
            IndexChange::Delete => {
                rows.remove(&room_id);
            }
        }
        touched.insert(room_id);
    }
    for row in rows.into_values() {
        let room_id = row.room_id.clone();
        write_change(&mut tx, IndexChange::Insert(row), &room_id).await?;
    }
    sqlx::query("DELETE FROM connection_index_rebuild").execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(rooms = touched.len(), "rebuilt the connections index from member events");
    Ok(())
}

pub async fn get(pool: &AnyPool, room_id: &str) -> Result<Option<ConnectionRoom>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM connection_rooms WHERE room_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(connection_row))
}

/// The connection rooms of `user_id` with the given status, on either side, oldest request first.
pub async fn rooms_with_status(
    pool: &AnyPool,
    user_id: &str,
    status: ConnectionStatus,
) -> Result<Vec<ConnectionRoom>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connection_rooms WHERE (requester = $1 OR invitee = $1) AND status = $2 \
         ORDER BY requested_ts, room_id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(status.as_str()).fetch_all(pool).await?;
    Ok(rows.iter().map(connection_row).collect())
}

/// The connection rooms between two users with the given status, in either direction.
pub async fn rooms_between(
    pool: &AnyPool,
    user_a: &str,
    user_b: &str,
    status: ConnectionStatus,
) -> Result<Vec<ConnectionRoom>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connection_rooms WHERE status = $3 AND \
         ((requester = $1 AND invitee = $2) OR (requester = $2 AND invitee = $1)) ORDER BY requested_ts, room_id"
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_a).bind(user_b).bind(status.as_str()).fetch_all(pool).await?;
    Ok(rows.iter().map(connection_row).collect())
}

/// The users connected to `user_id`.
pub async fn connected_users(pool: &AnyPool, user_id: &str) -> Result<HashSet<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT invitee FROM connection_rooms WHERE requester = $1 AND status = 'connected' \
         UNION SELECT requester FROM connection_rooms WHERE invitee = $1 AND status = 'connected'",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The users connected to a connection of `user_id`, without `user_id`
/// itself. It includes users who are also 1st-degree connections.
pub async fn second_degree_users(pool: &AnyPool, user_id: &str) -> Result<HashSet<String>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH pairs (user_a, user_b) AS ( \
           SELECT requester, invitee FROM connection_rooms WHERE status = 'connected' \
           UNION ALL SELECT invitee, requester FROM connection_rooms WHERE status = 'connected') \
         SELECT DISTINCT theirs.user_b FROM pairs mine JOIN pairs theirs ON theirs.user_a = mine.user_b \
         WHERE mine.user_a = $1 AND theirs.user_b <> $1",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Requests that `requester` sent with `requested_ts` in `[from, to)`, in any status.
pub async fn requests_sent_between(
    pool: &AnyPool,
    requester: &str,
    from: i64,
    to: i64,
) -> Result<Vec<ConnectionRoom>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connection_rooms WHERE requester = $1 AND requested_ts >= $2 AND requested_ts < $3 \
         ORDER BY requested_ts, room_id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(requester).bind(from).bind(to).fetch_all(pool).await?;
    Ok(rows.iter().map(connection_row).collect())
}

/// Requests that `requester` sent since `since`, in any status.
pub async fn count_requests_since(pool: &AnyPool, requester: &str, since: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM connection_rooms WHERE requester = $1 AND requested_ts >= $2")
        .bind(requester)
        .bind(since)
        .fetch_one(pool)
        .await?;
    Ok(row.get(0))
}

/// Messages (see [`MESSAGE_EVENT_TYPES`]) that `sender` sent since `since`, in every room.
pub async fn count_messages_since(pool: &AnyPool, sender: &str, since: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM events WHERE sender = $1 AND origin_server_ts >= $2 \
         AND event_type IN ('m.room.message', 'm.room.encrypted', 'm.sticker')",
    )
    .bind(sender)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok(row.get(0))
}

/// Messages (see [`MESSAGE_EVENT_TYPES`]) that `sender` sent in one room.
pub async fn count_messages_in_room(pool: &AnyPool, room_id: &str, sender: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM events WHERE room_id = $1 AND sender = $2 \
         AND event_type IN ('m.room.message', 'm.room.encrypted', 'm.sticker')",
    )
    .bind(room_id)
    .bind(sender)
    .fetch_one(pool)
    .await?;
    Ok(row.get(0))
}

/// Keeps what the messaging metrics need about a message (see
/// [`MESSAGE_EVENT_TYPES`]) that is being persisted: the room's first message,
/// and the earliest message of each sender in the room. Runs in the event's
/// write transaction, like [`apply_member_event`], so it commits or rolls back
/// with the event.
///
/// Stream positions only grow, so a room's first message is also its sender's
/// first message there: only a new sender (or an earlier timestamp of a known
/// one) can change `conversation_starts`. Every other message costs one
/// primary-key lookup that writes nothing.
pub async fn apply_message_event(
    conn: &mut AnyConnection,
    room_id: &str,
    sender: &str,
    stream_ordering: i64,
    origin_server_ts: i64,
) -> Result<(), sqlx::Error> {
    let changed = sqlx::query(
        "INSERT INTO conversation_senders (room_id, user_id, earliest_ts) VALUES ($1, $2, $3) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET earliest_ts = excluded.earliest_ts \
         WHERE excluded.earliest_ts < conversation_senders.earliest_ts",
    )
    .bind(room_id)
    .bind(sender)
    .bind(origin_server_ts)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO conversation_starts (room_id, sender, stream_ordering, origin_server_ts) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (room_id) DO UPDATE SET sender = excluded.sender, \
         stream_ordering = excluded.stream_ordering, origin_server_ts = excluded.origin_server_ts \
         WHERE excluded.stream_ordering < conversation_starts.stream_ordering",
    )
    .bind(room_id)
    .bind(sender)
    .bind(stream_ordering)
    .bind(origin_server_ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The conversations of one user in a period: the rooms the user has a
/// membership in whose first message was sent in the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationStats {
    /// Conversations whose first message is the user's.
    pub started: u64,
    /// Conversations whose first message is someone else's.
    pub received: u64,
    /// For each received conversation with a reply of the user, the time
    /// from its first message to the user's first message there, in
    /// milliseconds, in ascending order.
    pub reply_delays: Vec<i64>,
}

/// Counts the conversations of `user_id` whose first message was sent in
/// `[from, to)`, and lists the reply delays of the received ones. Reads the
/// tables that [`apply_message_event`] keeps: one row per room of the user.
pub async fn conversation_stats(
    pool: &AnyPool,
    user_id: &str,
    from: i64,
    to: i64,
) -> Result<ConversationStats, sqlx::Error> {
    let counts = sqlx::query(
        "SELECT COUNT(*), COUNT(CASE WHEN s.sender = $1 THEN 1 END) \
         FROM memberships m JOIN conversation_starts s ON s.room_id = m.room_id \
         WHERE m.user_id = $1 AND s.origin_server_ts >= $2 AND s.origin_server_ts < $3",
    )
    .bind(user_id)
    .bind(from)
    .bind(to)
    .fetch_one(pool);
    // The user's earliest message in a room someone else opened came after
    // the first message, whose stream position is the room's lowest.
    let delays = sqlx::query(
        "SELECT r.earliest_ts - s.origin_server_ts AS delay \
         FROM memberships m JOIN conversation_starts s ON s.room_id = m.room_id \
         JOIN conversation_senders r ON r.room_id = m.room_id AND r.user_id = m.user_id \
         WHERE m.user_id = $1 AND s.sender <> $1 AND s.origin_server_ts >= $2 AND s.origin_server_ts < $3 \
         ORDER BY delay",
    )
    .bind(user_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool);
    let (counts, delays) = tokio::try_join!(counts, delays)?;
    let total: i64 = counts.get(0);
    let started: i64 = counts.get(1);
    Ok(ConversationStats {
        started: started as u64,
        received: (total - started) as u64,
        reply_delays: delays.iter().map(|r| r.get(0)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "@alice:example.org";
    const BOB: &str = "@bob:example.org";
    const CAROL: &str = "@carol:example.org";

    fn event<'a>(sender: &'a str, target: &'a str, membership: &'a str, ts: i64) -> MemberEvent<'a> {
        MemberEvent { sender, target, membership, is_direct: false, reason: None, origin_server_ts: ts }
    }

    fn request() -> ConnectionRoom {
        let invite = MemberEvent { is_direct: true, reason: Some("hello"), ..event(ALICE, BOB, "invite", 10) };
        match derive_change(None, "!r", ALICE, &invite, false) {
            IndexChange::Insert(row) => row,
            other => panic!("expected a new pending row, got {other:?}"),
        }
    }

    fn updated(row: &ConnectionRoom, event: MemberEvent<'_>) -> ConnectionRoom {
        match derive_change(Some(row), "!r", ALICE, &event, false) {
            IndexChange::Update(row) => row,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn direct_invite_starts_request() {
        let row = request();
        assert_eq!(row.status, ConnectionStatus::Pending);
        assert_eq!(row.note.as_deref(), Some("hello"));
        assert_eq!(row.requested_ts, 10);
    }

    #[test]
    fn invite_without_is_direct_is_ignored() {
        let invite = event(ALICE, BOB, "invite", 10);
        assert_eq!(derive_change(None, "!r", ALICE, &invite, false), IndexChange::Nothing);
    }

    #[test]
    fn direct_invite_after_others_is_ignored() {
        let invite = MemberEvent { is_direct: true, ..event(ALICE, BOB, "invite", 10) };
        assert_eq!(derive_change(None, "!r", ALICE, &invite, true), IndexChange::Nothing);
    }

    #[test]
    fn join_connects_and_leave_removes() {
        let joined = updated(&request(), event(BOB, BOB, "join", 20));
        assert_eq!(joined.status, ConnectionStatus::Connected);
        assert_eq!(joined.accepted_ts, Some(20));
        assert_eq!(joined.connected_ts, Some(20));

        let removed = updated(&joined, event(ALICE, ALICE, "leave", 30));
        assert_eq!(removed.status, ConnectionStatus::Removed);
        assert_eq!(removed.connected_ts, None);
        assert_eq!(removed.closed_ts, Some(30));
        assert_eq!(removed.accepted_ts, Some(20));
    }

    #[test]
    fn invitee_leaving_declines() {
        let declined = updated(&request(), event(BOB, BOB, "leave", 20));
        assert_eq!(declined.status, ConnectionStatus::Declined);
        assert_eq!(declined.closed_ts, Some(20));
    }

    #[test]
    fn requester_leaving_or_kicking_withdraws() {
        let left = updated(&request(), event(ALICE, ALICE, "leave", 20));
        assert_eq!(left.status, ConnectionStatus::Withdrawn);

        let kicked = updated(&request(), event(ALICE, BOB, "leave", 20));
        assert_eq!(kicked.status, ConnectionStatus::Withdrawn);

        let joined_after = updated(&left, event(BOB, BOB, "join", 30));
        assert_eq!(joined_after.status, ConnectionStatus::Withdrawn);
    }

    #[test]
    fn third_user_before_accept_drops_room() {
        let third = event(ALICE, CAROL, "invite", 20);
        assert_eq!(derive_change(Some(&request()), "!r", ALICE, &third, false), IndexChange::Delete);
    }

    #[test]
    fn third_user_after_accept_keeps_connection() {
        let joined = updated(&request(), event(BOB, BOB, "join", 20));
        let third = event(ALICE, CAROL, "invite", 30);
        assert_eq!(derive_change(Some(&joined), "!r", ALICE, &third, false), IndexChange::Nothing);
    }
}
