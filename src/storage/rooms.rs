//! Rooms, memberships, aliases and the public room directory.

use sqlx::{AnyConnection, AnyPool, Row};

pub struct RoomRow {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub is_public: bool,
}

pub async fn insert(
    conn: &mut AnyConnection,
    room_id: &str,
    room_version: &str,
    creator: &str,
    is_public: bool,
    created_ts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(room_id)
    .bind(room_version)
    .bind(creator)
    .bind(i64::from(is_public))
    .bind(created_ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(pool: &AnyPool, room_id: &str) -> Result<Option<RoomRow>, sqlx::Error> {
    let row = sqlx::query("SELECT room_id, room_version, creator, is_public FROM rooms WHERE room_id = $1")
        .bind(room_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| RoomRow {
        room_id: r.get(0),
        room_version: r.get(1),
        creator: r.get(2),
        is_public: r.get::<i64, _>(3) != 0,
    }))
}

pub async fn set_public(pool: &AnyPool, room_id: &str, is_public: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE rooms SET is_public = $1 WHERE room_id = $2")
        .bind(i64::from(is_public))
        .bind(room_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn public_rooms(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT room_id FROM rooms WHERE is_public = 1 ORDER BY created_ts ASC").fetch_all(pool).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn set_membership(
    conn: &mut AnyConnection,
    room_id: &str,
    user_id: &str,
    membership: &str,
    event_id: &str,
    stream: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering, forgotten, joined_stream) \
         VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (room_id, user_id) DO UPDATE SET \
         membership = excluded.membership, event_id = excluded.event_id, \
         stream_ordering = excluded.stream_ordering, forgotten = 0, \
         joined_stream = CASE WHEN memberships.membership = 'join' AND excluded.membership = 'join' \
         THEN memberships.joined_stream ELSE excluded.stream_ordering END",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(membership)
    .bind(event_id)
    .bind(stream)
    .bind(stream)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub struct MembershipRow {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream: i64,
}

fn membership_row(r: &sqlx::any::AnyRow) -> MembershipRow {
    MembershipRow { room_id: r.get(0), user_id: r.get(1), membership: r.get(2), event_id: r.get(3), stream: r.get(4) }
}

/// The rooms a user is in, invited to, or has left/been banned from (not forgotten).
pub async fn user_memberships(pool: &AnyPool, user_id: &str) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT room_id, user_id, membership, event_id, stream_ordering FROM memberships \
         WHERE user_id = $1 AND forgotten = 0",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(membership_row).collect())
}

pub async fn membership(pool: &AnyPool, room_id: &str, user_id: &str) -> Result<Option<MembershipRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT room_id, user_id, membership, event_id, stream_ordering FROM memberships \
         WHERE room_id = $1 AND user_id = $2",
    )
    .bind(room_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(membership_row))
}

pub async fn joined_rooms(pool: &AnyPool, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join'")
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn room_members(pool: &AnyPool, room_id: &str, membership: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT user_id FROM memberships WHERE room_id = $1 AND membership = $2")
        .bind(room_id)
        .bind(membership)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn count_members(pool: &AnyPool, room_id: &str, membership: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership = $2")
        .bind(room_id)
        .bind(membership)
        .fetch_one(pool)
        .await?;
    Ok(row.get(0))
}

/// Users who share a joined room with `user_id` (including the user).
pub async fn users_sharing_rooms(pool: &AnyPool, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT o.user_id FROM memberships m JOIN memberships o ON o.room_id = m.room_id \
         WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join'",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn forget(pool: &AnyPool, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn insert_alias(
    pool: &AnyPool,
    alias: &str,
    room_id: &str,
    creator: &str,
    created_ts: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (alias) DO NOTHING",
    )
    .bind(alias)
    .bind(room_id)
    .bind(creator)
    .bind(created_ts)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn insert_alias_in_txn(
    conn: &mut AnyConnection,
    alias: &str,
    room_id: &str,
    creator: &str,
    created_ts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .bind(created_ts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// `(room_id, creator)` of an alias.
pub async fn resolve_alias(pool: &AnyPool, alias: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
        .bind(alias)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

pub async fn delete_alias(pool: &AnyPool, alias: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM room_aliases WHERE alias = $1").bind(alias).execute(pool).await?;
    Ok(())
}

pub async fn room_aliases(pool: &AnyPool, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
        .bind(room_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
