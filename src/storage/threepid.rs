//! Third-party identifiers (email addresses) of accounts and their
//! verification sessions.

use sqlx::{AnyConnection, AnyPool, Row};

/// Returns the account that owns a verified address, if any.
pub async fn owner(pool: &AnyPool, medium: &str, address: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2")
        .bind(medium)
        .bind(address)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// `(medium, address, validated_ts, added_ts)` of a user's addresses.
pub async fn of_user(pool: &AnyPool, user_id: &str) -> Result<Vec<(String, String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT medium, address, validated_ts, added_ts FROM user_threepids WHERE user_id = $1 ORDER BY added_ts, address",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

pub async fn add(
    conn: &mut AnyConnection,
    user_id: &str,
    medium: &str,
    address: &str,
    validated_ts: i64,
    added_ts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_threepids (user_id, medium, address, validated_ts, added_ts) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user_id)
    .bind(medium)
    .bind(address)
    .bind(validated_ts)
    .bind(added_ts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes a user's address and the email pushers that send to it; returns
/// whether the address was the user's.
pub async fn remove(conn: &mut AnyConnection, user_id: &str, medium: &str, address: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3")
        .bind(user_id)
        .bind(medium)
        .bind(address)
        .execute(&mut *conn)
        .await?;
    if medium == "email" {
        sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND kind = 'email' AND pushkey = $2")
            .bind(user_id)
            .bind(address)
            .execute(&mut *conn)
            .await?;
    }
    Ok(result.rows_affected() > 0)
}

/// A verification session of `requestToken`.
#[derive(Debug, Clone)]
pub struct Validation {
    pub sid: String,
    pub client_secret: String,
    pub medium: String,
    pub address: String,
    pub token: String,
    pub send_attempt: i64,
    pub created_ts: i64,
    pub validated_ts: Option<i64>,
}

const VALIDATION_COLUMNS: &str = "sid, client_secret, medium, address, token, send_attempt, created_ts, validated_ts";

fn validation_from_row(r: &sqlx::any::AnyRow) -> Validation {
    Validation {
        sid: r.get(0),
        client_secret: r.get(1),
        medium: r.get(2),
        address: r.get(3),
        token: r.get(4),
        send_attempt: r.get(5),
        created_ts: r.get(6),
        validated_ts: r.get(7),
    }
}

pub async fn validation(pool: &AnyPool, sid: &str) -> Result<Option<Validation>, sqlx::Error> {
    let sql = format!("SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE sid = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sid).fetch_optional(pool).await?;
    Ok(row.as_ref().map(validation_from_row))
}

/// Returns the newest session of a client secret and address.
pub async fn validation_for(
    pool: &AnyPool,
    client_secret: &str,
    medium: &str,
    address: &str,
) -> Result<Option<Validation>, sqlx::Error> {
    let sql = format!(
        "SELECT {VALIDATION_COLUMNS} FROM threepid_validations WHERE client_secret = $1 AND medium = $2 \
         AND address = $3 ORDER BY created_ts DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(client_secret)
        .bind(medium)
        .bind(address)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(validation_from_row))
}

pub async fn insert_validation(conn: &mut AnyConnection, v: &Validation) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO threepid_validations ({VALIDATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (sid) DO UPDATE SET token = excluded.token, send_attempt = excluded.send_attempt, \
         created_ts = excluded.created_ts"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&v.sid)
        .bind(&v.client_secret)
        .bind(&v.medium)
        .bind(&v.address)
        .bind(&v.token)
        .bind(v.send_attempt)
        .bind(v.created_ts)
        .bind(v.validated_ts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn mark_validated(conn: &mut AnyConnection, sid: &str, ts: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE threepid_validations SET validated_ts = $2 WHERE sid = $1")
        .bind(sid)
        .bind(ts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes a session once its address was added to an account.
pub async fn delete_validation(conn: &mut AnyConnection, sid: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM threepid_validations WHERE sid = $1").bind(sid).execute(&mut *conn).await?;
    Ok(())
}
