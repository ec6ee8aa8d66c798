//! The federation sender's outbox and delivery state per destination
//! (`schema/*/0008_federation.sql`).

use sqlx::{AnyPool, Row};

/// `kind` of an outbox row.
pub const PDU: &str = "pdu";
pub const EDU: &str = "edu";

/// Queues one PDU or EDU (`kind`) for `destination`.
pub async fn push(pool: &AnyPool, destination: &str, kind: &str, body: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO federation_outbox (destination, kind, body, queued_ts) VALUES ($1, $2, $3, $4)")
        .bind(destination)
        .bind(kind)
        .bind(body)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// Reads the oldest `limit` rows of one kind for `destination`, as (id, body).
pub async fn oldest(
    pool: &AnyPool,
    destination: &str,
    kind: &str,
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT id, body FROM federation_outbox WHERE destination = $1 AND kind = $2 ORDER BY id LIMIT $3")
            .bind(destination)
            .bind(kind)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Deletes delivered rows.
pub async fn remove(pool: &AnyPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    // The ids are integers from the database, so the list is safe to inline.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let sql = format!("DELETE FROM federation_outbox WHERE id IN ({list})");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

/// Lists the destinations with queued rows.
pub async fn destinations(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT destination FROM federation_outbox").fetch_all(pool).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Reads the consecutive failures and the retry time of `destination`
/// (zero for a destination without failures).
pub async fn retry_state(pool: &AnyPool, destination: &str) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query("SELECT failures, retry_after_ts FROM federation_destinations WHERE destination = $1")
        .bind(destination)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))).unwrap_or((0, 0)))
}

/// Records the delivery state of `destination`: `failures` 0 after a success.
pub async fn set_retry_state(
    pool: &AnyPool,
    destination: &str,
    failures: i64,
    retry_after_ts: i64,
    last_error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO federation_destinations (destination, failures, retry_after_ts, last_error) VALUES ($1, $2, $3, $4)
         ON CONFLICT (destination) DO UPDATE SET failures = excluded.failures,
             retry_after_ts = excluded.retry_after_ts, last_error = excluded.last_error",
    )
    .bind(destination)
    .bind(failures)
    .bind(retry_after_ts)
    .bind(last_error)
    .execute(pool)
    .await?;
    Ok(())
}
