//! Server-side key backups: versions and the encrypted room keys in them.

use sqlx::{AnyConnection, AnyPool, Row};

pub struct VersionRow {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
}

fn version_row(r: &sqlx::any::AnyRow) -> VersionRow {
    VersionRow { version: r.get(0), algorithm: r.get(1), auth_data: r.get(2), etag: r.get(3) }
}

/// The newest version that is not deleted.
pub async fn latest_version(conn: &mut AnyConnection, user_id: &str) -> Result<Option<VersionRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND deleted = 0 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(version_row))
}

pub async fn version(pool: &AnyPool, user_id: &str, version: i64) -> Result<Option<VersionRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
    )
    .bind(user_id)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(version_row))
}

/// Creates the next version (numbers are never reused, deleted ones included).
pub async fn create_version(
    conn: &mut AnyConnection,
    user_id: &str,
    algorithm: &str,
    auth_data: &str,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM backup_versions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    let version = row.get::<i64, _>(0) + 1;
    sqlx::query("INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted) VALUES ($1, $2, $3, $4, 0, 0)")
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *conn)
        .await?;
    Ok(version)
}

pub async fn update_auth_data(
    conn: &mut AnyConnection,
    user_id: &str,
    version: i64,
    auth_data: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0")
            .bind(user_id)
            .bind(version)
            .bind(auth_data)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a version deleted and drops its keys.
pub async fn delete_version(conn: &mut AnyConnection, user_id: &str, version: i64) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0")
            .bind(user_id)
            .bind(version)
            .execute(&mut *conn)
            .await?;
    sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Increments a version's etag and returns the new value.
pub async fn bump_etag(conn: &mut AnyConnection, user_id: &str, version: i64) -> Result<i64, sqlx::Error> {
    sqlx::query("UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query("SELECT etag FROM backup_versions WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.get(0))
}

pub async fn etag_in_txn(conn: &mut AnyConnection, user_id: &str, version: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT etag FROM backup_versions WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.get(0))
}

pub async fn count(pool: &AnyPool, user_id: &str, version: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(pool)
        .await?;
    Ok(row.get(0))
}

pub async fn count_in_txn(conn: &mut AnyConnection, user_id: &str, version: i64) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.get(0))
}

/// One backed-up session key.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

fn key_row(r: &sqlx::any::AnyRow) -> KeyRow {
    KeyRow {
        room_id: r.get(0),
        session_id: r.get(1),
        first_message_index: r.get(2),
        forwarded_count: r.get(3),
        is_verified: r.get::<i64, _>(4) != 0,
        session_data: r.get(5),
    }
}

/// Keys of a version, optionally of one room and one session.
pub async fn keys(
    pool: &AnyPool,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
         FROM backup_keys WHERE user_id = $1 AND version = $2 \
         AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4) ORDER BY room_id, session_id",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id.unwrap_or(""))
    .bind(session_id.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(key_row).collect())
}

pub async fn key_in_txn(
    conn: &mut AnyConnection,
    user_id: &str,
    version: i64,
    room_id: &str,
    session_id: &str,
) -> Result<Option<KeyRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
         FROM backup_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id)
    .bind(session_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(key_row))
}

pub async fn put_key(conn: &mut AnyConnection, user_id: &str, version: i64, key: &KeyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, \
         is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
         first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
         is_verified = excluded.is_verified, session_data = excluded.session_data",
    )
    .bind(user_id)
    .bind(version)
    .bind(&key.room_id)
    .bind(&key.session_id)
    .bind(key.first_message_index)
    .bind(key.forwarded_count)
    .bind(i64::from(key.is_verified))
    .bind(&key.session_data)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes keys of a version, optionally only of one room and one session.
pub async fn delete_keys(
    conn: &mut AnyConnection,
    user_id: &str,
    version: i64,
    room_id: Option<&str>,
    session_id: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) \
         AND ($4 = '' OR session_id = $4)",
    )
    .bind(user_id)
    .bind(version)
    .bind(room_id.unwrap_or(""))
    .bind(session_id.unwrap_or(""))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
