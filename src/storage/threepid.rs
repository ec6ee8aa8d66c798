//! Third-party identifiers (email addresses) of accounts and their
//! verification sessions.

use sqlx::{AnyPool, Row};

/// The account that owns a verified address, if any.
pub async fn owner(
    pool: &AnyPool,
    medium: &str,
    address: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2")
        .bind(medium)
        .bind(address)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.get(0)))
}
