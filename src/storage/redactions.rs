//! Pending redactions: received redactions whose target event was not
//! stored when they arrived, kept until the target is, and those that do not
//! apply to their target. Clients get neither (see [`HELD_BACK`]).

use sqlx::{AnyConnection, Row};

/// The condition on a query of `events` that leaves out the redactions held
/// back from clients: those that wait for their target or do not apply to it.
pub const HELD_BACK: &str =
    "NOT EXISTS (SELECT 1 FROM pending_redactions held WHERE held.redaction_id = events.event_id)";

/// A received redaction that waits for its target event.
#[derive(Debug, Clone)]
pub struct PendingRedaction {
    pub target_id: String,
    pub redaction_id: String,
    pub room_id: String,
    pub room_version: String,
    pub sender: String,
    /// Whether the sender's power level reached the redact level in the
    /// state before the redaction.
    pub may_redact_others: bool,
}

pub async fn insert(conn: &mut AnyConnection, pending: &PendingRedaction) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pending_redactions (target_id, redaction_id, room_id, room_version, sender, may_redact_others) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (target_id, redaction_id) DO NOTHING",
    )
    .bind(&pending.target_id)
    .bind(&pending.redaction_id)
    .bind(&pending.room_id)
    .bind(&pending.room_version)
    .bind(&pending.sender)
    .bind(i64::from(pending.may_redact_others))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Lists the pending redactions of `target_id`, ordered by redaction id.
pub async fn of_target<'c, E>(executor: E, target_id: &str) -> Result<Vec<PendingRedaction>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT target_id, redaction_id, room_id, room_version, sender, may_redact_others \
         FROM pending_redactions WHERE target_id = $1 ORDER BY redaction_id",
    )
    .bind(target_id)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PendingRedaction {
                target_id: row.try_get(0)?,
                redaction_id: row.try_get(1)?,
                room_id: row.try_get(2)?,
                room_version: row.try_get(3)?,
                sender: row.try_get(4)?,
                may_redact_others: row.try_get::<i64, _>(5)? != 0,
            })
        })
        .collect()
}

/// Deletes one pending redaction, once its target is stored and it applies.
pub async fn delete(conn: &mut AnyConnection, target_id: &str, redaction_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pending_redactions WHERE target_id = $1 AND redaction_id = $2")
        .bind(target_id)
        .bind(redaction_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Returns whether `event_id` is a redaction held back from clients.
pub async fn is_held(pool: &sqlx::AnyPool, event_id: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT 1 FROM pending_redactions WHERE redaction_id = $1 LIMIT 1")
        .bind(event_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.is_some())
}
