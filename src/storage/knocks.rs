//! Knocks of local users on rooms that this server is not in (sent through
//! `make_knock` and `send_knock` of another server).

use sqlx::{AnyConnection, AnyPool, Row};

pub struct RemoteKnock {
    pub room_id: String,
    pub user_id: String,
    pub event_id: String,
    /// The server the knock went through, which a withdrawal goes through too.
    pub server: String,
    /// A JSON array of the stripped state events that server returned.
    pub knock_state: String,
}

pub async fn insert(conn: &mut AnyConnection, knock: &RemoteKnock, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO remote_knocks (room_id, user_id, event_id, server, knock_state, knocked_ts) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id, user_id) DO UPDATE SET \
         event_id = excluded.event_id, server = excluded.server, knock_state = excluded.knock_state, \
         knocked_ts = excluded.knocked_ts",
    )
    .bind(&knock.room_id)
    .bind(&knock.user_id)
    .bind(&knock.event_id)
    .bind(&knock.server)
    .bind(&knock.knock_state)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, room_id: &str, user_id: &str) -> Result<Option<RemoteKnock>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT room_id, user_id, event_id, server, knock_state FROM remote_knocks \
         WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| RemoteKnock {
        room_id: r.get(0),
        user_id: r.get(1),
        event_id: r.get(2),
        server: r.get(3),
        knock_state: r.get(4),
    }))
}

pub async fn delete(conn: &mut AnyConnection, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM remote_knocks WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
