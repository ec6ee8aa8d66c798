//! The media repository: uploads (plain and to a reserved `mxc://` URI), size
//! and quota limits, downloads, thumbnails and admin deletion. Files live in
//! the content-addressed [`store`]; metadata in `storage::media`.

pub mod store;
pub mod thumbnail;

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::Stream;
use ruma::{OwnedServerName, ServerName, UserId};
use tokio::sync::{Mutex, Notify};

use self::{
    store::{FileStore, TempFile, WriteError},
    thumbnail::{Method, Thumbnail},
};
use crate::{
    config::MediaConfig,
    error::{Error, ErrorKind, Result},
    storage::{self, Db, media::Content},
};

/// How long a media id from `POST /_matrix/media/v1/create` waits for its
/// upload: the spec's recommended 24 hours.
const UNUSED_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

/// Reserved media ids a user may have waiting for content at once.
const MAX_PENDING_UPLOADS: i64 = 50;

/// How long a download of reserved, not yet uploaded media waits by default
/// (`timeout_ms`, spec default 20 seconds), and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(20);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Longest `filename` accepted on upload, in bytes.
const MAX_FILENAME_BYTES: usize = 1024;

/// The media repository service. Cloning is cheap.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    store: FileStore,
    server_name: OwnedServerName,
    config: MediaConfig,
    /// `info_uri` of quota errors.
    quota_info_uri: String,
    /// Held while a file moves into the store together with the row that
    /// refers to it, and while a file is removed after its last row went, so
    /// that a deletion never removes content that a new row just claimed.
    content_lock: Mutex<()>,
    /// Woken after every upload to a reserved media id.
    uploaded: Notify,
}

/// The metadata of an upload, from its request headers and query.
pub struct UploadInfo {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The `Content-Length` header, when the client sent one.
    pub content_length: Option<u64>,
}

/// Uploaded media, ready to be served.
pub struct StoredMedia {
    pub path: PathBuf,
    pub content_type: String,
    pub size: u64,
    pub filename: Option<String>,
}

impl Media {
    /// Opens the file store under `data_dir/media`.
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        data_dir: &std::path::Path,
        config: MediaConfig,
        quota_info_uri: String,
    ) -> std::io::Result<Self> {
        let store = FileStore::open(data_dir.join("media"))?;
        let inner = Inner {
            db,
            store,
            server_name,
            config,
            quota_info_uri,
            content_lock: Mutex::new(()),
            uploaded: Notify::new(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// The directory that contains the media files.
    pub fn root(&self) -> &std::path::Path {
        self.inner.store.root()
    }

    /// Stores an upload under a new media id and returns its `mxc://` URI.
    pub async fn upload<S, E>(&self, uploader: &UserId, info: UploadInfo, body: S) -> Result<String>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let (content_type, filename) = check_info(&info)?;
        self.check_quota(uploader, info.content_length.unwrap_or(0)).await?;
        let temp = self.receive(body, info.content_length).await?;
        self.check_quota(uploader, temp.size).await?;

        let media_id = crate::rooms::random_localpart(24);
        let sha256 = temp.sha256.clone();
        let content = Content {
            content_type: &content_type,
            size: temp.size as i64,
            filename: filename.as_deref(),
            sha256: &sha256,
        };
        {
            let _guard = self.inner.content_lock.lock().await;
            self.commit(temp).await?;
            storage::media::insert_uploaded(
                &self.inner.db.pool,
                &media_id,
                uploader.as_str(),
                &content,
                storage::now_ms(),
            )
            .await?;
        }
        tracing::info!(%uploader, media_id, size = content.size, content_type, "stored upload");
        self.spawn_pregeneration(&media_id, &content_type);
        Ok(format!("mxc://{}/{media_id}", self.inner.server_name))
    }

    /// Reserves a media id for a later upload; returns its `mxc://` URI and
    /// the time (ms since the epoch) until which the upload may come.
    pub async fn create(&self, uploader: &UserId) -> Result<(String, i64)> {
        let now = storage::now_ms();
        let pending = storage::media::count_pending(&self.inner.db.pool, uploader.as_str(), now).await?;
        if pending >= MAX_PENDING_UPLOADS {
            return Err(Error::new(
                ErrorKind::LimitExceeded { retry_after_ms: 60_000 },
                format!("you have {pending} media ids waiting for an upload; upload to them before creating more"),
            ));
        }
        let media_id = crate::rooms::random_localpart(24);
        let expires = now + UNUSED_EXPIRY_MS;
        storage::media::insert_reserved(&self.inner.db.pool, &media_id, uploader.as_str(), now, expires).await?;
        Ok((format!("mxc://{}/{media_id}", self.inner.server_name), expires))
    }

    /// Stores the content of a media id reserved by [`Media::create`].
    pub async fn upload_reserved<S, E>(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        info: UploadInfo,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.check_local(server_name, media_id)?;
        let (content_type, filename) = check_info(&info)?;
        let row = self.reservation(media_id).await?;
        if row.uploader != uploader.as_str() {
            return Err(Error::forbidden(format!("mxc://{server_name}/{media_id} was created by another user")));
        }
        if row.sha256.is_some() {
            return Err(cannot_overwrite(server_name, media_id));
        }
        self.check_quota(uploader, info.content_length.unwrap_or(0)).await?;
        let temp = self.receive(body, info.content_length).await?;
        self.check_quota(uploader, temp.size).await?;

        let sha256 = temp.sha256.clone();
        let content = Content {
            content_type: &content_type,
            size: temp.size as i64,
            filename: filename.as_deref(),
            sha256: &sha256,
        };
        {
            let _guard = self.inner.content_lock.lock().await;
            self.commit(temp).await?;
            let filled =
                storage::media::fill_reserved(&self.inner.db.pool, media_id, &content, storage::now_ms()).await?;
            if !filled {
                // Another upload to the same id won the race; this content may now be unreferenced.
                self.remove_unused(&sha256).await;
                return Err(cannot_overwrite(server_name, media_id));
            }
        }
        self.inner.uploaded.notify_waiters();
        tracing::info!(%uploader, media_id, size = content.size, content_type, "stored upload to a reserved media id");
        self.spawn_pregeneration(media_id, &content_type);
        Ok(())
    }

    /// Finds uploaded media. Media reserved but not uploaded yet is waited for
    /// up to `timeout` (the spec's `timeout_ms`), then 504 `M_NOT_YET_UPLOADED`.
    pub async fn get(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout: Option<Duration>,
    ) -> Result<StoredMedia> {
        self.check_local(server_name, media_id)?;
        let deadline = tokio::time::Instant::now() + timeout.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        loop {
            // Registered before the read, so an upload between the read and the wait still wakes it.
            let uploaded = self.inner.uploaded.notified();
            let row = storage::media::get(&self.inner.db.pool, media_id)
                .await?
                .ok_or_else(|| unknown(server_name, media_id))?;
            if let (Some(sha256), Some(size)) = (&row.sha256, row.size) {
                return Ok(StoredMedia {
                    path: self.inner.store.path_of(sha256),
                    content_type: row.content_type.unwrap_or_else(|| "application/octet-stream".into()),
                    size: size as u64,
                    filename: row.filename,
                });
            }
            if row.unused_expires_ts.is_some_and(|expires| expires <= storage::now_ms()) {
                return Err(unknown(server_name, media_id));
            }
            if tokio::time::timeout_at(deadline, uploaded).await.is_err() {
                return Err(Error::new(
                    ErrorKind::NotYetUploaded,
                    format!("mxc://{server_name}/{media_id} has not been uploaded yet; try again later"),
                ));
            }
        }
    }

    /// Returns a thumbnail of at least `width`×`height` (the original when the
    /// image is no larger), generating and storing it on first request.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        width: u32,
        height: u32,
        method: Method,
        timeout: Option<Duration>,
    ) -> Result<StoredMedia> {
        let original = self.get(server_name, media_id, timeout).await?;
        let content_type = essence(&original.content_type);
        if !thumbnail::is_supported(&content_type) {
            return Err(Error::new(
                ErrorKind::Unknown,
                format!("cannot make a thumbnail of {content_type}: only PNG, JPEG, GIF and WebP images are supported"),
            )
            .with_status(http::StatusCode::BAD_REQUEST));
        }
        if let Some(row) =
            storage::media::get_thumbnail(&self.inner.db.pool, media_id, width, height, method.as_str()).await?
        {
            return Ok(self.thumbnail_file(&row));
        }
        match self.generate(media_id, &original.path, width, height, method).await? {
            Some(row) => Ok(self.thumbnail_file(&row)),
            None => Ok(original),
        }
    }

    /// Deletes local media: its metadata, its thumbnails, and every file that
    /// no other media id or thumbnail shares.
    pub async fn delete(&self, server_name: &ServerName, media_id: &str) -> Result<()> {
        self.check_local(server_name, media_id)?;
        let hashes = storage::media::delete(&self.inner.db.pool, media_id)
            .await?
            .ok_or_else(|| unknown(server_name, media_id))?;
        let _guard = self.inner.content_lock.lock().await;
        for sha256 in &hashes {
            self.remove_unused(sha256).await;
        }
        tracing::info!(media_id, files = hashes.len(), "deleted media");
        Ok(())
    }

    /// Rejects remote server names (no federation yet) and malformed media ids.
    fn check_local(&self, server_name: &ServerName, media_id: &str) -> Result<()> {
        if !is_valid_media_id(media_id) {
            return Err(Error::invalid_param(format!(
                "invalid media id {media_id:?}: only A-Z, a-z, 0-9, '_' and '-' are allowed"
            )));
        }
        if server_name != self.inner.server_name {
            return Err(Error::not_found(format!(
                "mxc://{server_name}/{media_id} is on another server, and this server does not fetch remote media yet"
            )));
        }
        Ok(())
    }

    async fn reservation(&self, media_id: &str) -> Result<storage::media::MediaRow> {
        let row = storage::media::get(&self.inner.db.pool, media_id).await?;
        let expired = |row: &storage::media::MediaRow| {
            row.sha256.is_none() && row.unused_expires_ts.is_some_and(|expires| expires <= storage::now_ms())
        };
        match row {
            Some(row) if !expired(&row) => Ok(row),
            _ => Err(unknown(&self.inner.server_name, media_id)),
        }
    }

    /// Rejects an upload of `size` more bytes when it would take `uploader` past the quota.
    async fn check_quota(&self, uploader: &UserId, size: u64) -> Result<()> {
        let quota = self.inner.config.per_user_quota;
        if quota == 0 {
            return Ok(());
        }
        let used = storage::media::uploaded_bytes(&self.inner.db.pool, uploader.as_str()).await?.max(0) as u64;
        if used.saturating_add(size) <= quota {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::UserLimitExceeded { info_uri: self.inner.quota_info_uri.clone() },
            format!("this upload of {size} bytes would exceed your media quota: {used} of {quota} bytes are in use"),
        ))
    }

    /// Streams a request body into a temporary file, rejecting it early when
    /// `Content-Length` already exceeds the maximum upload size.
    async fn receive<S, E>(&self, body: S, content_length: Option<u64>) -> Result<TempFile>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let max = self.inner.config.max_upload_size;
        let too_large =
            || Error::new(ErrorKind::TooLarge, format!("the upload is larger than the maximum of {max} bytes"));
        if content_length.is_some_and(|length| length > max) {
            return Err(too_large());
        }
        match self.inner.store.write_temp(body, max).await {
            Ok(temp) => Ok(temp),
            Err(WriteError::TooLarge) => Err(too_large()),
            Err(WriteError::Body(message)) => {
                Err(Error::new(ErrorKind::Unknown, format!("could not read the upload: {message}"))
                    .with_status(http::StatusCode::BAD_REQUEST))
            }
            Err(WriteError::Io(err)) => Err(Error::internal("writing an upload to disk", err)),
        }
    }

    async fn commit(&self, temp: TempFile) -> Result<()> {
        self.inner.store.commit(temp).await.map_err(|e| Error::internal("moving an upload into the media store", e))
    }

    /// Removes the file of `sha256` when no row refers to it any more. The
    /// caller holds `content_lock`. Failures are logged: the file is then only
    /// left behind, never served.
    async fn remove_unused(&self, sha256: &str) {
        match storage::media::content_in_use(&self.inner.db.pool, sha256).await {
            Ok(true) => {}
            Ok(false) => {
                if let Err(err) = self.inner.store.remove(sha256).await {
                    tracing::warn!(sha256, error = %err, "could not remove an unused media file");
                }
            }
            Err(err) => {
                tracing::warn!(sha256, error = %err, "could not check whether a media file is still in use")
            }
        }
    }

    fn thumbnail_file(&self, row: &storage::media::ThumbnailRow) -> StoredMedia {
        let extension = if row.content_type == "image/jpeg" { "jpg" } else { "png" };
        StoredMedia {
            path: self.inner.store.path_of(&row.sha256),
            content_type: row.content_type.clone(),
            size: row.size as u64,
            filename: Some(format!("thumbnail.{extension}")),
        }
    }

    /// Generates one thumbnail and stores it; `None` means the original is
    /// served instead.
    async fn generate(
        &self,
        media_id: &str,
        original: &std::path::Path,
        width: u32,
        height: u32,
        method: Method,
    ) -> Result<Option<storage::media::ThumbnailRow>> {
        let path = original.to_owned();
        let made = tokio::task::spawn_blocking(move || thumbnail::make(&path, width, height, method))
            .await
            .map_err(|e| Error::internal("making a thumbnail", e))?;
        let (bytes, content_type) = match made {
            Ok(Thumbnail::Original) => return Ok(None),
            Ok(Thumbnail::Encoded { bytes, content_type }) => (bytes, content_type),
            Err(err) => {
                return Err(Error::new(ErrorKind::Unknown, format!("cannot make a thumbnail of {media_id}: {err}"))
                    .with_status(http::StatusCode::BAD_REQUEST));
            }
        };
        let temp = match self.inner.store.write_bytes(bytes).await {
            Ok(temp) => temp,
            Err(WriteError::Io(err)) => {
                return Err(Error::internal("writing a thumbnail to disk", err));
            }
            Err(other) => {
                return Err(Error::internal("writing a thumbnail to disk", format!("{other:?}")));
            }
        };
        let row = storage::media::ThumbnailRow {
            width: i64::from(width),
            height: i64::from(height),
            method: method.as_str().to_owned(),
            content_type: content_type.to_owned(),
            size: temp.size as i64,
            sha256: temp.sha256.clone(),
        };
        let _guard = self.inner.content_lock.lock().await;
        self.commit(temp).await?;
        if storage::media::insert_thumbnail(&self.inner.db.pool, media_id, &row, storage::now_ms()).await? {
            return Ok(Some(row));
        }
        // The media was deleted meanwhile, or a concurrent request stored this
        // thumbnail first and its row is served instead.
        self.remove_unused(&row.sha256).await;
        match storage::media::get_thumbnail(&self.inner.db.pool, media_id, width, height, method.as_str()).await? {
            Some(stored) => Ok(Some(stored)),
            None => Err(unknown(&self.inner.server_name, media_id)),
        }
    }

    /// Generates the spec's recommended thumbnail sizes of a new image in the
    /// background, so that the upload returns without waiting for them.
    fn spawn_pregeneration(&self, media_id: &str, content_type: &str) {
        if !thumbnail::is_supported(&essence(content_type)) {
            return;
        }
        let media = self.clone();
        let media_id = media_id.to_owned();
        tokio::spawn(async move {
            let server_name = media.inner.server_name.clone();
            let Ok(original) = media.get(&server_name, &media_id, Some(Duration::ZERO)).await else {
                return;
            };
            for (width, height, method) in thumbnail::PREGENERATED {
                if let Err(err) = media.generate(&media_id, &original.path, width, height, method).await {
                    tracing::warn!(media_id, width, height, method = method.as_str(), error = %err, "could not pre-generate a thumbnail");
                    return;
                }
            }
            tracing::debug!(media_id, "pre-generated thumbnails");
        });
    }
}

/// The checked content type (default `application/octet-stream`) and file name of an upload.
fn check_info(info: &UploadInfo) -> Result<(String, Option<String>)> {
    let content_type = info.content_type.clone().filter(|t| !t.trim().is_empty());
    let content_type = content_type.unwrap_or_else(|| "application/octet-stream".into());
    if http::HeaderValue::from_str(&content_type).is_err() || !content_type.contains('/') {
        return Err(Error::invalid_param(format!("invalid Content-Type {content_type:?}")));
    }
    let filename = info.filename.clone().filter(|name| !name.is_empty());
    if let Some(name) = &filename {
        if name.len() > MAX_FILENAME_BYTES {
            return Err(Error::invalid_param(format!("filename is longer than {MAX_FILENAME_BYTES} bytes")));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid_param("filename contains control characters"));
        }
    }
    Ok((content_type, filename))
}

/// The media type without parameters, in lower case (`Text/Plain; charset=x` → `text/plain`).
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether `media_id` uses only the characters the spec allows (`A-Za-z0-9_-`).
pub fn is_valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unknown(server_name: &ServerName, media_id: &str) -> Error {
    Error::not_found(format!("mxc://{server_name}/{media_id} not found"))
}

fn cannot_overwrite(server_name: &ServerName, media_id: &str) -> Error {
    Error::new(ErrorKind::CannotOverwriteMedia, format!("mxc://{server_name}/{media_id} already has content"))
}

/// The `info_uri` of quota errors: the configured one, else the public base URL,
/// else the server name over HTTPS.
pub fn quota_info_uri(config: &crate::Config) -> String {
    if !config.media.quota_info_uri.is_empty() {
        return config.media.quota_info_uri.clone();
    }
    config.public_baseurl.clone().unwrap_or_else(|| format!("https://{}/", config.server_name))
}
