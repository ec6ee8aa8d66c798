//! Push notifications: stored push actions, unread counts derived from them,
//! and pushers.
//!
//! The outcome of an event is stored in two tables. `event_push_shared` contains
//! one row per event with the outcome of the members on the default outcome:
//! it applies to every local member joined before the event, except its
//! sender. `event_push_actions` contains a row per user whose outcome differs
//! (rules of their own, a mention, a muted room) and overrides the shared
//! row of the same event for that user; `notify = 0` marks a user whom the
//! event does not notify. Every reader here combines both tables.

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
    /// False for a user whom the event does not notify, stored only to
    /// override the event's shared row.
    pub notify: bool,
}

/// The outcome of an event for every member on the default outcome.
#[derive(Debug, Clone)]
pub struct SharedPushAction {
    pub event_id: String,
    pub room_id: String,
    pub thread_id: String,
    /// The sender, whom the row does not concern.
    pub sender: String,
    pub stream_ordering: i64,
    pub ts: i64,
    pub actions: String,
    pub highlight: bool,
}

/// Everything push rule evaluation stores for one event.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    /// The row for the members on the default outcome, when it notifies.
    pub shared: Option<SharedPushAction>,
    /// The users whose outcome differs from the shared one.
    pub users: Vec<PushAction>,
    /// `(user, room, thread)`: the sender's message reads the thread up to itself.
    pub read_mark: Option<(String, String, String)>,
}

impl PushOutcome {
    /// Returns whether the event notifies anyone, so that the gateway sender is woken.
    pub fn notifies(&self) -> bool {
        self.shared.is_some() || self.users.iter().any(|a| a.notify)
    }
}

/// Receipt types that move the read position of notification counts.
const READ_TYPES: &str = "('m.read', 'm.read.private')";

/// Builds a condition that is true while `user` has not read the push action row
/// `a`: no read receipt (unthreaded, or of the row's thread) is at or after
/// it, the user has sent no message after it in the same thread (or, for
/// positions stored before threads counted here, in the room), and it is not
/// older than the user's join (an invite counts until the user joins).
fn unread(user: &str) -> String {
    format!(
        "a.stream_ordering > COALESCE((SELECT MAX(r.event_stream) FROM receipts r \
         WHERE r.room_id = a.room_id AND r.user_id = {user} AND r.receipt_type IN {READ_TYPES} \
         AND (r.thread_id = '' OR r.thread_id = a.thread_id)), 0) \
         AND a.stream_ordering > COALESCE((SELECT MAX(k.stream_ordering) FROM push_read_marks k \
         WHERE k.user_id = {user} AND k.room_id = a.room_id AND (k.thread_id = '' OR k.thread_id = a.thread_id)), 0) \
         AND a.stream_ordering > COALESCE((SELECT j.joined_stream FROM memberships j \
         WHERE j.room_id = a.room_id AND j.user_id = {user} AND j.membership = 'join'), 0)"
    )
}

/// Builds a condition that `{alias}.stream_ordering` lies after the position up to
/// which `user` read every thread of room `room`. It repeats part of
/// [`unread`] so that index range scans start at the read position.
fn after_read_room(alias: &str, user: &str, room: &str) -> String {
    format!(
        "{alias}.stream_ordering > COALESCE((SELECT MAX(r.event_stream) FROM receipts r \
         WHERE r.room_id = {room} AND r.user_id = {user} AND r.receipt_type IN {READ_TYPES} AND r.thread_id = ''), 0) \
         AND {alias}.stream_ordering > COALESCE((SELECT MAX(k.stream_ordering) FROM push_read_marks k \
         WHERE k.user_id = {user} AND k.room_id = {room} AND k.thread_id = ''), 0)"
    )
}

/// Builds a condition that user `user` has no row of their own for the shared row `s`.
fn no_override(user: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM event_push_actions o WHERE o.event_id = s.event_id AND o.user_id = {user})")
}

/// The columns of a push action, in [`action_from_row`] order.
const OWN_COLUMNS: &str =
    "x.user_id, x.event_id, x.room_id, x.thread_id, x.stream_ordering, x.ts, x.actions, x.highlight";
/// The same columns from a shared row `s` for the member `m`.
const SHARED_COLUMNS: &str =
    "m.user_id, s.event_id, s.room_id, s.thread_id, s.stream_ordering, s.ts, s.actions, s.highlight";

/// Rows per `INSERT` statement: at most 9 parameters each stays far below the
/// parameter limits of SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_INSERT: usize = 500;

/// The push rule outcomes of the events of one write transaction, inserted
/// together just before it commits: a few multi-row statements per group
/// commit instead of up to three statements per event.
///
/// Rows stay queued after they are inserted, until the transaction ends. A
/// job that fails rolls back its savepoint, and with it any rows of earlier
/// jobs that it inserted; [`PendingOutcomes::undo_to`] then queues those
/// rows for insertion again and drops the failed job's own rows.
#[derive(Debug, Default)]
pub struct PendingOutcomes {
    shared: Vec<SharedPushAction>,
    users: Vec<PushAction>,
    /// `(user, room, thread, stream position)` of each message's sender.
    read_marks: Vec<(String, String, String, i64)>,
    /// The number of rows at the front of each list that are in the database.
    inserted: [usize; 3],
}

/// The state of a [`PendingOutcomes`] before a job, to return to when the job fails.
#[derive(Debug, Clone, Copy)]
pub struct PendingMark {
    lengths: [usize; 3],
    inserted: [usize; 3],
}

impl PendingOutcomes {
    /// Queues the outcome of the event at stream position `stream`.
    pub fn add(&mut self, outcome: PushOutcome, stream: i64) {
        if let Some(mut shared) = outcome.shared {
            shared.stream_ordering = stream;
            self.shared.push(shared);
        }
        for mut action in outcome.users {
            action.stream_ordering = stream;
            self.users.push(action);
        }
        if let Some((user, room, thread)) = outcome.read_mark {
            self.read_marks.push((user, room, thread, stream));
        }
    }

    pub fn mark(&self) -> PendingMark {
        PendingMark { lengths: [self.shared.len(), self.users.len(), self.read_marks.len()], inserted: self.inserted }
    }

    /// Returns to the state of `mark`, after the savepoint taken with it was rolled back.
    pub fn undo_to(&mut self, mark: PendingMark) {
        self.shared.truncate(mark.lengths[0]);
        self.users.truncate(mark.lengths[1]);
        self.read_marks.truncate(mark.lengths[2]);
        self.inserted = mark.inserted;
    }

    /// Forgets every row, when the transaction has ended.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Builds `($1, ..., $k), ($k+1, ...), ...` for `rows` rows of `columns` parameters.
fn placeholders(rows: usize, columns: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns).map(|column| format!("${}", row * columns + column)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    rows.join(", ")
}

/// Inserts the queued rows that are not in the database yet, with one
/// statement per table and [`ROWS_PER_INSERT`] rows.
pub async fn insert_pending(conn: &mut AnyConnection, pending: &mut PendingOutcomes) -> Result<(), sqlx::Error> {
    for chunk in pending.shared[pending.inserted[0]..].chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO event_push_shared (event_id, room_id, thread_id, sender, stream_ordering, ts, actions, highlight) \
             VALUES {} ON CONFLICT (stream_ordering) DO NOTHING",
            placeholders(chunk.len(), 8)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for shared in chunk {
            query = query
                .bind(&shared.event_id)
                .bind(&shared.room_id)
                .bind(&shared.thread_id)
                .bind(&shared.sender)
                .bind(shared.stream_ordering)
                .bind(shared.ts)
                .bind(&shared.actions)
                .bind(i64::from(shared.highlight));
        }
        query.execute(&mut *conn).await?;
    }
    pending.inserted[0] = pending.shared.len();

    for chunk in pending.users[pending.inserted[1]..].chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO event_push_actions (user_id, event_id, room_id, thread_id, stream_ordering, ts, actions, highlight, notify) \
             VALUES {} ON CONFLICT (event_id, user_id) DO NOTHING",
            placeholders(chunk.len(), 9)
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
                .bind(i64::from(action.highlight))
                .bind(i64::from(action.notify));
        }
        query.execute(&mut *conn).await?;
    }
    pending.inserted[1] = pending.users.len();

    // One statement may not update a row twice (PostgreSQL rejects it), so
    // each (user, room, thread) keeps only its last position, the highest.
    let mut latest: Vec<&(String, String, String, i64)> = Vec::new();
    for mark in pending.read_marks[pending.inserted[2]..].iter().rev() {
        if !latest.iter().any(|kept| (&kept.0, &kept.1, &kept.2) == (&mark.0, &mark.1, &mark.2)) {
            latest.push(mark);
        }
    }
    for chunk in latest.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO push_read_marks (user_id, room_id, thread_id, stream_ordering) VALUES {} \
             ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_ordering = excluded.stream_ordering",
            placeholders(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (user, room, thread, stream) in chunk {
            query = query.bind(user).bind(room).bind(thread).bind(*stream);
        }
        query.execute(&mut *conn).await?;
    }
    pending.inserted[2] = pending.read_marks.len();
    Ok(())
}

pub async fn delete_actions_of_event(conn: &mut AnyConnection, event_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM event_push_actions WHERE event_id = $1").bind(event_id).execute(&mut *conn).await?;
    // The shared table is keyed by stream position and has no index on event ids.
    sqlx::query(
        "DELETE FROM event_push_shared WHERE stream_ordering IN \
         (SELECT e.stream_ordering FROM events e WHERE e.event_id = $1)",
    )
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Unread notification and highlight counts of one user, per room and thread:
/// `(room id, thread id, notifications, highlights)`, for joined rooms only.
/// With `room_id` set, only that room.
///
/// Both halves start at the user's read position of the room in the index,
/// so the cost follows the number of unread rows, not the room's history.
pub async fn unread_counts(
    pool: &AnyPool,
    user_id: &str,
    room_id: Option<&str>,
) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let (own_room, member_room) =
        if room_id.is_some() { ("AND x.room_id = $2", "AND m.room_id = $2") } else { ("", "") };
    let sql = format!(
        "SELECT a.room_id, a.thread_id, COUNT(*), CAST(COALESCE(SUM(a.highlight), 0) AS BIGINT) FROM ( \
         SELECT x.room_id, x.thread_id, x.stream_ordering, x.highlight FROM event_push_actions x \
         JOIN memberships m ON m.room_id = x.room_id AND m.user_id = x.user_id AND m.membership = 'join' \
         WHERE x.user_id = $1 AND x.notify = 1 {own_room} AND x.stream_ordering > m.joined_stream AND {own_after} \
         UNION ALL \
         SELECT s.room_id, s.thread_id, s.stream_ordering, s.highlight FROM memberships m \
         JOIN event_push_shared s ON s.room_id = m.room_id AND s.stream_ordering > m.joined_stream AND {shared_after} \
         WHERE m.user_id = $1 AND m.membership = 'join' {member_room} AND s.sender <> $1 AND {no_override} \
         ) a WHERE {unread} GROUP BY a.room_id, a.thread_id",
        own_after = after_read_room("x", "$1", "x.room_id"),
        shared_after = after_read_room("s", "$1", "m.room_id"),
        no_override = no_override("$1"),
        unread = unread("$1"),
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
        user_id: row.get(0),
        event_id: row.get(1),
        room_id: row.get(2),
        thread_id: row.get(3),
        stream_ordering: row.get(4),
        ts: row.get(5),
        actions: row.get(6),
        highlight: row.get::<i64, _>(7) != 0,
        notify: true,
    }
}

/// Returns a user's notifications older than `before` (exclusive), newest
/// first. Shared rows count in the rooms the user is joined to.
pub async fn notifications(
    pool: &AnyPool,
    user_id: &str,
    before: i64,
    limit: i64,
    only_highlight: bool,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    let (own_highlight, shared_highlight) =
        if only_highlight { ("AND x.highlight = 1", "AND s.highlight = 1") } else { ("", "") };
    let sql = format!(
        "SELECT a.*, CASE WHEN {unread} THEN 0 ELSE 1 END AS is_read FROM ( \
         SELECT {OWN_COLUMNS} FROM event_push_actions x \
         WHERE x.user_id = $1 AND x.notify = 1 AND x.stream_ordering < $2 {own_highlight} \
         UNION ALL \
         SELECT {SHARED_COLUMNS} FROM memberships m \
         JOIN event_push_shared s ON s.room_id = m.room_id AND s.stream_ordering > m.joined_stream \
         WHERE m.user_id = $1 AND m.membership = 'join' AND s.stream_ordering < $2 AND s.sender <> $1 \
         {shared_highlight} AND {no_override} \
         ) a ORDER BY a.stream_ordering DESC LIMIT $3",
        unread = unread("$1"),
        no_override = no_override("$1"),
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(before).bind(limit).fetch_all(pool).await?;
    Ok(rows.iter().map(|r| NotificationRow { action: action_from_row(r), read: r.get::<i64, _>(8) != 0 }).collect())
}

/// Push actions in `(after, upto]` of users who have at least one pusher,
/// oldest first. The caller bounds the range, so there is no row limit that
/// could split the rows of one event.
pub async fn actions_for_pushers(pool: &AnyPool, after: i64, upto: i64) -> Result<Vec<PushAction>, sqlx::Error> {
    let sql = format!(
        "SELECT {OWN_COLUMNS} FROM (SELECT DISTINCT user_id FROM pushers) p \
         JOIN event_push_actions x ON x.user_id = p.user_id \
         WHERE x.notify = 1 AND x.stream_ordering > $1 AND x.stream_ordering <= $2 \
         UNION ALL \
         SELECT {SHARED_COLUMNS} FROM (SELECT DISTINCT user_id FROM pushers) p \
         JOIN memberships m ON m.user_id = p.user_id AND m.membership = 'join' \
         JOIN event_push_shared s ON s.room_id = m.room_id AND s.stream_ordering > m.joined_stream \
         AND s.stream_ordering > $1 AND s.stream_ordering <= $2 \
         WHERE s.sender <> m.user_id AND {no_override} \
         ORDER BY 5",
        no_override = no_override("m.user_id"),
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(upto).fetch_all(pool).await?;
    Ok(rows.iter().map(action_from_row).collect())
}

/// Returns whether the user has read the event of a push action (see
/// [`unread`]); an event without a push action for the user counts as read.
pub async fn is_read(pool: &AnyPool, user_id: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "SELECT CASE WHEN {unread} THEN 0 ELSE 1 END FROM ( \
         SELECT x.room_id, x.thread_id, x.stream_ordering FROM event_push_actions x \
         WHERE x.event_id = $2 AND x.user_id = $1 AND x.notify = 1 \
         UNION ALL \
         SELECT s.room_id, s.thread_id, s.stream_ordering FROM event_push_shared s \
         WHERE s.stream_ordering = (SELECT e.stream_ordering FROM events e WHERE e.event_id = $2) AND s.event_id = $2 AND s.sender <> $1 AND {no_override} \
         ) a",
        unread = unread("$1"),
        no_override = no_override("$1"),
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(event_id).fetch_optional(pool).await?;
    Ok(row.is_none_or(|r| r.get::<i64, _>(0) != 0))
}

/// Deletes push actions stored before `before_ts`; returns the number of rows deleted.
pub async fn prune_older_than(conn: &mut AnyConnection, before_ts: i64) -> Result<u64, sqlx::Error> {
    let shared = sqlx::query("DELETE FROM event_push_shared WHERE ts < $1").bind(before_ts).execute(&mut *conn).await?;
    let own = sqlx::query("DELETE FROM event_push_actions WHERE ts < $1").bind(before_ts).execute(&mut *conn).await?;
    Ok(shared.rows_affected() + own.rows_affected())
}

/// Rooms with stored push actions.
pub async fn rooms_with_actions(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT room_id FROM event_push_shared UNION SELECT room_id FROM event_push_actions ORDER BY 1")
            .fetch_all(pool)
            .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Returns the position up to which each joined member of a room has read every
/// thread: its unthreaded read receipt or message, whichever is later (0 for none).
pub async fn room_read_positions(pool: &AnyPool, room_id: &str) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.user_id, \
         COALESCE((SELECT MAX(r.event_stream) FROM receipts r WHERE r.room_id = m.room_id AND r.user_id = m.user_id \
         AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id = ''), 0), \
         COALESCE((SELECT MAX(k.stream_ordering) FROM push_read_marks k WHERE k.room_id = m.room_id \
         AND k.user_id = m.user_id AND k.thread_id = ''), 0) \
         FROM memberships m WHERE m.room_id = $1 AND m.membership = 'join'",
    )
    .bind(room_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<i64, _>(1).max(r.get::<i64, _>(2)))).collect())
}

/// Deletes the push actions of a room at or before `upto`; returns the number of rows deleted.
pub async fn prune_room_upto(conn: &mut AnyConnection, room_id: &str, upto: i64) -> Result<u64, sqlx::Error> {
    let shared = sqlx::query("DELETE FROM event_push_shared WHERE room_id = $1 AND stream_ordering <= $2")
        .bind(room_id)
        .bind(upto)
        .execute(&mut *conn)
        .await?;
    let own = sqlx::query("DELETE FROM event_push_actions WHERE room_id = $1 AND stream_ordering <= $2")
        .bind(room_id)
        .bind(upto)
        .execute(&mut *conn)
        .await?;
    Ok(shared.rows_affected() + own.rows_affected())
}

/// Returns the stored position of a background sender.
pub async fn sender_position(pool: &AnyPool, name: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT stream_ordering FROM push_sender_positions WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn set_sender_position(conn: &mut AnyConnection, name: &str, position: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO push_sender_positions (name, stream_ordering) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET stream_ordering = excluded.stream_ordering",
    )
    .bind(name)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok(())
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
/// `before_ts` and not older than `oldest_ts`, newer than the pusher, after
/// the last email about their room, and in rooms whose last email is older
/// than `period_start_ts`. Oldest first.
pub async fn email_candidates(
    pool: &AnyPool,
    before_ts: i64,
    oldest_ts: i64,
    period_start_ts: i64,
    limit: i64,
) -> Result<Vec<EmailCandidate>, sqlx::Error> {
    let pusher_columns: Vec<String> = PUSHER_COLUMNS.split(", ").map(|c| format!("p.{}", c.trim())).collect();
    let sql = format!(
        "SELECT {}, a.event_id, a.room_id, a.thread_id, a.stream_ordering, a.ts, a.actions, a.highlight FROM ( \
         SELECT {OWN_COLUMNS} FROM event_push_actions x \
         JOIN memberships m ON m.room_id = x.room_id AND m.user_id = x.user_id AND m.membership = 'join' \
         WHERE x.notify = 1 AND x.ts >= $4 AND x.user_id IN (SELECT user_id FROM pushers WHERE kind = 'email') \
         UNION ALL \
         SELECT {SHARED_COLUMNS} FROM memberships m \
         JOIN event_push_shared s ON s.room_id = m.room_id AND s.stream_ordering > m.joined_stream \
         WHERE m.membership = 'join' AND s.ts >= $4 AND s.sender <> m.user_id AND {no_override} \
         AND m.user_id IN (SELECT user_id FROM pushers WHERE kind = 'email') \
         ) a JOIN pushers p ON p.user_id = a.user_id AND p.kind = 'email' \
         LEFT JOIN email_notifications_sent es ON es.user_id = a.user_id AND es.room_id = a.room_id \
         WHERE a.ts <= $1 AND a.ts >= p.created_ts \
         AND a.stream_ordering > COALESCE(es.last_stream, 0) AND COALESCE(es.sent_ts, 0) <= $2 AND {unread} \
         ORDER BY a.stream_ordering LIMIT $3",
        pusher_columns.join(", "),
        no_override = no_override("m.user_id"),
        unread = unread("a.user_id"),
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(before_ts)
        .bind(period_start_ts)
        .bind(limit)
        .bind(oldest_ts)
        .fetch_all(pool)
        .await?;
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
                notify: true,
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

#[cfg(test)]
mod tests {
    use sqlx::any::AnyPoolOptions;

    use super::*;
    use crate::storage::{Backend, migrate};

    const ROOM: &str = "!room:example.org";
    const ALICE: &str = "@alice:example.org";
    const BOB: &str = "@bob:example.org";
    const CAROL: &str = "@carol:example.org";

    /// Unread counts as the queries before migration 13 computed them: push
    /// actions after the user's receipts and after the user's last event in the room.
    async fn counts_before_migration(pool: &AnyPool, user: &str) -> Vec<(String, String, i64, i64)> {
        let rows = sqlx::query(
            "SELECT a.room_id, a.thread_id, COUNT(*), CAST(COALESCE(SUM(a.highlight), 0) AS BIGINT) \
             FROM event_push_actions a WHERE a.user_id = $1 \
             AND a.stream_ordering > COALESCE((SELECT MAX(r.event_stream) FROM receipts r \
             WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.receipt_type IN ('m.read', 'm.read.private') \
             AND (r.thread_id = '' OR r.thread_id = a.thread_id)), 0) \
             AND a.stream_ordering > COALESCE((SELECT MAX(e.stream_ordering) FROM events e \
             WHERE e.room_id = a.room_id AND e.sender = a.user_id), 0) \
             GROUP BY a.room_id, a.thread_id ORDER BY a.thread_id",
        )
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
    }

    async fn exec(pool: &AnyPool, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
    }

    /// Builds the outcome of a message from alice: a shared row, a row of
    /// carol's own and alice's read mark.
    fn message_outcome(event_id: &str) -> PushOutcome {
        PushOutcome {
            shared: Some(SharedPushAction {
                event_id: event_id.to_owned(),
                room_id: ROOM.to_owned(),
                thread_id: "main".to_owned(),
                sender: ALICE.to_owned(),
                stream_ordering: 0,
                ts: 0,
                actions: r#"["notify"]"#.to_owned(),
                highlight: false,
            }),
            users: vec![PushAction {
                user_id: CAROL.to_owned(),
                event_id: event_id.to_owned(),
                room_id: ROOM.to_owned(),
                thread_id: "main".to_owned(),
                stream_ordering: 0,
                ts: 0,
                actions: "[]".to_owned(),
                highlight: false,
                notify: false,
            }],
            read_mark: Some((ALICE.to_owned(), ROOM.to_owned(), "main".to_owned())),
        }
    }

    /// `(event id, stream position)` of the shared rows, of carol's rows, and
    /// alice's read mark.
    async fn stored_outcomes(conn: &mut AnyConnection) -> (Vec<(String, i64)>, Vec<(String, i64)>, Vec<i64>) {
        let pairs = |rows: Vec<AnyRow>| rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<(String, i64)>>();
        let shared = sqlx::query("SELECT event_id, stream_ordering FROM event_push_shared ORDER BY 2")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let own = sqlx::query("SELECT event_id, stream_ordering FROM event_push_actions ORDER BY 2")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let marks = sqlx::query("SELECT stream_ordering FROM push_read_marks WHERE user_id = $1")
            .bind(ALICE)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        (pairs(shared), pairs(own), marks.iter().map(|r| r.get(0)).collect())
    }

    /// A job that inserts the queued outcomes of earlier jobs and then fails
    /// rolls those rows back with its savepoint. They must be inserted again
    /// at the commit, and the failed job's own rows must not.
    #[tokio::test]
    async fn pending_outcomes_survive_a_failed_job() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        migrate::run(&pool, Backend::Sqlite).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let mut pending = PendingOutcomes::default();

        sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
        pending.add(message_outcome("$first"), 1);
        sqlx::raw_sql("SAVEPOINT job").execute(&mut *conn).await.unwrap();
        let before_job = pending.mark();
        pending.add(message_outcome("$failed"), 2);
        insert_pending(&mut conn, &mut pending).await.unwrap();
        let inserted = stored_outcomes(&mut conn).await;
        assert_eq!(inserted.0.len(), 2, "shared rows inserted inside the failing job");
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT job").execute(&mut *conn).await.unwrap();
        pending.undo_to(before_job);
        pending.add(message_outcome("$third"), 3);
        insert_pending(&mut conn, &mut pending).await.unwrap();
        sqlx::raw_sql("COMMIT").execute(&mut *conn).await.unwrap();

        let (shared, own, marks) = stored_outcomes(&mut conn).await;
        assert_eq!(shared, vec![("$first".to_owned(), 1), ("$third".to_owned(), 3)], "shared rows");
        assert_eq!(own, vec![("$first".to_owned(), 1), ("$third".to_owned(), 3)], "own rows");
        assert_eq!(marks, vec![3], "alice's read mark");
    }

    /// Several messages of one sender in one batch leave one read mark, at the last of them.
    #[tokio::test]
    async fn pending_read_marks_keep_the_last() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        migrate::run(&pool, Backend::Sqlite).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let mut pending = PendingOutcomes::default();
        for (stream, event_id) in [(4, "$a"), (5, "$b"), (6, "$c")] {
            pending.add(message_outcome(event_id), stream);
        }
        insert_pending(&mut conn, &mut pending).await.unwrap();

        let (shared, _, marks) = stored_outcomes(&mut conn).await;
        assert_eq!(shared.len(), 3, "shared rows");
        assert_eq!(marks, vec![6], "alice's read mark");
    }

    /// Stored counts are the same before and after migration 13: a user whose
    /// last message in the room is after some push actions (in a thread, too)
    /// keeps them read, and receipts count as before.
    #[tokio::test]
    async fn migration_keeps_stored_counts() {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        migrate::run_upto(&pool, Backend::Sqlite, 12).await.unwrap();
        for user in [ALICE, BOB, CAROL] {
            exec(
                &pool,
                &format!(
                    "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_ordering) \
                     VALUES ('{ROOM}', '{user}', 'join', '$join-{user}', 1)"
                ),
            )
            .await;
        }
        // Alice sends 2..=7, 9 and 10 (5, 6 and 10 in the thread of 2); bob sends
        // 8; carol read up to 3, and the thread up to 6.
        let mut events = Vec::new();
        for (stream, sender) in
            [(2, ALICE), (3, ALICE), (4, ALICE), (5, ALICE), (6, ALICE), (7, ALICE), (8, BOB), (9, ALICE), (10, ALICE)]
        {
            events.push(format!("({stream}, '$e{stream}', '{ROOM}', '{sender}', 'm.room.message', 1, 0, '{{}}', 0)"));
        }
        exec(
            &pool,
            &format!(
                "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, depth, origin_server_ts, pdu, state_group) VALUES {}",
                events.join(", ")
            ),
        )
        .await;
        for user in [BOB, CAROL] {
            for stream in [2, 3, 4, 5, 6, 7, 9, 10] {
                let thread = if [5, 6, 10].contains(&stream) { "$e2" } else { "main" };
                let highlight = i64::from(stream == 3);
                exec(
                    &pool,
                    &format!(
                        "INSERT INTO event_push_actions (user_id, event_id, room_id, thread_id, stream_ordering, ts, actions, highlight) \
                         VALUES ('{user}', '$e{stream}', '{ROOM}', '{thread}', {stream}, 0, '[\"notify\"]', {highlight})"
                    ),
                )
                .await;
            }
        }
        exec(
            &pool,
            &format!(
                "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts, stream_id) VALUES \
                 ('{ROOM}', '{CAROL}', 'm.read', '', '$e3', 3, 0, 1), ('{ROOM}', '{CAROL}', 'm.read', '$e2', '$e6', 6, 0, 2)"
            ),
        )
        .await;

        let before_bob = counts_before_migration(&pool, BOB).await;
        let before_carol = counts_before_migration(&pool, CAROL).await;
        assert_eq!(
            before_bob,
            vec![(ROOM.to_owned(), "$e2".to_owned(), 1, 0), (ROOM.to_owned(), "main".to_owned(), 1, 0)]
        );
        assert_eq!(
            before_carol,
            vec![(ROOM.to_owned(), "$e2".to_owned(), 1, 0), (ROOM.to_owned(), "main".to_owned(), 3, 0)]
        );

        migrate::run(&pool, Backend::Sqlite).await.unwrap();
        let sorted = |mut rows: Vec<(String, String, i64, i64)>| {
            rows.sort();
            rows
        };
        assert_eq!(sorted(unread_counts(&pool, BOB, None).await.unwrap()), before_bob, "bob after the migration");
        assert_eq!(sorted(unread_counts(&pool, CAROL, None).await.unwrap()), before_carol, "carol after the migration");
        let listed = notifications(&pool, CAROL, i64::MAX, 20, false).await.unwrap();
        let read: Vec<(String, bool)> = listed.iter().map(|n| (n.action.event_id.clone(), n.read)).collect();
        let expected: Vec<(String, bool)> =
            [10, 9, 7, 6, 5, 4, 3, 2].iter().map(|s| (format!("$e{s}"), [6, 5, 3, 2].contains(s))).collect();
        assert_eq!(read, expected, "carol's notifications after the migration");
    }
}
