//! History fetched from other servers (backfill): the backward extremities
//! of each room and the stream positions of events older than the room's
//! first event on this server.
//!
//! Stream positions are laid out in three ranges:
//!
//! - positive: events in the order this server stored them (local, received
//!   and joined);
//! - from -1 down to just above [`EDGE_STATE_TOP`]: backfilled history, each
//!   batch below the previous one, so older events sort first and no
//!   reader of `stream_ordering > since` takes them for new events;
//! - at or below [`EDGE_STATE_TOP`]: the room's state at the backward edge of
//!   the stored history (the state before its oldest timeline event), which
//!   history visibility reads but no timeline shows. An event leaves this
//!   range when backfill reaches its place in the history.
//!
//! A room this server left entirely and joined again has a gap in its
//! history before the new join. The join reserves a block of positive
//! positions just below itself (a [`Gap`]), and backfill puts the events
//! sent while this server was away there, from the top down, so that they
//! sort between the old history and the join.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, AnyPool, Row};

use crate::rooms::pdu::Pdu;

/// The highest stream position of the edge state. Timeline reads take
/// events strictly above it.
pub const EDGE_STATE_TOP: i64 = -(1 << 60);

/// The first stream position of the edge state, which grows upwards.
const EDGE_STATE_BASE: i64 = -(1 << 62);

/// The condition on a query of `events` that leaves out the gap state
/// events not moved to their place yet. Like the edge state, clients get
/// them only at their place in the history.
pub const NOT_UNPLACED: &str =
    "NOT EXISTS (SELECT 1 FROM gap_state unplaced WHERE unplaced.event_id = events.event_id)";

/// The stream positions that a rejoin reserves for the gap before it.
pub const GAP_SPAN: i64 = 1 << 30;

/// A gap in a room's history: the events in it take the stream positions
/// in `(floor, ceiling]`, from the top down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gap {
    pub floor: i64,
    pub ceiling: i64,
}

/// Returns the backward extremities of a room.
pub async fn extremities(pool: &AnyPool, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT event_id FROM backfill_extremities WHERE room_id = $1 ORDER BY event_id")
        .bind(room_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Replaces the backward extremities of a room.
pub async fn set_extremities(conn: &mut AnyConnection, room_id: &str, event_ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM backfill_extremities WHERE room_id = $1").bind(room_id).execute(&mut *conn).await?;
    for event_id in event_ids {
        sqlx::query(
            "INSERT INTO backfill_extremities (room_id, event_id) VALUES ($1, $2) \
             ON CONFLICT (room_id, event_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Returns the position just above which the next backfilled batch ends:
/// the lowest position of any backfilled event, or 0 when there is none.
pub async fn history_floor(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT MIN(stream_ordering) FROM events WHERE stream_ordering > $1")
        .bind(EDGE_STATE_TOP)
        .fetch_one(&mut *conn)
        .await?;
    let lowest: Option<i64> = row.try_get(0)?;
    Ok(lowest.map_or(0, |lowest| lowest.min(0)))
}

/// Returns the next free position of the edge state range.
pub async fn next_edge_position(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT MAX(stream_ordering) FROM events WHERE stream_ordering <= $1")
        .bind(EDGE_STATE_TOP)
        .fetch_one(&mut *conn)
        .await?;
    let highest: Option<i64> = row.try_get(0)?;
    let next = highest.map_or(EDGE_STATE_BASE, |highest| highest + 1);
    if next > EDGE_STATE_TOP {
        return Err(sqlx::Error::Protocol("the stream positions of the edge state are used up".into()));
    }
    Ok(next)
}

/// Returns the edge state of a room as stored: for each `(event type,
/// state key)`, the event at the highest position, with that position.
pub async fn edge_state(
    conn: &mut AnyConnection,
    room_id: &str,
) -> Result<HashMap<(String, String), (String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_type, state_key, event_id, stream_ordering FROM events \
         WHERE room_id = $1 AND stream_ordering <= $2 AND state_key IS NOT NULL ORDER BY stream_ordering",
    )
    .bind(room_id)
    .bind(EDGE_STATE_TOP)
    .fetch_all(&mut *conn)
    .await?;
    let mut state = HashMap::new();
    for row in rows {
        let key = (row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        state.insert(key, (row.try_get::<String, _>(2)?, row.try_get::<i64, _>(3)?));
    }
    Ok(state)
}

/// Moves a stored event to another stream position, with the state group
/// of the state after it and the state event it replaced.
pub async fn move_event(
    conn: &mut AnyConnection,
    pdu: &Pdu,
    stream: i64,
    state_group: i64,
    replaces_state: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE events SET state_group = $1, replaces_state = $2 WHERE event_id = $3")
        .bind(state_group)
        .bind(replaces_state)
        .bind(pdu.event_id.as_str())
        .execute(&mut *conn)
        .await?;
    set_position(conn, pdu, stream).await
}

/// Moves a stored event of the edge state to the top of that range.
pub async fn raise_in_edge_state(conn: &mut AnyConnection, pdu: &Pdu, stream: i64) -> Result<(), sqlx::Error> {
    set_position(conn, pdu, stream).await
}

/// Gives a stored event another stream position, in the events table and in
/// the search and relation indexes, which are keyed by it too.
async fn set_position(conn: &mut AnyConnection, pdu: &Pdu, stream: i64) -> Result<(), sqlx::Error> {
    let event_id = pdu.event_id.as_str();
    super::search::delete(conn, event_id).await?;
    sqlx::query("UPDATE events SET stream_ordering = $1 WHERE event_id = $2")
        .bind(stream)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    super::search::insert(conn, pdu, stream).await?;
    set_relation_position(conn, event_id, stream).await?;
    Ok(())
}

/// Gives every edge state event of a room the state group of the edge state.
pub async fn set_edge_group(conn: &mut AnyConnection, room_id: &str, state_group: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE events SET state_group = $1 WHERE room_id = $2 AND stream_ordering <= $3")
        .bind(state_group)
        .bind(room_id)
        .bind(EDGE_STATE_TOP)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Returns the open gaps of a room, newest first.
pub async fn gaps(pool: &AnyPool, room_id: &str) -> Result<Vec<Gap>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT floor, ceiling FROM backfill_gaps WHERE room_id = $1 ORDER BY floor DESC")
        .bind(room_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| Ok(Gap { floor: r.try_get(0)?, ceiling: r.try_get(1)? })).collect()
}

/// Returns the events of a gap that the events after it list in
/// `prev_events` but that are not stored.
pub async fn gap_extremities(pool: &AnyPool, room_id: &str, gap: Gap) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT event_id FROM backfill_gaps WHERE room_id = $1 AND floor = $2 ORDER BY event_id")
        .bind(room_id)
        .bind(gap.floor)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Replaces the unfetched events of a gap; the gap closes without any.
pub async fn set_gap_extremities(
    conn: &mut AnyConnection,
    room_id: &str,
    gap: Gap,
    event_ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM backfill_gaps WHERE room_id = $1 AND floor = $2")
        .bind(room_id)
        .bind(gap.floor)
        .execute(&mut *conn)
        .await?;
    for event_id in event_ids {
        sqlx::query(
            "INSERT INTO backfill_gaps (room_id, event_id, floor, ceiling) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room_id, event_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(event_id)
        .bind(gap.floor)
        .bind(gap.ceiling)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Returns the position just above which the next batch of a gap ends: the
/// lowest position of the events already in it, or just above its ceiling.
pub async fn gap_bottom(conn: &mut AnyConnection, gap: Gap) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("SELECT MIN(stream_ordering) FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2")
            .bind(gap.floor)
            .bind(gap.ceiling)
            .fetch_one(&mut *conn)
            .await?;
    let lowest: Option<i64> = row.try_get(0)?;
    Ok(lowest.unwrap_or(gap.ceiling + 1))
}

/// Stores the state events of a gap that the rejoin's state listed, which
/// persisting placed just before the join, at the top of the gap, and marks
/// them to be moved when backfill reaches their place. `pdus` come oldest
/// first. The search index has not reached the gap yet, so it needs no change.
pub async fn place_gap_state(conn: &mut AnyConnection, gap: Gap, pdus: &[&Pdu]) -> Result<(), sqlx::Error> {
    let first = gap.ceiling - pdus.len() as i64 + 1;
    for (index, pdu) in pdus.iter().enumerate() {
        let event_id = pdu.event_id.as_str();
        let stream = first + index as i64;
        sqlx::query("UPDATE events SET stream_ordering = $1 WHERE event_id = $2")
            .bind(stream)
            .bind(event_id)
            .execute(&mut *conn)
            .await?;
        set_relation_position(conn, event_id, stream).await?;
        sqlx::query("INSERT INTO gap_state (event_id, room_id) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING")
            .bind(event_id)
            .bind(pdu.room_id.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Returns the ids among `ids` of gap state events not moved to their place yet.
pub async fn unplaced_gap_state(pool: &AnyPool, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT event_id FROM gap_state WHERE event_id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(pool).await? {
            found.insert(row.try_get(0)?);
        }
    }
    Ok(found)
}

/// Moves a gap state event to its place in the gap, with the state group of
/// the state after it. The search index entry follows it when the index has
/// reached the new position, else the index picks it up there.
pub async fn move_gap_state(
    conn: &mut AnyConnection,
    pdu: &Pdu,
    stream: i64,
    state_group: i64,
    replaces_state: Option<&str>,
    indexed: i64,
) -> Result<(), sqlx::Error> {
    let event_id = pdu.event_id.as_str();
    super::search::delete(conn, event_id).await?;
    sqlx::query("UPDATE events SET stream_ordering = $1, state_group = $2, replaces_state = $3 WHERE event_id = $4")
        .bind(stream)
        .bind(state_group)
        .bind(replaces_state)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    set_relation_position(conn, event_id, stream).await?;
    if stream <= indexed {
        super::search::insert(conn, pdu, stream).await?;
    }
    sqlx::query("DELETE FROM gap_state WHERE event_id = $1").bind(event_id).execute(&mut *conn).await?;
    Ok(())
}

/// Gives an event's row in the relations index its new stream position.
async fn set_relation_position(conn: &mut AnyConnection, event_id: &str, stream: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE event_relations SET stream_ordering = $1 WHERE event_id = $2")
        .bind(stream)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
