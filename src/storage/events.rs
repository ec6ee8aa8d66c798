//! Events: the stored PDUs, their stream order, and transaction ids.

use std::{collections::HashSet, sync::Arc};

use ruma::{OwnedEventId, RoomId};
use sqlx::{AnyConnection, AnyPool, Row, any::AnyRow};

use super::{backfill::NOT_UNPLACED, redactions::HELD_BACK};
use crate::rooms::pdu::Pdu;

/// A stored event with what the server tracks beside its PDU.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub pdu: Arc<Pdu>,
    pub stream: i64,
    pub state_group: i64,
    pub redacted_by: Option<String>,
    /// The state event this one replaced, for `unsigned.prev_content`.
    pub replaces_state: Option<String>,
    /// The transaction id and device that sent it, for echoing to that device.
    pub txn: Option<(String, String)>,
}

pub const EVENT_COLUMNS: &str =
    "stream_ordering, event_id, room_id, pdu, state_group, redacted_by, replaces_state, txn_id, txn_device";

pub fn row_to_event(row: &AnyRow) -> Result<StoredEvent, sqlx::Error> {
    let event_id: String = row.try_get("event_id")?;
    let room_id: String = row.try_get("room_id")?;
    let json: String = row.try_get("pdu")?;
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let event_id = OwnedEventId::try_from(event_id).map_err(|e| decode(e.to_string()))?;
    let room_id = ruma::OwnedRoomId::try_from(room_id).map_err(|e| decode(e.to_string()))?;
    let pdu = Pdu::from_json(event_id, &json, &room_id).map_err(|e| decode(e.to_string()))?;
    let txn_id: Option<String> = row.try_get("txn_id")?;
    let txn_device: Option<String> = row.try_get("txn_device")?;
    Ok(StoredEvent {
        pdu: Arc::new(pdu),
        stream: row.try_get("stream_ordering")?,
        state_group: row.try_get("state_group")?,
        redacted_by: row.try_get("redacted_by")?,
        replaces_state: row.try_get("replaces_state")?,
        txn: txn_id.zip(txn_device),
    })
}

pub(super) fn rows_to_events(rows: Vec<AnyRow>) -> Result<Vec<StoredEvent>, sqlx::Error> {
    rows.iter().map(row_to_event).collect()
}

pub struct NewEvent<'a> {
    pub pdu: &'a Pdu,
    pub stream: i64,
    pub state_group: i64,
    pub replaces_state: Option<&'a str>,
    /// An event that must already be stored: the event's predecessor, which may
    /// have been queued in an earlier write that failed.
    pub require_prev: Option<&'a str>,
    /// `(transaction id, device, transaction key)` of the request that sent it.
    pub txn: Option<(&'a str, &'a str, &'a str)>,
}

pub async fn insert(conn: &mut AnyConnection, event: NewEvent<'_>) -> Result<(), sqlx::Error> {
    let pdu = event.pdu;
    const COLUMNS: &str = "stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
         origin_server_ts, pdu, state_group, replaces_state, mentions, txn_id, txn_device, txn_key";
    const VALUES: &str = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15";
    let sql = match event.require_prev {
        Some(_) => format!(
            "INSERT INTO events ({COLUMNS}) SELECT {VALUES} WHERE EXISTS (SELECT 1 FROM events WHERE event_id = $16)"
        ),
        None => format!("INSERT INTO events ({COLUMNS}) VALUES ({VALUES})"),
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(event.stream)
        .bind(pdu.event_id.as_str())
        .bind(pdu.room_id.as_str())
        .bind(pdu.sender.as_str())
        .bind(pdu.kind.to_string())
        .bind(pdu.state_key.as_deref())
        .bind(pdu.depth)
        .bind(i64::from(pdu.origin_server_ts.get()))
        .bind(&*pdu.json)
        .bind(event.state_group)
        .bind(event.replaces_state)
        .bind(mentions(pdu))
        .bind(event.txn.map(|(txn, _, _)| txn))
        .bind(event.txn.map(|(_, device, _)| device))
        .bind(event.txn.map(|(_, _, key)| key));
    if let Some(prev) = event.require_prev {
        query = query.bind(prev);
    }
    let result = query.execute(&mut *conn).await?;
    if result.rows_affected() != 1 {
        return Err(sqlx::Error::Protocol(format!(
            "event {} was not stored because its previous event {} is missing",
            pdu.event_id,
            event.require_prev.unwrap_or_default()
        )));
    }
    super::relations::insert(conn, pdu, event.stream).await?;
    // The live stream is indexed after commit, in batches, off this path.
    if event.stream < 0 {
        super::search::insert(conn, pdu, event.stream).await?;
    }
    Ok(())
}

pub async fn get(pool: &AnyPool, event_id: &str) -> Result<Option<StoredEvent>, sqlx::Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event_id).fetch_optional(pool).await?;
    row.as_ref().map(row_to_event).transpose()
}

pub async fn get_in_txn(conn: &mut AnyConnection, event_id: &str) -> Result<Option<StoredEvent>, sqlx::Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event_id).fetch_optional(&mut *conn).await?;
    row.as_ref().map(row_to_event).transpose()
}

/// Returns the newest timeline event of a room, including the events that clients do not get.
pub async fn newest_in_room(pool: &AnyPool, room_id: &RoomId) -> Result<Option<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > 0 \
         ORDER BY stream_ordering DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id.as_str()).fetch_optional(pool).await?;
    row.as_ref().map(row_to_event).transpose()
}

/// Events of a room with `from < stream <= to` that clients may get (see
/// [`HELD_BACK`] and [`NOT_UNPLACED`]), in stream order, at most `limit` counted from the newest
/// end when `newest_first` is set.
pub async fn room_range(
    pool: &AnyPool,
    room_id: &RoomId,
    from_exclusive: i64,
    to_inclusive: i64,
    limit: i64,
    newest_first: bool,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let order = if newest_first { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2 \
         AND stream_ordering <= $3 AND {HELD_BACK} AND {NOT_UNPLACED} ORDER BY stream_ordering {order} LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room_id.as_str())
        .bind(from_exclusive)
        .bind(to_inclusive)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows_to_events(rows)
}

/// The ids of rooms among `room_ids` that have events in `(from, to]`.
pub async fn rooms_with_events_between(
    pool: &AnyPool,
    user_id: &str,
    from_exclusive: i64,
    to_inclusive: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT e.room_id FROM events e JOIN memberships m ON m.room_id = e.room_id \
         WHERE m.user_id = $1 AND m.membership IN ('join', 'invite', 'leave', 'ban') \
         AND e.stream_ordering > $2 AND e.stream_ordering <= $3",
    )
    .bind(user_id)
    .bind(from_exclusive)
    .bind(to_inclusive)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// Events with ids in `ids` (any order).
pub async fn get_many(pool: &AnyPool, ids: &[String]) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        events.extend(rows_to_events(query.fetch_all(pool).await?)?);
    }
    Ok(events)
}

/// Returns the ids among `ids` of committed timeline events, without reading the events.
pub async fn stored_ids(pool: &AnyPool, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    let mut found = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT event_id FROM events WHERE event_id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(pool).await? {
            found.insert(row.try_get("event_id")?);
        }
    }
    Ok(found)
}

/// The newest state event of a kind at or before a stream position.
pub async fn state_before(
    pool: &AnyPool,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    at_stream: i64,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 \
         AND stream_ordering <= $4 ORDER BY stream_ordering DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .bind(at_stream)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(row_to_event).transpose()
}

/// All state events of one kind and key in a room, oldest first (e.g. one user's memberships).
pub async fn state_history(
    pool: &AnyPool,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT stream_ordering, pdu FROM events WHERE room_id = $1 AND event_type = $2 \
         AND state_key = $3 ORDER BY stream_ordering ASC",
    )
    .bind(room_id)
    .bind(event_type)
    .bind(state_key)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))).collect())
}

/// Finds the event sent by an earlier request with the same transaction key,
/// which is the client's transaction id scoped to its request path.
pub async fn txn_event(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    txn_key: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT event_id FROM events WHERE sender = $1 AND txn_device = $2 AND txn_key = $3")
        .bind(user_id)
        .bind(device_id)
        .bind(txn_key)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Replaces the stored PDU of a redacted event by its redacted form.
pub async fn redact(
    conn: &mut AnyConnection,
    event_id: &str,
    redacted_json: &str,
    redacted_by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE events SET pdu = $1, redacted_by = $2 WHERE event_id = $3")
        .bind(redacted_json)
        .bind(redacted_by)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    super::relations::delete(conn, event_id).await?;
    super::search::delete(conn, event_id).await?;
    Ok(())
}

/// The stream position of the newest event in a room.
pub async fn latest_stream_in_room(pool: &AnyPool, room_id: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(stream_ordering), 0) FROM events WHERE room_id = $1")
        .bind(room_id)
        .fetch_one(pool)
        .await?;
    Ok(row.get(0))
}

/// The users an event mentions through `m.mentions.user_ids`, space-separated
/// with a space at each end, so a `LIKE '% @user:server %'` finds one of them.
fn mentions(pdu: &Pdu) -> Option<String> {
    let content: serde_json::Value = serde_json::from_str(pdu.content.get()).ok()?;
    let ids = content.get("m.mentions")?.get("user_ids")?.as_array()?;
    let list: Vec<&str> = ids.iter().filter_map(|id| id.as_str()).collect();
    (!list.is_empty()).then(|| format!(" {} ", list.join(" ")))
}

/// Rooms per statement in the many-room queries; SQLite allows at most 500
/// terms in one compound SELECT.
const ROOMS_PER_QUERY: usize = 100;

/// The newest `limit` events at or before `upto` of each room that clients
/// may get (see [`HELD_BACK`] and [`NOT_UNPLACED`]), newest first per room: one index range per
/// room, many rooms per statement.
pub async fn latest_in_rooms(
    pool: &AnyPool,
    room_ids: &[String],
    upto: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = Vec::new();
    for chunk in room_ids.chunks(ROOMS_PER_QUERY) {
        let parts: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "SELECT {EVENT_COLUMNS} FROM (SELECT {EVENT_COLUMNS} FROM events WHERE room_id = ${} \
                     AND stream_ordering <= $1 AND {HELD_BACK} AND {NOT_UNPLACED} \
                     ORDER BY stream_ordering DESC LIMIT $2) AS room{i}",
                    i + 3
                )
            })
            .collect();
        let sql = parts.join(" UNION ALL ");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(upto).bind(limit);
        for room_id in chunk {
            query = query.bind(room_id.as_str());
        }
        events.extend(rows_to_events(query.fetch_all(pool).await?)?);
    }
    Ok(events)
}
