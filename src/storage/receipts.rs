//! Read receipts (`m.read`, `m.read.private`) per room, user, type and thread.

use sqlx::{AnyConnection, AnyPool, Row};

pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: String,
    pub event_id: String,
    pub event_stream: i64,
    pub ts: i64,
}

#[allow(clippy::too_many_arguments)]
pub async fn put(
    conn: &mut AnyConnection,
    room_id: &str,
    user_id: &str,
    receipt_type: &str,
    thread_id: &str,
    event_id: &str,
    event_stream: i64,
    ts: i64,
    stream_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts, stream_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE SET \
         event_id = excluded.event_id, event_stream = excluded.event_stream, ts = excluded.ts, stream_id = excluded.stream_id",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(receipt_type)
    .bind(thread_id)
    .bind(event_id)
    .bind(event_stream)
    .bind(ts)
    .bind(stream_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn receipt_row(r: &sqlx::any::AnyRow) -> ReceiptRow {
    ReceiptRow {
        room_id: r.get(0),
        user_id: r.get(1),
        receipt_type: r.get(2),
        thread_id: r.get(3),
        event_id: r.get(4),
        event_stream: r.get(5),
        ts: r.get(6),
    }
}

/// Receipts in a room changed in `(since, upto]`.
pub async fn room_since(pool: &AnyPool, room_id: &str, since: i64, upto: i64) -> Result<Vec<ReceiptRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts FROM receipts \
         WHERE room_id = $1 AND stream_id > $2 AND stream_id <= $3",
    )
    .bind(room_id)
    .bind(since)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(receipt_row).collect())
}

/// Receipts changed in `(since, upto]` in every room the user has joined.
pub async fn joined_rooms_since(
    pool: &AnyPool,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<Vec<ReceiptRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.room_id, r.user_id, r.receipt_type, r.thread_id, r.event_id, r.event_stream, r.ts FROM receipts r \
         JOIN memberships m ON m.room_id = r.room_id \
         WHERE m.user_id = $1 AND m.membership = 'join' AND r.stream_id > $2 AND r.stream_id <= $3",
    )
    .bind(user_id)
    .bind(since)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(receipt_row).collect())
}
