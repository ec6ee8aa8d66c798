//! End-to-end encryption over federation (`schema/*/0012_e2ee_federation.sql`):
//! the device-list updates announced for local users, the cache of other
//! servers' users' device lists and cross-signing keys, and the ids of
//! to-device messages received from other servers.

use sqlx::{AnyConnection, AnyPool, Row};

// Updates announced for local users

/// Records an `m.device_list_update` of a local user at `stream_id` and
/// returns the stream id of the user's previous update, its `prev_id`.
pub async fn record_outbound(
    conn: &mut AnyConnection,
    user_id: &str,
    stream_id: i64,
    device_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT MAX(stream_id) FROM device_list_outbound WHERE user_id = $1 AND stream_id < $2")
        .bind(user_id)
        .bind(stream_id)
        .fetch_one(&mut *conn)
        .await?;
    let previous: Option<i64> = row.get(0);
    sqlx::query("INSERT INTO device_list_outbound (user_id, stream_id, device_id) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(stream_id)
        .bind(device_id)
        .execute(&mut *conn)
        .await?;
    Ok(previous)
}

/// Returns the stream id of a local user's newest device-list update (0 before the first).
pub async fn latest_outbound(pool: &AnyPool, user_id: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT MAX(stream_id) FROM device_list_outbound WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await?;
    Ok(row.get::<Option<i64>, _>(0).unwrap_or(0))
}

// The cache of remote users' device lists

/// Returns the origin's stream id of a remote user's cached device list, if it is cached.
pub async fn remote_stream_id(pool: &AnyPool, user_id: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT stream_id FROM remote_device_lists WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// A cached device of a remote user.
pub struct RemoteDeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: String,
}

pub async fn remote_devices(pool: &AnyPool, user_id: &str) -> Result<Vec<RemoteDeviceRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT device_id, display_name, key_json FROM remote_devices WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| RemoteDeviceRow { device_id: r.get(0), display_name: r.get(1), key_json: r.get(2) })
        .collect())
}

/// Loads `(key_type, key_json)` of a remote user's cached cross-signing keys.
pub async fn remote_cross_signing_keys(pool: &AnyPool, user_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Forgets everything cached about a remote user.
pub async fn drop_remote_list(conn: &mut AnyConnection, user_id: &str) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM remote_device_lists WHERE user_id = $1",
        "DELETE FROM remote_devices WHERE user_id = $1",
        "DELETE FROM remote_cross_signing_keys WHERE user_id = $1",
    ] {
        sqlx::query(sql).bind(user_id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Sets the origin's stream id of a cached remote user's list, creating the entry.
pub async fn set_remote_stream_id(
    conn: &mut AnyConnection,
    user_id: &str,
    stream_id: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO remote_device_lists (user_id, stream_id, updated_ts) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, updated_ts = excluded.updated_ts",
    )
    .bind(user_id)
    .bind(stream_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn put_remote_device(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    key_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO remote_devices (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, \
         key_json = excluded.key_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(display_name)
    .bind(key_json)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn delete_remote_device(conn: &mut AnyConnection, user_id: &str, device_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn put_remote_cross_signing_key(
    conn: &mut AnyConnection,
    user_id: &str,
    key_type: &str,
    key_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
    )
    .bind(user_id)
    .bind(key_type)
    .bind(key_json)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// To-device messages from other servers

/// Records the `message_id` of an inbound `m.direct_to_device` EDU. Returns
/// false when the origin sent it before.
pub async fn claim_inbound_message(
    conn: &mut AnyConnection,
    origin: &str,
    message_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO inbound_to_device_ids (origin, message_id, received_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(origin)
    .bind(message_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
