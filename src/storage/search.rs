//! The full-text index behind `/search`: message bodies (`content.body`),
//! room names (`content.name`) and topics (`content.topic`), with SQLite's
//! FTS5 or PostgreSQL's text search.

use sqlx::{AnyConnection, AnyPool, Row};

use super::Backend;
use crate::rooms::pdu::Pdu;

/// Returns the searchable text of an event and the key it is searched under.
pub fn searchable(pdu: &Pdu) -> Option<(&'static str, String)> {
    let (key, field) = match (pdu.kind.to_string().as_str(), pdu.state_key.as_deref()) {
        ("m.room.message", None) => ("content.body", "body"),
        ("m.room.name", Some("")) => ("content.name", "name"),
        ("m.room.topic", Some("")) => ("content.topic", "topic"),
        _ => return None,
    };
    let content = pdu.content_value();
    let value = content.get(field)?.as_str()?;
    Some((key, value.to_owned()))
}

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

/// Indexes one stored event at once, if it has searchable text. Events of
/// the live stream are indexed later in batches by [`index_range`], so this
/// is for events placed below it (backfilled history, the edge state and the
/// events that fill a gap below the indexed position).
pub async fn insert(conn: &mut AnyConnection, pdu: &Pdu, stream: i64) -> Result<(), sqlx::Error> {
    let Some((key, value)) = searchable(pdu) else {
        return Ok(());
    };
    let row = IndexRow { stream, event_id: pdu.event_id.to_string(), room_id: pdu.room_id.to_string(), key, value };
    insert_rows(conn, std::slice::from_ref(&row)).await
}

/// One row of the index.
struct IndexRow {
    stream: i64,
    event_id: String,
    room_id: String,
    key: &'static str,
    value: String,
}

/// Rows per statement: five parameters each, far below either backend's limit.
const ROWS_PER_STATEMENT: usize = 200;

async fn insert_rows(conn: &mut AnyConnection, rows: &[IndexRow]) -> Result<(), sqlx::Error> {
    let postgres = is_postgres(conn);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = i * 5;
                if postgres {
                    format!("(${}, ${}, ${}, ${}, to_tsvector('simple', ${}))", n + 1, n + 2, n + 3, n + 4, n + 5)
                } else {
                    format!("(${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5)
                }
            })
            .collect();
        let sql = if postgres {
            format!(
                "INSERT INTO event_search (stream_ordering, event_id, room_id, search_key, vector) VALUES {} \
                 ON CONFLICT (stream_ordering) DO NOTHING",
                tuples.join(", ")
            )
        } else {
            format!(
                "INSERT INTO event_search (rowid, event_id, room_id, search_key, value) VALUES {}",
                tuples.join(", ")
            )
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            // PostgreSQL text cannot hold NUL characters.
            let value = if postgres { row.value.replace('\0', " ") } else { row.value.clone() };
            query =
                query.bind(row.stream).bind(row.event_id.as_str()).bind(row.room_id.as_str()).bind(row.key).bind(value);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Returns the stream position up to which events are indexed.
pub async fn indexed_position(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT stream_ordering FROM search_index_position WHERE id = 1").fetch_one(pool).await?.try_get(0)
}

/// Returns the stream position up to which events are indexed, in a write job.
pub async fn indexed_position_in_txn(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT stream_ordering FROM search_index_position WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)
}

/// Returns the position of the first stored event after `after`, if any.
pub async fn next_position(pool: &AnyPool, after: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("SELECT MIN(stream_ordering) FROM events WHERE stream_ordering > $1")
        .bind(after)
        .fetch_one(pool)
        .await?
        .try_get(0)
}

/// Indexes the events after the stored indexed position up to `upto` and
/// records `upto` as the new position, which it returns (or the stored one,
/// if that is already past `upto`). It runs in a write job, so an event
/// redacted before this job commits is left out: its stored text is already
/// gone. The stored position decides, not the caller's, so that a stretch
/// another process has indexed is never indexed twice.
pub async fn index_range(conn: &mut AnyConnection, upto: i64) -> Result<i64, sqlx::Error> {
    let after = indexed_position_in_txn(conn).await?;
    if after >= upto {
        return Ok(after);
    }
    let sql = format!(
        "SELECT {} FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2 AND redacted_by IS NULL \
         AND ((event_type = 'm.room.message' AND state_key IS NULL) \
         OR (event_type IN ('m.room.name', 'm.room.topic') AND state_key = ''))",
        super::events::EVENT_COLUMNS
    );
    let found = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(upto).fetch_all(&mut *conn).await?;
    let mut rows = Vec::new();
    for event in super::events::rows_to_events(found)? {
        if let Some((key, value)) = searchable(&event.pdu) {
            let (event_id, room_id) = (event.pdu.event_id.to_string(), event.pdu.room_id.to_string());
            rows.push(IndexRow { stream: event.stream, event_id, room_id, key, value });
        }
    }
    insert_rows(conn, &rows).await?;
    sqlx::query("UPDATE search_index_position SET stream_ordering = $1 WHERE id = 1")
        .bind(upto)
        .execute(&mut *conn)
        .await?;
    Ok(upto)
}

/// Removes a redacted event from the index: its text is gone.
pub async fn delete(conn: &mut AnyConnection, event_id: &str) -> Result<(), sqlx::Error> {
    let sql = if is_postgres(conn) {
        "DELETE FROM event_search WHERE stream_ordering = (SELECT stream_ordering FROM events WHERE event_id = $1)"
    } else {
        "DELETE FROM event_search WHERE rowid = (SELECT stream_ordering FROM events WHERE event_id = $1)"
    };
    sqlx::query(sql).bind(event_id).execute(&mut *conn).await?;
    Ok(())
}

/// Splits a search term into lowercase words of letters and digits. Words
/// match as prefixes, so `meet` finds `meeting`, and all words must match.
pub fn words(term: &str) -> Vec<String> {
    term.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// A search request against the index.
pub struct SearchQuery<'a> {
    pub words: &'a [String],
    pub rooms: &'a [String],
    pub keys: &'a [String],
    /// Newest first when set; best match first otherwise.
    pub recent: bool,
    pub offset: i64,
    pub limit: i64,
}

/// One match: the event and its position in the result order.
#[derive(Debug, Clone)]
pub struct Hit {
    pub event_id: String,
    pub room_id: String,
    pub rank: f64,
}

/// The SQL pieces shared by [`search`] and [`count`]: the condition, the
/// rank and position expressions, and the match expression bound as `$1`.
struct Statement {
    filter: String,
    rank: &'static str,
    position: &'static str,
    expression: String,
}

impl Statement {
    fn new(backend: Backend, query: &SearchQuery<'_>) -> Self {
        // Bind parameters: $1 the match expression, then rooms, then keys.
        let rooms: Vec<String> = (0..query.rooms.len()).map(|i| format!("${}", i + 2)).collect();
        let keys: Vec<String> = (0..query.keys.len()).map(|i| format!("${}", i + 2 + query.rooms.len())).collect();
        let (matches, rank, position, expression) = match backend {
            Backend::Postgres => (
                "vector @@ to_tsquery('simple', $1)",
                "ts_rank(vector, to_tsquery('simple', $1))",
                "stream_ordering",
                query.words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & "),
            ),
            Backend::Sqlite => (
                "event_search MATCH $1",
                // bm25 is lower for better matches. Negated, higher is better, as in PostgreSQL.
                "-bm25(event_search)",
                "rowid",
                query.words.iter().map(|w| format!("\"{}\"*", w.replace('"', "\"\""))).collect::<Vec<_>>().join(" "),
            ),
        };
        let filter = format!("{matches} AND room_id IN ({}) AND search_key IN ({})", rooms.join(", "), keys.join(", "));
        Self { filter, rank, position, expression }
    }

    fn bind<'q>(
        &self,
        sql: String,
        query: &'q SearchQuery<'_>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.expression.clone());
        for value in query.rooms.iter().chain(query.keys) {
            statement = statement.bind(value.as_str());
        }
        statement
    }
}

fn is_empty(query: &SearchQuery<'_>) -> bool {
    query.words.is_empty() || query.rooms.is_empty() || query.keys.is_empty()
}

/// Finds events whose indexed text contains every word, in the given rooms
/// and under the given keys, from `offset` on in the requested order.
pub async fn search(pool: &AnyPool, backend: Backend, query: &SearchQuery<'_>) -> Result<Vec<Hit>, sqlx::Error> {
    if is_empty(query) {
        return Ok(Vec::new());
    }
    let statement = Statement::new(backend, query);
    let (filter, position) = (&statement.filter, statement.position);
    let order = if query.recent { format!("{position} DESC") } else { format!("score DESC, {position} DESC") };
    // SQLite reads DOUBLE PRECISION as REAL, so one cast serves both backends.
    let sql = format!(
        "SELECT event_id, room_id, CAST({} AS DOUBLE PRECISION) AS score FROM event_search WHERE {filter} \
         ORDER BY {order} LIMIT {} OFFSET {}",
        statement.rank, query.limit, query.offset
    );
    let rows = statement.bind(sql, query).fetch_all(pool).await?;
    rows.iter()
        .map(|row| Ok(Hit { event_id: row.try_get(0)?, room_id: row.try_get(1)?, rank: row.try_get(2)? }))
        .collect()
}

/// Counts all matches of a search, before visibility is applied.
pub async fn count(pool: &AnyPool, backend: Backend, query: &SearchQuery<'_>) -> Result<i64, sqlx::Error> {
    if is_empty(query) {
        return Ok(0);
    }
    let statement = Statement::new(backend, query);
    let sql = format!("SELECT COUNT(*) FROM event_search WHERE {}", statement.filter);
    statement.bind(sql, query).fetch_one(pool).await?.try_get(0)
}
