//! Application service delivery state and the stream reads that feed it.

use sqlx::{AnyConnection, AnyPool, Row};

use super::{
    events::{EVENT_COLUMNS, StoredEvent, row_to_event},
    receipts::ReceiptRow,
    users::PresenceRow,
};

/// How far one application service has been sent each stream.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    pub event_stream: i64,
    pub receipt_stream: i64,
    pub presence_stream: i64,
    pub last_txn_id: i64,
    /// The stored transaction not yet acknowledged: its id and JSON body.
    pub pending: Option<(i64, String)>,
}

pub async fn get(pool: &AnyPool, appservice_id: &str) -> Result<Option<StreamState>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT event_stream, receipt_stream, presence_stream, last_txn_id, pending_txn_id, pending_body \
         FROM appservice_streams WHERE appservice_id = $1",
    )
    .bind(appservice_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let pending_txn_id: Option<i64> = row.try_get(4)?;
    let pending_body: Option<String> = row.try_get(5)?;
    Ok(Some(StreamState {
        event_stream: row.try_get(0)?,
        receipt_stream: row.try_get(1)?,
        presence_stream: row.try_get(2)?,
        last_txn_id: row.try_get(3)?,
        pending: pending_txn_id.zip(pending_body),
    }))
}

/// Inserts or replaces the whole state of one application service.
pub async fn put(conn: &mut AnyConnection, appservice_id: &str, state: &StreamState) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO appservice_streams \
         (appservice_id, event_stream, receipt_stream, presence_stream, last_txn_id, pending_txn_id, pending_body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (appservice_id) DO UPDATE SET \
         event_stream = excluded.event_stream, receipt_stream = excluded.receipt_stream, \
         presence_stream = excluded.presence_stream, last_txn_id = excluded.last_txn_id, \
         pending_txn_id = excluded.pending_txn_id, pending_body = excluded.pending_body",
    )
    .bind(appservice_id)
    .bind(state.event_stream)
    .bind(state.receipt_stream)
    .bind(state.presence_stream)
    .bind(state.last_txn_id)
    .bind(state.pending.as_ref().map(|(id, _)| *id))
    .bind(state.pending.as_ref().map(|(_, body)| body.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Clears the pending transaction `txn_id` once the application service acknowledged it.
pub async fn acknowledge(conn: &mut AnyConnection, appservice_id: &str, txn_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appservice_streams SET pending_txn_id = NULL, pending_body = NULL \
         WHERE appservice_id = $1 AND pending_txn_id = $2",
    )
    .bind(appservice_id)
    .bind(txn_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Events of every room with `from < stream <= to`, oldest first, at most `limit`.
pub async fn events_between(
    pool: &AnyPool,
    from_exclusive: i64,
    to_inclusive: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2 \
         ORDER BY stream_ordering LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from_exclusive)
        .bind(to_inclusive)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(row_to_event).collect()
}

/// Receipts of every room changed in `(from, to]`.
pub async fn receipts_between(
    pool: &AnyPool,
    from_exclusive: i64,
    to_inclusive: i64,
) -> Result<Vec<ReceiptRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts FROM receipts \
         WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id",
    )
    .bind(from_exclusive)
    .bind(to_inclusive)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ReceiptRow {
            room_id: r.get(0),
            user_id: r.get(1),
            receipt_type: r.get(2),
            thread_id: r.get(3),
            event_id: r.get(4),
            event_stream: r.get(5),
            ts: r.get(6),
        })
        .collect())
}

/// Presence of every user changed in `(from, to]`.
pub async fn presence_between(
    pool: &AnyPool,
    from_exclusive: i64,
    to_inclusive: i64,
) -> Result<Vec<PresenceRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence \
         WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id",
    )
    .bind(from_exclusive)
    .bind(to_inclusive)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| PresenceRow {
            user_id: r.get(0),
            state: r.get(1),
            status_msg: r.get(2),
            last_active_ts: r.get(3),
            stream_id: r.get(4),
        })
        .collect())
}
