//! Push notifications: stored push actions, unread counts derived from them,
//! and pushers.

use sqlx::{AnyConnection, AnyPool, Row, any::AnyRow};

/// The outcome of push rule evaluation for one event and one user.
#[derive(Debug, Clone)]
pub struct PushAction {
    pub user_id: String,
    pub event_id: String,
    pub room_id: String,
    /// `main` for the main timeline, otherwise the thread root's event id.
    pub thread_id: String,
    pub stream_ordering: i64,
    pub ts: i64,
    /// The actions as the JSON array that the matching push rule holds.
    pub actions: String,
    pub highlight: bool,
}

/// A condition on a push action row `a` that is true while the user has not
/// read the event: no read receipt (unthreaded, or of the event's thread) is
/// at or after it, and the user has sent nothing in the room since.
const UNREAD: &str = "a.stream_ordering > COALESCE((SELECT MAX(r.event_stream) FROM receipts r \
     WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.receipt_type IN ('m.read', 'm.read.private') \
     AND (r.thread_id = '' OR r.thread_id = a.thread_id)), 0) \
     AND a.stream_ordering > COALESCE((SELECT MAX(e.stream_ordering) FROM events e \
     WHERE e.room_id = a.room_id AND e.sender = a.user_id), 0)";

/// Rows per `INSERT` statement: 8 parameters each stays far below the
/// parameter limits of SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_INSERT: usize = 500;

/// Inserts push actions with one statement per [`ROWS_PER_INSERT`] rows.
pub async fn insert_actions(conn: &mut AnyConnection, actions: &[PushAction]) -> Result<(), sqlx::Error> {
    for chunk in actions.chunks(ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = i * 8;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7,
                    n + 8
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO event_push_actions (user_id, event_id, room_id, thread_id, stream_ordering, ts, actions, highlight) \
             VALUES {} ON CONFLICT (event_id, user_id) DO NOTHING",
            rows.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for action in chunk {
            query = query
                .bind(&action.user_id)
                .bind(&action.event_id)
                .bind(&action.room_id)
                .bind(&action.thread_id)
                .bind(action.stream_ordering)
                .bind(action.ts)
                .bind(&action.actions)
                .bind(i64::from(action.highlight));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn delete_actions_of_event(conn: &mut AnyConnection, event_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM event_push_actions WHERE event_id = $1").bind(event_id).execute(&mut *conn).await?;
    Ok(())
}

/// Unread notification and highlight counts of one user, per room and thread:
/// `(room id, thread id, notifications, highlights)`, for joined rooms only.
/// With `room_id` set, only that room.
pub async fn unread_counts(
    pool: &AnyPool,
    user_id: &str,
    room_id: Option<&str>,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let room_filter = if room_id.is_some() { "AND a.room_id = $2" } else { "" };
    let sql = format!(
        "SELECT a.room_id, a.thread_id, COUNT(*), CAST(COALESCE(SUM(a.highlight), 0) AS BIGINT) FROM event_push_actions a \
         JOIN memberships m ON m.room_id = a.room_id AND m.user_id = a.user_id AND m.membership = 'join' \
         WHERE a.user_id = $1 {room_filter} AND {UNREAD} GROUP BY a.room_id, a.thread_id"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
    if let Some(room_id) = room_id {
        query = query.bind(room_id);
    }
    let rows = query.fetch_all(pool).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// A row of `GET /notifications`.
pub struct NotificationRow {
    pub action: PushAction,
    pub read: bool,
}

fn action_from_row(row: &AnyRow) -> PushAction {
    PushAction {
        user_id: row.get("user_id"),
        event_id: row.get("event_id"),
        room_id: row.get("room_id"),
        thread_id: row.get("thread_id"),
        stream_ordering: row.get("stream_ordering"),
        ts: row.get("ts"),
        actions: row.get("actions"),
        highlight: row.get::<i64, _>("highlight") != 0,
    }
}

/// Returns a user's notifications older than `before` (exclusive), newest first.
pub async fn notifications(
    pool: &AnyPool,
    user_id: &str,
    before: i64,
    limit: i64,
    only_highlight: bool,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    let highlight_filter = if only_highlight { "AND a.highlight = 1" } else { "" };
    let sql = format!(
        "SELECT a.user_id, a.event_id, a.room_id, a.thread_id, a.stream_ordering, a.ts, a.actions, a.highlight, \
         CASE WHEN {UNREAD} THEN 0 ELSE 1 END AS is_read FROM event_push_actions a \
         WHERE a.user_id = $1 AND a.stream_ordering < $2 {highlight_filter} \
         ORDER BY a.stream_ordering DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(before).bind(limit).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| NotificationRow { action: action_from_row(r), read: r.get::<i64, _>("is_read") != 0 })
        .collect())
}

/// Push actions in `(after, upto]` of users who have at least one pusher, oldest first.
pub async fn actions_for_pushers(
    pool: &AnyPool,
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<PushAction>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.user_id, a.event_id, a.room_id, a.thread_id, a.stream_ordering, a.ts, a.actions, a.highlight \
         FROM (SELECT DISTINCT user_id FROM pushers) p JOIN event_push_actions a ON a.user_id = p.user_id \
         WHERE a.stream_ordering > $1 AND a.stream_ordering <= $2 ORDER BY a.stream_ordering LIMIT $3",
    )
    .bind(after)
    .bind(upto)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(action_from_row).collect())
}

/// Returns whether the user has read the event of a push action (see [`UNREAD`]).
pub async fn is_read(pool: &AnyPool, user_id: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "SELECT CASE WHEN {UNREAD} THEN 0 ELSE 1 END FROM event_push_actions a WHERE a.user_id = $1 AND a.event_id = $2"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(event_id).fetch_optional(pool).await?;
    Ok(row.is_none_or(|r| r.get::<i64, _>(0) != 0))
}

/// A pusher as `/pushers` describes it.
#[derive(Debug, Clone)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object as JSON.
    pub data: String,
    pub created_ts: i64,
    /// Secret of the unsubscribe link of an email pusher.
    pub unsubscribe_token: Option<String>,
}

const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, \
     lang, data, created_ts, unsubscribe_token";

fn pusher_from_row(r: &AnyRow) -> PusherRow {
    PusherRow {
        user_id: r.get(0),
        app_id: r.get(1),
        pushkey: r.get(2),
        kind: r.get(3),
        app_display_name: r.get(4),
        device_display_name: r.get(5),
        profile_tag: r.get(6),
        lang: r.get(7),
        data: r.get(8),
        created_ts: r.get(9),
        unsubscribe_token: r.get(10),
    }
}

pub async fn pushers_of(pool: &AnyPool, user_id: &str) -> Result<Vec<PusherRow>, sqlx::Error> {
    let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(pool).await?;
    Ok(rows.iter().map(pusher_from_row).collect())
}

/// Stores a pusher, replacing the user's pusher with the same app id and
/// pushkey. Unless `append` is set, the same app id and pushkey of other users
/// are removed, as the spec requires.
pub async fn set_pusher(conn: &mut AnyConnection, pusher: &PusherRow, append: bool) -> Result<(), sqlx::Error> {
    if !append {
        sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .bind(&pusher.user_id)
            .execute(&mut *conn)
            .await?;
    }
    let sql = format!(
        "INSERT INTO pushers ({PUSHER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, \
         app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name, \
         profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data, \
         unsubscribe_token = COALESCE(pushers.unsubscribe_token, excluded.unsubscribe_token)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&pusher.user_id)
        .bind(&pusher.app_id)
        .bind(&pusher.pushkey)
        .bind(&pusher.kind)
        .bind(&pusher.app_display_name)
        .bind(&pusher.device_display_name)
        .bind(pusher.profile_tag.as_deref())
        .bind(&pusher.lang)
        .bind(&pusher.data)
        .bind(pusher.created_ts)
        .bind(pusher.unsubscribe_token.as_deref())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes one pusher; returns whether it existed.
pub async fn delete_pusher(
    conn: &mut AnyConnection,
    user_id: &str,
    app_id: &str,
    pushkey: &str,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Returns the pusher of an email address, if its owner set one up.
pub async fn pusher_by_key(
    pool: &AnyPool,
    user_id: &str,
    kind: &str,
    pushkey: &str,
) -> Result<Option<PusherRow>, sqlx::Error> {
    let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND kind = $2 AND pushkey = $3");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(kind).bind(pushkey).fetch_optional(pool).await?;
    Ok(row.as_ref().map(pusher_from_row))
}

/// Deletes the email pusher whose unsubscribe link carries `token`; returns
/// its user and address.
pub async fn delete_by_unsubscribe_token(
    conn: &mut AnyConnection,
    token: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id, pushkey FROM pushers WHERE unsubscribe_token = $1")
        .bind(token)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    sqlx::query("DELETE FROM pushers WHERE unsubscribe_token = $1").bind(token).execute(&mut *conn).await?;
    Ok(Some((row.get(0), row.get(1))))
}

/// An unread push action that waited long enough for a notification email.
pub struct EmailCandidate {
    pub pusher: PusherRow,
    pub action: PushAction,
}

/// Unread push actions of users with email pushers that are older than
/// `before_ts`, newer than the pusher, after the last email about their room,
/// and in rooms whose last email is older than `period_start_ts`. Oldest first.
pub async fn email_candidates(
    pool: &AnyPool,
    before_ts: i64,
    period_start_ts: i64,
    limit: i64,
) -> Result<Vec<EmailCandidate>, sqlx::Error> {
    let pusher_columns: Vec<String> = PUSHER_COLUMNS.split(", ").map(|c| format!("p.{}", c.trim())).collect();
    let sql = format!(
        "SELECT {}, a.event_id, a.room_id, a.thread_id, a.stream_ordering, a.ts, a.actions, a.highlight \
         FROM event_push_actions a JOIN pushers p ON p.user_id = a.user_id AND p.kind = 'email' \
         LEFT JOIN email_notifications_sent s ON s.user_id = a.user_id AND s.room_id = a.room_id \
         JOIN memberships m ON m.room_id = a.room_id AND m.user_id = a.user_id AND m.membership = 'join' \
         WHERE a.ts <= $1 AND a.ts >= p.created_ts \
         AND a.stream_ordering > COALESCE(s.last_stream, 0) AND COALESCE(s.sent_ts, 0) <= $2 AND {UNREAD} \
         ORDER BY a.stream_ordering LIMIT $3",
        pusher_columns.join(", ")
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(before_ts).bind(period_start_ts).bind(limit).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let pusher = pusher_from_row(r);
            let action = PushAction {
                user_id: pusher.user_id.clone(),
                event_id: r.get(11),
                room_id: r.get(12),
                thread_id: r.get(13),
                stream_ordering: r.get(14),
                ts: r.get(15),
                actions: r.get(16),
                highlight: r.get::<i64, _>(17) != 0,
            };
            EmailCandidate { pusher, action }
        })
        .collect())
}

/// Records a notification email about a room, covering events up to `last_stream`.
pub async fn record_email_sent(
    conn: &mut AnyConnection,
    user_id: &str,
    room_id: &str,
    sent_ts: i64,
    last_stream: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_notifications_sent (user_id, room_id, sent_ts, last_stream) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, room_id) DO UPDATE SET sent_ts = excluded.sent_ts, last_stream = excluded.last_stream",
    )
    .bind(user_id)
    .bind(room_id)
    .bind(sent_ts)
    .bind(last_stream)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
