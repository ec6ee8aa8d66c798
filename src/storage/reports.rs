//! Reports that users send about events, rooms and other users.

use sqlx::{AnyConnection, AnyPool, Row};

/// A report as stored, for the operators' listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub id: i64,
    pub received_ts: i64,
    pub reporter: String,
    /// `event`, `room` or `user`.
    pub kind: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub user_id: Option<String>,
    pub reason: Option<String>,
}

/// A report to store: what it is about and why.
pub struct NewReport<'a> {
    pub reporter: &'a str,
    pub kind: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub reason: Option<&'a str>,
}

pub async fn insert(conn: &mut AnyConnection, report: &NewReport<'_>, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reports (received_ts, reporter, kind, room_id, event_id, user_id, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now)
    .bind(report.reporter)
    .bind(report.kind)
    .bind(report.room_id)
    .bind(report.event_id)
    .bind(report.user_id)
    .bind(report.reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Lists the newest `limit` reports, newest first.
pub async fn newest(pool: &AnyPool, limit: i64) -> Result<Vec<Report>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, received_ts, reporter, kind, room_id, event_id, user_id, reason FROM reports \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Report {
                id: row.try_get(0)?,
                received_ts: row.try_get(1)?,
                reporter: row.try_get(2)?,
                kind: row.try_get(3)?,
                room_id: row.try_get(4)?,
                event_id: row.try_get(5)?,
                user_id: row.try_get(6)?,
                reason: row.try_get(7)?,
            })
        })
        .collect()
}
