//! Outliers: events held outside a room's timeline. They are the state and
//! auth events fetched from other servers to check a received event, and
//! received events that were soft-failed. They have no stream position, so
//! `/sync`, `/messages` and the federation sender never see them.

use std::sync::Arc;

use ruma::OwnedEventId;
use sqlx::{AnyConnection, AnyPool, Row};

use super::events::StoredEvent;
use crate::rooms::pdu::Pdu;

/// Stores an outlier. A second copy of the same event only adds the state
/// group when the first had none.
pub async fn insert(
    conn: &mut AnyConnection,
    pdu: &Pdu,
    state_group: i64,
    soft_failed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outlier_events (event_id, room_id, pdu, state_group, soft_failed) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (event_id) DO UPDATE SET state_group = excluded.state_group \
         WHERE outlier_events.state_group = 0",
    )
    .bind(pdu.event_id.as_str())
    .bind(pdu.room_id.as_str())
    .bind(&*pdu.json)
    .bind(state_group)
    .bind(i64::from(soft_failed))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Outliers with ids in `ids` (any order), as stored events without a
/// stream position (0).
pub async fn get_many(pool: &AnyPool, ids: &[String]) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT event_id, room_id, pdu, state_group FROM outlier_events WHERE event_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(pool).await? {
            let decode = |e: String| sqlx::Error::Decode(e.into());
            let event_id: String = row.try_get(0)?;
            let room_id: String = row.try_get(1)?;
            let json: String = row.try_get(2)?;
            let event_id = OwnedEventId::try_from(event_id).map_err(|e| decode(e.to_string()))?;
            let room_id = ruma::OwnedRoomId::try_from(room_id).map_err(|e| decode(e.to_string()))?;
            let pdu = Pdu::from_json(event_id, &json, &room_id).map_err(|e| decode(e.to_string()))?;
            events.push(StoredEvent {
                pdu: Arc::new(pdu),
                stream: 0,
                state_group: row.try_get(3)?,
                redacted_by: None,
                replaces_state: None,
                txn: None,
            });
        }
    }
    Ok(events)
}

/// Returns the stored PDU of an outlier and its room, inside a write.
pub async fn pdu_in_txn(conn: &mut AnyConnection, event_id: &str) -> Result<Option<Pdu>, sqlx::Error> {
    let row = sqlx::query("SELECT room_id, pdu FROM outlier_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let room_id: String = row.try_get(0)?;
    let json: String = row.try_get(1)?;
    let event_id = OwnedEventId::try_from(event_id).map_err(|e| decode(e.to_string()))?;
    let room_id = ruma::OwnedRoomId::try_from(room_id).map_err(|e| decode(e.to_string()))?;
    Pdu::from_json(event_id, &json, &room_id).map(Some).map_err(|e| decode(e.to_string()))
}

/// Replaces the stored PDU of an outlier by its redacted form.
pub async fn redact(conn: &mut AnyConnection, event_id: &str, redacted_json: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outlier_events SET pdu = $1 WHERE event_id = $2")
        .bind(redacted_json)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
