//! Room state: state groups (the state after each event, stored as deltas
//! against a previous group), the current state of each room, and the forward
//! extremities that new events point at.

use std::collections::HashMap;

use sqlx::{AnyConnection, AnyPool, Row};

/// `(event type, state key)`.
pub type StateKey = (String, String);

pub async fn insert_group(
    conn: &mut AnyConnection,
    id: i64,
    room_id: &str,
    prev_group: Option<i64>,
    chain_length: i64,
    entries: &[(StateKey, String)],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(room_id)
        .bind(prev_group)
        .bind(chain_length)
        .execute(&mut *conn)
        .await?;
    for ((event_type, state_key), event_id) in entries {
        sqlx::query(
            "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(event_type)
        .bind(state_key)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The full state map of a group, resolved through its delta chain.
pub async fn load_group(pool: &AnyPool, group: i64) -> Result<HashMap<StateKey, String>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH RECURSIVE chain(id, prev_group, level) AS ( \
             SELECT id, prev_group, 0 FROM state_groups WHERE id = $1 \
             UNION ALL \
             SELECT g.id, g.prev_group, c.level + 1 FROM state_groups g JOIN chain c ON g.id = c.prev_group \
         ) \
         SELECT e.event_type, e.state_key, e.event_id, c.level FROM state_group_entries e \
         JOIN chain c ON e.state_group = c.id ORDER BY c.level DESC",
    )
    .bind(group)
    .fetch_all(pool)
    .await?;
    let mut state = HashMap::new();
    for row in rows {
        state.insert((row.get::<String, _>(0), row.get::<String, _>(1)), row.get::<String, _>(2));
    }
    Ok(state)
}

pub async fn chain_length(pool: &AnyPool, group: i64) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("SELECT chain_length FROM state_groups WHERE id = $1").bind(group).fetch_optional(pool).await?;
    Ok(row.map(|r| r.get(0)).unwrap_or(0))
}

pub async fn set_current(
    conn: &mut AnyConnection,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
    )
    .bind(room_id)
    .bind(event_type)
    .bind(state_key)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The event ids of a room's current state.
pub async fn current(pool: &AnyPool, room_id: &str) -> Result<HashMap<StateKey, String>, sqlx::Error> {
    let rows = sqlx::query("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
        .bind(room_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| ((r.get::<String, _>(0), r.get::<String, _>(1)), r.get::<String, _>(2))).collect())
}

/// Lists every room whose current state has an event of `event_type` and
/// `state_key`, as `(room id, event id)` pairs.
pub async fn current_of_type(
    pool: &AnyPool,
    event_type: &str,
    state_key: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT room_id, event_id FROM current_state WHERE event_type = $1 AND state_key = $2")
        .bind(event_type)
        .bind(state_key)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub async fn extremities(pool: &AnyPool, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let row =
        sqlx::query("SELECT extremities FROM rooms WHERE room_id = $1").bind(room_id).fetch_optional(pool).await?;
    let json: String = row.map(|r| r.get(0)).unwrap_or_else(|| "[]".into());
    serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Stores the event ids that the room's next event points at.
pub async fn set_extremities(conn: &mut AnyConnection, room_id: &str, event_ids: &[String]) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(event_ids).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query("UPDATE rooms SET extremities = $1 WHERE room_id = $2")
        .bind(json)
        .bind(room_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes one entry of a room's current state (state resolution may drop a
/// conflicted entry whose events all fail the authorization rules).
pub async fn delete_current(
    conn: &mut AnyConnection,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
        .bind(room_id)
        .bind(event_type)
        .bind(state_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
