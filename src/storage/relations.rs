//! Relations between events: the `event_relations` rows of child events
//! (those whose content has `m.relates_to` with a `rel_type`), and the
//! queries behind `/relations`, `/threads` and bundled aggregations.

use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, AnyPool, Row};

use crate::rooms::pdu::Pdu;

/// Parents per statement, well below the bind limits of both backends.
const PARENTS_PER_QUERY: usize = 100;

/// The depth to which `/relations` with `recurse` follows relations of relations.
pub const MAX_RECURSION_DEPTH: i64 = 3;

/// Returns the parent event id and relation type of an event, when its
/// content relates it to another event with a `rel_type`.
pub fn relation_of(pdu: &Pdu) -> Option<(String, String)> {
    // Most events relate to nothing; the substring test spares parsing them.
    if !pdu.content.get().contains("m.relates_to") {
        return None;
    }
    let content: serde_json::Value = serde_json::from_str(pdu.content.get()).ok()?;
    let relation = content.get("m.relates_to")?;
    let parent = relation.get("event_id")?.as_str()?;
    let rel_type = relation.get("rel_type")?.as_str()?;
    Some((parent.to_owned(), rel_type.to_owned()))
}

/// Records the relation of a newly stored event, if it has one.
pub async fn insert(conn: &mut AnyConnection, pdu: &Pdu, stream: i64) -> Result<(), sqlx::Error> {
    let Some((parent, rel_type)) = relation_of(pdu) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO event_relations \
         (event_id, room_id, relates_to, rel_type, event_type, sender, origin_server_ts, stream_ordering) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(pdu.event_id.as_str())
    .bind(pdu.room_id.as_str())
    .bind(parent)
    .bind(rel_type)
    .bind(pdu.kind.to_string())
    .bind(pdu.sender.as_str())
    .bind(i64::from(pdu.origin_server_ts.get()))
    .bind(stream)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forgets the relation of a redacted event: redaction removes `m.relates_to`.
pub async fn delete(conn: &mut AnyConnection, event_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM event_relations WHERE event_id = $1").bind(event_id).execute(&mut *conn).await?;
    Ok(())
}

/// A child event as `/relations` pages through them.
#[derive(Debug, Clone)]
pub struct Child {
    pub event_id: String,
    pub stream: i64,
}

/// A `/relations` request: children of `parent`, optionally of one relation
/// type and event type, in one direction from a position.
pub struct ChildQuery<'a> {
    pub parent: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Backwards: children at or before this position. Forwards: after it.
    pub from: i64,
    /// Backwards: children after this position. Forwards: at or before it.
    pub to: Option<i64>,
    pub backwards: bool,
    pub limit: i64,
    /// 1 for direct children; more to follow relations of relations.
    pub depth: i64,
}

/// Children of an event, nearest to `from` first, up to `limit`.
pub async fn children(pool: &AnyPool, query: &ChildQuery<'_>) -> Result<Vec<Child>, sqlx::Error> {
    let (range, order) = if query.backwards {
        ("r.stream_ordering <= $2 AND r.stream_ordering > $3", "DESC")
    } else {
        ("r.stream_ordering > $2 AND r.stream_ordering <= $3", "ASC")
    };
    let to = query.to.unwrap_or(if query.backwards { i64::MIN } else { i64::MAX });

    let mut filters = String::new();
    if query.rel_type.is_some() {
        filters.push_str(" AND r.rel_type = $6");
    }
    if query.event_type.is_some() {
        filters.push_str(if query.rel_type.is_some() { " AND r.event_type = $7" } else { " AND r.event_type = $6" });
    }

    // The tree of events below the parent, each level joined to the one above.
    let sql = format!(
        "WITH RECURSIVE tree (event_id, depth) AS ( \
             SELECT event_id, 1 FROM event_relations WHERE relates_to = $1 \
             UNION SELECT c.event_id, tree.depth + 1 FROM event_relations c \
             JOIN tree ON c.relates_to = tree.event_id WHERE tree.depth < $5) \
         SELECT r.event_id, r.stream_ordering FROM event_relations r \
         JOIN tree ON tree.event_id = r.event_id \
         WHERE {range}{filters} ORDER BY r.stream_ordering {order} LIMIT $4"
    );
    let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(query.parent)
        .bind(query.from)
        .bind(to)
        .bind(query.limit)
        .bind(query.depth);
    if let Some(rel_type) = query.rel_type {
        statement = statement.bind(rel_type);
    }
    if let Some(event_type) = query.event_type {
        statement = statement.bind(event_type);
    }
    let rows = statement.fetch_all(pool).await?;
    rows.iter().map(|row| Ok(Child { event_id: row.try_get(0)?, stream: row.try_get(1)? })).collect()
}

/// A child row with what the aggregations compare.
#[derive(Debug, Clone)]
pub struct Related {
    pub event_id: String,
    pub relates_to: String,
    pub event_type: String,
    pub sender: String,
    pub origin_server_ts: i64,
    pub stream: i64,
}

/// Children of the given parents with one relation type, oldest first.
pub async fn of_parents(pool: &AnyPool, parents: &[String], rel_type: &str) -> Result<Vec<Related>, sqlx::Error> {
    let mut related = Vec::new();
    for chunk in parents.chunks(PARENTS_PER_QUERY) {
        let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT event_id, relates_to, event_type, sender, origin_server_ts, stream_ordering \
             FROM event_relations WHERE rel_type = $1 AND relates_to IN ({}) ORDER BY stream_ordering",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(rel_type);
        for parent in chunk {
            query = query.bind(parent.as_str());
        }
        for row in query.fetch_all(pool).await? {
            related.push(Related {
                event_id: row.try_get(0)?,
                relates_to: row.try_get(1)?,
                event_type: row.try_get(2)?,
                sender: row.try_get(3)?,
                origin_server_ts: row.try_get(4)?,
                stream: row.try_get(5)?,
            });
        }
    }
    Ok(related)
}

/// A thread's summary for the `m.thread` aggregation.
#[derive(Debug, Clone)]
pub struct ThreadSummary {
    pub count: i64,
    pub latest_event_id: String,
    pub participated: bool,
}

/// Loads the thread summaries of the given roots, for the viewing user.
pub async fn thread_summaries(
    pool: &AnyPool,
    roots: &[String],
    user_id: &str,
    ignored: &HashSet<String>,
) -> Result<HashMap<String, ThreadSummary>, sqlx::Error> {
    let mut summaries = HashMap::new();
    let ignored: Vec<&String> = ignored.iter().collect();
    for chunk in roots.chunks(PARENTS_PER_QUERY) {
        let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
        // Replies of ignored users count neither in the size nor as the latest reply.
        let not_ignored = |alias: &str| {
            if ignored.is_empty() {
                return String::new();
            }
            let first = chunk.len() + 2;
            let list: Vec<String> = (first..first + ignored.len()).map(|i| format!("${i}")).collect();
            format!(" AND {alias}.sender NOT IN ({})", list.join(", "))
        };
        let sql = format!(
            "SELECT r.relates_to, COUNT(*), MAX(r.stream_ordering), \
             CAST(MAX(CASE WHEN r.sender = $1 THEN 1 ELSE 0 END) AS BIGINT), \
             (SELECT l.event_id FROM event_relations l WHERE l.relates_to = r.relates_to \
              AND l.rel_type = 'm.thread'{} ORDER BY l.stream_ordering DESC LIMIT 1) \
             FROM event_relations r WHERE r.rel_type = 'm.thread' AND r.relates_to IN ({}){} \
             GROUP BY r.relates_to",
            not_ignored("l"),
            placeholders.join(", "),
            not_ignored("r"),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
        for root in chunk {
            query = query.bind(root.as_str());
        }
        for user in &ignored {
            query = query.bind(user.as_str());
        }
        for row in query.fetch_all(pool).await? {
            let participated: i64 = row.try_get(3)?;
            summaries.insert(
                row.try_get::<String, _>(0)?,
                ThreadSummary {
                    count: row.try_get(1)?,
                    latest_event_id: row.try_get(4)?,
                    participated: participated > 0,
                },
            );
        }
    }
    Ok(summaries)
}

/// A thread root with the position of its latest reply, for `/threads`.
#[derive(Debug, Clone)]
pub struct ThreadRoot {
    pub root_id: String,
    pub latest: i64,
}

/// Lists the threads of a room whose latest reply lies before `before`,
/// most recently active first. With `participant`, only threads that user started
/// or replied in.
pub async fn thread_roots(
    pool: &AnyPool,
    room_id: &str,
    before: i64,
    participant: Option<&str>,
    limit: i64,
) -> Result<Vec<ThreadRoot>, sqlx::Error> {
    let participation = if participant.is_some() {
        " AND (r.relates_to IN (SELECT p.relates_to FROM event_relations p WHERE p.room_id = $1 \
           AND p.rel_type = 'm.thread' AND p.sender = $4) \
           OR r.relates_to IN (SELECT e.event_id FROM events e WHERE e.room_id = $1 AND e.sender = $4))"
    } else {
        ""
    };
    let sql = format!(
        "SELECT r.relates_to, MAX(r.stream_ordering) AS latest FROM event_relations r \
         WHERE r.room_id = $1 AND r.rel_type = 'm.thread'{participation} \
         GROUP BY r.relates_to HAVING MAX(r.stream_ordering) < $2 ORDER BY latest DESC LIMIT $3"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(before).bind(limit);
    if let Some(user_id) = participant {
        query = query.bind(user_id);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(|row| Ok(ThreadRoot { root_id: row.try_get(0)?, latest: row.try_get(1)? })).collect()
}
