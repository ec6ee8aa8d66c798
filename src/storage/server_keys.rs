//! The cache of other servers' signing keys (`schema/*/0008_federation.sql`).

use sqlx::{AnyPool, Row};

/// One key of a server's key response, as cached.
pub struct KeyRow<'a> {
    pub key_id: &'a str,
    /// Unpadded base64.
    pub public_key: String,
    pub valid_until_ts: i64,
    /// Set for keys listed in `old_verify_keys`.
    pub expired_ts: Option<i64>,
}

/// Stores the keys of one key response in one transaction, replacing what
/// was cached for the same key ids. `response` is the signed response JSON.
pub async fn store(
    pool: &AnyPool,
    server_name: &str,
    keys: &[KeyRow<'_>],
    response: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for key in keys {
        sqlx::query(
            "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
                 valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
                 fetched_ts = excluded.fetched_ts, response = excluded.response",
        )
        .bind(server_name)
        .bind(key.key_id)
        .bind(&key.public_key)
        .bind(key.valid_until_ts)
        .bind(key.expired_ts)
        .bind(now)
        .bind(response)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Reads the unpadded base64 public key `key_id` of `server_name` when it is a
/// current key, valid after `now` and fetched after `fetched_after`.
pub async fn current_key(
    pool: &AnyPool,
    server_name: &str,
    key_id: &str,
    now: i64,
    fetched_after: i64,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT public_key FROM server_keys WHERE server_name = $1 AND key_id = $2 AND expired_ts IS NULL
         AND valid_until_ts > $3 AND fetched_ts > $4",
    )
    .bind(server_name)
    .bind(key_id)
    .bind(now)
    .bind(fetched_after)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Reads every cached key of `server_name` with the response it came in, as
/// (key id, response JSON).
pub async fn responses(pool: &AnyPool, server_name: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT key_id, response FROM server_keys WHERE server_name = $1")
        .bind(server_name)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}
