//! Invites of local users to rooms that this server is not in (received
//! through `PUT /_matrix/federation/v2/invite`).

use sqlx::{AnyConnection, AnyPool, Row};

pub struct RemoteInvite {
    pub room_id: String,
    pub user_id: String,
    pub event_id: String,
    pub room_version: String,
    pub sender: String,
    /// The invite event as this server countersigned it.
    pub event: String,
    /// A JSON array of the stripped state events sent with the invite.
    pub invite_state: String,
}

pub async fn insert(conn: &mut AnyConnection, invite: &RemoteInvite, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO remote_invites (room_id, user_id, event_id, room_version, sender, event, invite_state, \
         received_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (room_id, user_id) DO UPDATE SET \
         event_id = excluded.event_id, room_version = excluded.room_version, sender = excluded.sender, \
         event = excluded.event, invite_state = excluded.invite_state, received_ts = excluded.received_ts",
    )
    .bind(&invite.room_id)
    .bind(&invite.user_id)
    .bind(&invite.event_id)
    .bind(&invite.room_version)
    .bind(&invite.sender)
    .bind(&invite.event)
    .bind(&invite.invite_state)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, room_id: &str, user_id: &str) -> Result<Option<RemoteInvite>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT room_id, user_id, event_id, room_version, sender, event, invite_state FROM remote_invites \
         WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| RemoteInvite {
        room_id: r.get(0),
        user_id: r.get(1),
        event_id: r.get(2),
        room_version: r.get(3),
        sender: r.get(4),
        event: r.get(5),
        invite_state: r.get(6),
    }))
}

pub async fn delete(conn: &mut AnyConnection, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM remote_invites WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
