//! Account data, global (`room_id` empty) and per room.

use sqlx::{AnyConnection, AnyPool, Row};

pub async fn put(
    conn: &mut AnyConnection,
    user_id: &str,
    room_id: &str,
    data_type: &str,
    content: &str,
    stream_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_id) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(data_type)
    .bind(content)
    .bind(stream_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, user_id: &str, room_id: &str, data_type: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3")
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// `(room_id, type, content)` changed in `(since, upto]`.
pub async fn changed_since(
    pool: &AnyPool,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT room_id, data_type, content FROM account_data WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3",
    )
    .bind(user_id)
    .bind(since)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}
