//! Media metadata and thumbnails (`schema/*/0003_media.sql`). The files
//! themselves are kept by `media::store`; this module only knows the rows.

use sqlx::{AnyPool, Row, any::AnyRow};

/// One media id of this server.
#[derive(Debug, Clone)]
pub struct MediaRow {
    pub media_id: String,
    pub uploader: String,
    pub content_type: Option<String>,
    pub size: Option<i64>,
    pub filename: Option<String>,
    /// SHA-256 of the content in hex; `None` while a reserved id awaits its upload.
    pub sha256: Option<String>,
    pub created_ts: i64,
    pub uploaded_ts: Option<i64>,
    pub unused_expires_ts: Option<i64>,
}

/// A stored thumbnail of one media id.
#[derive(Debug, Clone)]
pub struct ThumbnailRow {
    pub width: i64,
    pub height: i64,
    pub method: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// The content of an upload, as written into a media row.
pub struct Content<'a> {
    pub content_type: &'a str,
    pub size: i64,
    pub filename: Option<&'a str>,
    pub sha256: &'a str,
}

const MEDIA_COLUMNS: &str =
    "media_id, uploader, content_type, size, filename, sha256, created_ts, uploaded_ts, unused_expires_ts";

fn media_row(row: &AnyRow) -> MediaRow {
    MediaRow {
        media_id: row.get(0),
        uploader: row.get(1),
        content_type: row.get(2),
        size: row.get(3),
        filename: row.get(4),
        sha256: row.get(5),
        created_ts: row.get(6),
        uploaded_ts: row.get(7),
        unused_expires_ts: row.get(8),
    }
}

pub async fn get(pool: &AnyPool, media_id: &str) -> Result<Option<MediaRow>, sqlx::Error> {
    let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(media_id).fetch_optional(pool).await?;
    Ok(row.as_ref().map(media_row))
}

/// Inserts a media id together with its content (a plain upload).
pub async fn insert_uploaded(
    pool: &AnyPool,
    media_id: &str,
    uploader: &str,
    content: &Content<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO media (media_id, uploader, content_type, size, filename, sha256, created_ts, uploaded_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(media_id)
    .bind(uploader)
    .bind(content.content_type)
    .bind(content.size)
    .bind(content.filename)
    .bind(content.sha256)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Inserts a media id without content (`POST /_matrix/media/v1/create`).
pub async fn insert_reserved(
    pool: &AnyPool,
    media_id: &str,
    uploader: &str,
    now: i64,
    unused_expires_ts: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO media (media_id, uploader, created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4)")
        .bind(media_id)
        .bind(uploader)
        .bind(now)
        .bind(unused_expires_ts)
        .execute(pool)
        .await?;
    Ok(())
}

/// Fills in the content of a reserved media id. Returns false when the id
/// already had content, so that two concurrent uploads cannot both win.
pub async fn fill_reserved(
    pool: &AnyPool,
    media_id: &str,
    content: &Content<'_>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE media SET content_type = $1, size = $2, filename = $3, sha256 = $4, uploaded_ts = $5, \
         unused_expires_ts = NULL WHERE media_id = $6 AND sha256 IS NULL",
    )
    .bind(content.content_type)
    .bind(content.size)
    .bind(content.filename)
    .bind(content.sha256)
    .bind(now)
    .bind(media_id)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Number of reserved media ids of `uploader` still waiting for content at `now`.
pub async fn count_pending(pool: &AnyPool, uploader: &str, now: i64) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND unused_expires_ts > $2")
            .bind(uploader)
            .bind(now)
            .fetch_one(pool)
            .await?;
    Ok(row.get(0))
}

/// Total bytes of the media that `uploader` uploaded, counted once per media id.
pub async fn uploaded_bytes(pool: &AnyPool, uploader: &str) -> Result<i64, sqlx::Error> {
    // PostgreSQL sums BIGINT into NUMERIC, which the Any driver cannot decode, hence the cast.
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media WHERE uploader = $1 AND sha256 IS NOT NULL",
    )
    .bind(uploader)
    .fetch_one(pool)
    .await?;
    Ok(row.get(0))
}

pub async fn get_thumbnail(
    pool: &AnyPool,
    media_id: &str,
    width: u32,
    height: u32,
    method: &str,
) -> Result<Option<ThumbnailRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT width, height, method, content_type, size, sha256 FROM media_thumbnails \
         WHERE media_id = $1 AND width = $2 AND height = $3 AND method = $4",
    )
    .bind(media_id)
    .bind(i64::from(width))
    .bind(i64::from(height))
    .bind(method)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| ThumbnailRow {
        width: r.get(0),
        height: r.get(1),
        method: r.get(2),
        content_type: r.get(3),
        size: r.get(4),
        sha256: r.get(5),
    }))
}

/// Records a thumbnail while its media id exists. Returns false when nothing
/// was written: the media was deleted, or a thumbnail of the same key was stored meanwhile.
pub async fn insert_thumbnail(
    pool: &AnyPool,
    media_id: &str,
    thumbnail: &ThumbnailRow,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO media_thumbnails (media_id, width, height, method, content_type, size, sha256, created_ts) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM media WHERE media_id = $1) \
         ON CONFLICT (media_id, width, height, method) DO NOTHING",
    )
    .bind(media_id)
    .bind(thumbnail.width)
    .bind(thumbnail.height)
    .bind(&thumbnail.method)
    .bind(&thumbnail.content_type)
    .bind(thumbnail.size)
    .bind(&thumbnail.sha256)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes a media id and its thumbnails; returns the content hashes they
/// referenced, or `None` when the media id did not exist.
pub async fn delete(pool: &AnyPool, media_id: &str) -> Result<Option<Vec<String>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(row) =
        sqlx::query("SELECT sha256 FROM media WHERE media_id = $1").bind(media_id).fetch_optional(&mut *tx).await?
    else {
        return Ok(None);
    };
    let mut hashes: Vec<String> = row.get::<Option<String>, _>(0).into_iter().collect();
    let thumbnails = sqlx::query("SELECT sha256 FROM media_thumbnails WHERE media_id = $1")
        .bind(media_id)
        .fetch_all(&mut *tx)
        .await?;
    hashes.extend(thumbnails.iter().map(|r| r.get::<String, _>(0)));
    sqlx::query("DELETE FROM media_thumbnails WHERE media_id = $1").bind(media_id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM media WHERE media_id = $1").bind(media_id).execute(&mut *tx).await?;
    tx.commit().await?;
    hashes.sort();
    hashes.dedup();
    Ok(Some(hashes))
}

/// Whether any media id or thumbnail still refers to the content `sha256`.
pub async fn content_in_use(pool: &AnyPool, sha256: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)",
    )
    .bind(sha256)
    .fetch_one(pool)
    .await?;
    Ok(row.get::<i64, _>(0) > 0)
}
