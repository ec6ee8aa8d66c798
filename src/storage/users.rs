//! Accounts, devices, access tokens (stored as SHA-256 hashes), filters,
//! profiles and presence.

use sqlx::{AnyConnection, AnyPool, Row};

pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

pub async fn insert(
    pool: &AnyPool,
    user_id: &str,
    password_hash: Option<&str>,
    is_admin: bool,
    displayname: &str,
    created_ts: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (user_id, password_hash, is_admin, displayname, created_ts) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(password_hash)
    .bind(i64::from(is_admin))
    .bind(displayname)
    .bind(created_ts)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get(pool: &AnyPool, user_id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT user_id, password_hash, is_admin, deactivated, displayname, avatar_url FROM users WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| UserRow {
        user_id: r.get(0),
        password_hash: r.get(1),
        is_admin: r.get::<i64, _>(2) != 0,
        deactivated: r.get::<i64, _>(3) != 0,
        displayname: r.get(4),
        avatar_url: r.get(5),
    }))
}

pub async fn set_password(pool: &AnyPool, user_id: &str, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
        .bind(hash)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn deactivate(pool: &AnyPool, user_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    tx.commit().await
}

pub async fn set_displayname(pool: &AnyPool, user_id: &str, name: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET displayname = $1 WHERE user_id = $2").bind(name).bind(user_id).execute(pool).await?;
    Ok(())
}

pub async fn set_avatar_url(pool: &AnyPool, user_id: &str, url: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET avatar_url = $1 WHERE user_id = $2").bind(url).bind(user_id).execute(pool).await?;
    Ok(())
}

/// Local users whose id or display name contains `term` (case-insensitive).
pub async fn search(
    pool: &AnyPool,
    term: &str,
    limit: i64,
) -> Result<Vec<(String, Option<String>, Option<String>)>, sqlx::Error> {
    let pattern = format!("%{}%", term.to_lowercase().replace('%', "").replace('_', ""));
    let rows = sqlx::query(
        "SELECT user_id, displayname, avatar_url FROM users WHERE deactivated = 0 AND \
         (LOWER(user_id) LIKE $1 OR LOWER(COALESCE(displayname, '')) LIKE $1) ORDER BY user_id LIMIT $2",
    )
    .bind(pattern)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// Creates or refreshes a device and stores a new access token for it.
pub async fn insert_device_with_token(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    token_hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (user_id, device_id) DO UPDATE SET \
         display_name = COALESCE(excluded.display_name, devices.display_name), last_seen_ts = excluded.last_seen_ts",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(display_name)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // A device has one valid access token at a time.
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

pub async fn token_owner(pool: &AnyPool, token_hash: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

pub async fn devices(pool: &AnyPool, user_id: &str) -> Result<Vec<DeviceRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| DeviceRow {
            device_id: r.get(0),
            display_name: r.get(1),
            last_seen_ts: r.get(2),
            last_seen_ip: r.get(3),
        })
        .collect())
}

pub async fn set_device_name(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    name: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3")
        .bind(name)
        .bind(user_id)
        .bind(device_id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn touch_device(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    ip: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE devices SET last_seen_ts = $1, last_seen_ip = COALESCE($2, last_seen_ip) WHERE user_id = $3 AND device_id = $4")
        .bind(now)
        .bind(ip)
        .bind(user_id)
        .bind(device_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes devices with their access tokens. Returns the hashes of the removed tokens.
pub async fn delete_devices(pool: &AnyPool, user_id: &str, device_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut hashes = Vec::new();
    for device_id in device_ids {
        // The transaction starts with a write: SQLite fails at once with "database is
        // locked", without waiting for busy_timeout, when a transaction that has read
        // tries to write after another connection committed.
        let rows = sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2 RETURNING token_hash")
            .bind(user_id)
            .bind(device_id)
            .fetch_all(&mut *tx)
            .await?;
        hashes.extend(rows.iter().map(|r| r.get::<String, _>(0)));
        sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(hashes)
}

pub async fn all_token_hashes(pool: &AnyPool, user_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT token_hash, device_id FROM access_tokens WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn insert_filter(pool: &AnyPool, user_id: &str, definition: &str) -> Result<i64, sqlx::Error> {
    // One statement, so that SQLite takes the write lock at its start and waits
    // for it: a read followed by a write in a deferred transaction fails at
    // once with SQLITE_BUSY when another connection wrote in between.
    let row = sqlx::query(
        "INSERT INTO filters (user_id, filter_id, definition) \
         SELECT $1, COALESCE(MAX(filter_id), -1) + 1, $2 FROM filters WHERE user_id = $1 \
         RETURNING filter_id",
    )
    .bind(user_id)
    .bind(definition)
    .fetch_one(pool)
    .await?;
    Ok(row.get(0))
}

pub async fn get_filter(pool: &AnyPool, user_id: &str, filter_id: i64) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT definition FROM filters WHERE user_id = $1 AND filter_id = $2")
        .bind(user_id)
        .bind(filter_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub struct PresenceRow {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    pub stream_id: i64,
}

fn presence_row(r: &sqlx::any::AnyRow) -> PresenceRow {
    PresenceRow {
        user_id: r.get(0),
        state: r.get(1),
        status_msg: r.get(2),
        last_active_ts: r.get(3),
        stream_id: r.get(4),
    }
}

pub async fn set_presence(
    conn: &mut AnyConnection,
    user_id: &str,
    state: &str,
    status_msg: Option<&str>,
    now: i64,
    stream_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_id) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg, \
         last_active_ts = excluded.last_active_ts, stream_id = excluded.stream_id",
    )
    .bind(user_id)
    .bind(state)
    .bind(status_msg)
    .bind(now)
    .bind(stream_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get_presence(pool: &AnyPool, user_id: &str) -> Result<Option<PresenceRow>, sqlx::Error> {
    let row =
        sqlx::query("SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.as_ref().map(presence_row))
}

/// Presence changes after `since` of users who share a joined room with `user_id`.
pub async fn presence_since(
    pool: &AnyPool,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<Vec<PresenceRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT p.user_id, p.state, p.status_msg, p.last_active_ts, p.stream_id FROM presence p \
         WHERE p.stream_id > $2 AND p.stream_id <= $3 AND p.user_id IN ( \
            SELECT o.user_id FROM memberships m JOIN memberships o ON o.room_id = m.room_id \
            WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership = 'join')",
    )
    .bind(user_id)
    .bind(since)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(presence_row).collect())
}
