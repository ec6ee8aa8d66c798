//! Federation media (spec: Server-Server API, "Content Repository"):
//! `GET /_matrix/federation/v1/media/download/{mediaId}` and
//! `/thumbnail/{mediaId}` serve this server's media to other servers as
//! `multipart/mixed`: a JSON metadata part, then the content.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use futures::{StreamExt, stream};

use super::FederationAuth;
use crate::{
    Services,
    api::{
        Path, Query,
        media::{
            CONTENT_SECURITY_POLICY, DownloadQuery, ThumbnailQuery, content_disposition, disposition_type, timeout,
        },
    },
    error::{Error, Result},
    federation::media::{closing, opening},
    media::StoredMedia,
};

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/media/download/{media_id}", get(download))
        .route("/_matrix/federation/v1/media/thumbnail/{media_id}", get(thumbnail))
}

/// GET /_matrix/federation/v1/media/download/{mediaId}
async fn download(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    Query(query): Query<DownloadQuery>,
    auth: FederationAuth,
) -> Result<Response> {
    let media = services.media.get(&services.server_name, &media_id, timeout(query.timeout_ms)).await?;
    tracing::debug!(origin = %auth.origin, media_id, "serving media over federation");
    let disposition = disposition_type(&media.content_type);
    multipart_response(media, disposition).await
}

/// GET /_matrix/federation/v1/media/thumbnail/{mediaId}
async fn thumbnail(
    State(services): State<Arc<Services>>,
    Path(media_id): Path<String>,
    Query(query): Query<ThumbnailQuery>,
    auth: FederationAuth,
) -> Result<Response> {
    let (width, height, method) = query.params()?;
    let media = services
        .media
        .thumbnail(&services.server_name, &media_id, width, height, method, timeout(query.timeout_ms))
        .await?;
    tracing::debug!(origin = %auth.origin, media_id, width, height, "serving a thumbnail over federation");
    multipart_response(media, "inline").await
}

/// Streams a stored file inside the spec's two-part `multipart/mixed` body.
async fn multipart_response(media: StoredMedia, disposition: &str) -> Result<Response> {
    let file = match tokio::fs::File::open(&media.path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(path = %media.path.display(), "media file missing from the store");
            return Err(Error::not_found("the content of this media is missing on the server"));
        }
        Err(err) => return Err(Error::internal("opening a media file", err)),
    };
    let boundary = crate::rooms::random_localpart(32);
    let head = opening(&boundary, &media.content_type, &content_disposition(disposition, media.filename.as_deref()));
    let tail = closing(&boundary);
    let length = head.len() as u64 + media.size + tail.len() as u64;
    let content = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    let body = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(content)
        .chain(stream::once(async move { Ok(Bytes::from(tail)) }));
    let content_type = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
        .map_err(|e| Error::internal("building Content-Type", e))?;
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_LENGTH, HeaderValue::from(length)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}
