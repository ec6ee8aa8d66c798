//! End-to-end encryption keys: device keys, one-time and fallback keys,
//! cross-signing keys and their signatures, the device-list stream and
//! to-device messages.

use sqlx::{AnyConnection, AnyPool, Row};

// Device keys

pub async fn device_keys(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn put_device_keys(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    key_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(key_json)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A device of a user with its display name and, once uploaded, its keys.
pub struct DeviceKeysRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub key_json: String,
}

/// Loads the uploaded keys of a user's devices.
pub async fn user_device_keys(pool: &AnyPool, user_id: &str) -> Result<Vec<DeviceKeysRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT k.device_id, d.display_name, k.key_json FROM device_keys k \
         JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| DeviceKeysRow { device_id: r.get(0), display_name: r.get(1), key_json: r.get(2) }).collect())
}

/// Removes every key of a device and its pending to-device messages.
pub async fn delete_device(conn: &mut AnyConnection, user_id: &str, device_id: &str) -> Result<(), sqlx::Error> {
    for sql in [
        "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2",
        "DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2",
    ] {
        sqlx::query(sql).bind(user_id).bind(device_id).execute(&mut *conn).await?;
    }
    Ok(())
}

// One-time and fallback keys

pub async fn one_time_key(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .bind(key_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn next_upload_seq(conn: &mut AnyConnection, user_id: &str, device_id: &str) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("SELECT COALESCE(MAX(upload_seq), 0) FROM one_time_keys WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(row.get::<i64, _>(0) + 1)
}

pub async fn insert_one_time_key(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
    upload_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_seq) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .bind(key_id)
    .bind(key_json)
    .bind(upload_seq)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Unclaimed one-time keys of a device, per algorithm.
pub async fn one_time_key_counts(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Same as [`one_time_key_counts`], inside a write.
pub async fn one_time_key_counts_in_txn(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Takes the oldest one-time key of an algorithm: `(key_id, key_json)`.
pub async fn claim_one_time_key(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
         ORDER BY upload_seq, key_id LIMIT 1",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let key_id: String = row.get(0);
    sqlx::query("DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4")
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(&key_id)
        .execute(&mut *conn)
        .await?;
    Ok(Some((key_id, row.get(1))))
}

pub async fn put_fallback_key(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
    key_id: &str,
    key_json: &str,
) -> Result<(), sqlx::Error> {
    // The same key uploaded again keeps its `used` flag; a new key starts unused.
    sqlx::query(
        "INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0) \
         ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, \
         used = CASE WHEN fallback_keys.key_id = excluded.key_id AND fallback_keys.key_json = excluded.key_json \
         THEN fallback_keys.used ELSE 0 END",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .bind(key_id)
    .bind(key_json)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Hands out the fallback key of an algorithm and marks it used: `(key_id, key_json)`.
pub async fn claim_fallback_key(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(algorithm)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    sqlx::query("UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3")
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .execute(&mut *conn)
        .await?;
    Ok(Some((row.get(0), row.get(1))))
}

/// Algorithms whose fallback key has not been handed out yet.
pub async fn unused_fallback_key_types(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm",
    )
    .bind(user_id)
    .bind(device_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// Cross-signing keys and signatures

/// `(key_type, public_key, key_json)` of a user's cross-signing keys.
pub async fn cross_signing_keys(pool: &AnyPool, user_id: &str) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT key_type, public_key, key_json FROM cross_signing_keys WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

pub async fn put_cross_signing_key(
    conn: &mut AnyConnection,
    user_id: &str,
    key_type: &str,
    public_key: &str,
    key_json: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json",
    )
    .bind(user_id)
    .bind(key_type)
    .bind(public_key)
    .bind(key_json)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn put_signature(
    conn: &mut AnyConnection,
    signer_user_id: &str,
    signer_key_id: &str,
    target_user_id: &str,
    target_key_id: &str,
    signature: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO key_signatures (signer_user_id, signer_key_id, target_user_id, target_key_id, signature) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (signer_user_id, signer_key_id, target_user_id, target_key_id) \
         DO UPDATE SET signature = excluded.signature",
    )
    .bind(signer_user_id)
    .bind(signer_key_id)
    .bind(target_user_id)
    .bind(target_key_id)
    .bind(signature)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A signature stored for a key of `target_user_id`.
pub struct SignatureRow {
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub target_key_id: String,
    pub signature: String,
}

/// Signatures on a user's keys made by the user or by `viewer`.
pub async fn signatures_for(
    pool: &AnyPool,
    target_user_id: &str,
    viewer: &str,
) -> Result<Vec<SignatureRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT signer_user_id, signer_key_id, target_key_id, signature FROM key_signatures \
         WHERE target_user_id = $1 AND (signer_user_id = $1 OR signer_user_id = $2)",
    )
    .bind(target_user_id)
    .bind(viewer)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| SignatureRow {
            signer_user_id: r.get(0),
            signer_key_id: r.get(1),
            target_key_id: r.get(2),
            signature: r.get(3),
        })
        .collect())
}

// Device lists

pub async fn mark_device_list_change(
    conn: &mut AnyConnection,
    stream_id: i64,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO device_list_changes (stream_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(stream_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Users whose devices changed in `(since, upto]` and who are the user or
/// share a room with them (joined or invited).
pub async fn device_list_changes_visible_to(
    pool: &AnyPool,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT c.user_id FROM device_list_changes c WHERE c.stream_id > $2 AND c.stream_id <= $3 \
         AND (c.user_id = $1 OR c.user_id IN (SELECT o.user_id FROM memberships m JOIN memberships o \
         ON o.room_id = m.room_id WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership IN ('join', 'invite')))",
    )
    .bind(user_id)
    .bind(since)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Member events in `(since, upto]` of rooms the user has a membership in:
/// `(room_id, state_key, pdu)`.
pub async fn member_events_between(
    pool: &AnyPool,
    user_id: &str,
    since: i64,
    upto: i64,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT e.room_id, e.state_key, e.pdu FROM events e JOIN memberships m ON m.room_id = e.room_id \
         WHERE m.user_id = $1 AND e.event_type = 'm.room.member' AND e.state_key IS NOT NULL \
         AND e.stream_ordering > $2 AND e.stream_ordering <= $3 ORDER BY e.stream_ordering",
    )
    .bind(user_id)
    .bind(since)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// Users joined to or invited to the rooms the user has joined, the user included.
pub async fn users_sharing_rooms(pool: &AnyPool, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT o.user_id FROM memberships m JOIN memberships o ON o.room_id = m.room_id \
         WHERE m.user_id = $1 AND m.membership = 'join' AND o.membership IN ('join', 'invite')",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// To-device messages

pub async fn claim_to_device_txn(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    txn_id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(txn_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn device_ids(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT device_id FROM devices WHERE user_id = $1").bind(user_id).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn insert_to_device(
    conn: &mut AnyConnection,
    stream_id: i64,
    user_id: &str,
    device_id: &str,
    sender: &str,
    event_type: &str,
    content: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO to_device_messages (stream_id, user_id, device_id, sender, event_type, content) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(stream_id)
    .bind(user_id)
    .bind(device_id)
    .bind(sender)
    .bind(event_type)
    .bind(content)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A message waiting for a device.
pub struct ToDeviceRow {
    pub stream_id: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// Loads the oldest `limit` messages for a device up to `upto`.
pub async fn to_device_pending(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    upto: i64,
    limit: i64,
) -> Result<Vec<ToDeviceRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT stream_id, sender, event_type, content FROM to_device_messages \
         WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3 ORDER BY stream_id LIMIT $4",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(upto)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ToDeviceRow { stream_id: r.get(0), sender: r.get(1), event_type: r.get(2), content: r.get(3) })
        .collect())
}

/// Deletes the messages a device has acknowledged (those at or before `upto`).
pub async fn delete_to_device_upto(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3")
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Checks whether a device has messages at or before `upto` (acknowledged ones not yet deleted).
pub async fn has_to_device_upto(
    pool: &AnyPool,
    user_id: &str,
    device_id: &str,
    upto: i64,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
    )
    .bind(user_id)
    .bind(device_id)
    .bind(upto)
    .fetch_one(pool)
    .await?;
    Ok(row.get::<i64, _>(0) > 0)
}
