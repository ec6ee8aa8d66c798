//! The content repository (spec: Client-Server API, "Content repository"):
//! uploads under `/_matrix/media`, the authenticated downloads and thumbnails
//! under `/_matrix/client/v1/media`, their deprecated unauthenticated
//! `/_matrix/media/v3` forms, and the admin deletion endpoint
//! `DELETE /_lattice/admin/v1/media/{serverName}/{mediaId}` (`docs/media.md`).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ruma::{OwnedServerName, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, Path, Query},
    error::{Error, Result},
    media::{StoredMedia, UploadInfo, essence, thumbnail::Method},
};

pub fn router() -> Router<Arc<Services>> {
    const LEGACY: &str = "/_matrix/media/v3";
    const V1: &str = "/_matrix/client/v1/media";
    Router::new()
        .route(&format!("{LEGACY}/upload"), post(upload))
        .route(&format!("{LEGACY}/upload/{{server_name}}/{{media_id}}"), put(upload_reserved))
        .route("/_matrix/media/v1/create", post(create))
        .route(&format!("{V1}/config"), get(config))
        .route(&format!("{V1}/download/{{server_name}}/{{media_id}}"), get(download))
        .route(&format!("{V1}/download/{{server_name}}/{{media_id}}/{{file_name}}"), get(download_named))
        .route(&format!("{V1}/thumbnail/{{server_name}}/{{media_id}}"), get(thumbnail))
        .route(&format!("{LEGACY}/config"), get(legacy_config))
        .route(&format!("{LEGACY}/download/{{server_name}}/{{media_id}}"), get(legacy_download))
        .route(&format!("{LEGACY}/download/{{server_name}}/{{media_id}}/{{file_name}}"), get(legacy_download_named))
        .route(&format!("{LEGACY}/thumbnail/{{server_name}}/{{media_id}}"), get(legacy_thumbnail))
        .route("/_lattice/admin/v1/media/{server_name}/{media_id}", delete(admin_delete))
}

/// Content types served with `Content-Disposition: inline`: the spec's list of
/// types that browsers do not run as active content. Everything else is an attachment.
const INLINE_CONTENT_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The spec's recommended `Content-Security-Policy` for media responses.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; object-src 'self';";

/// Characters left as they are in an RFC 5987 `filename*` value (`attr-char`).
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    timeout_ms: Option<u64>,
}

fn upload_info(headers: &HeaderMap, filename: Option<String>) -> Result<UploadInfo> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) => {
            Some(value.to_str().map_err(|_| Error::invalid_param("Content-Type is not valid ASCII"))?.to_owned())
        }
        None => None,
    };
    let content_length =
        headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()).and_then(|value| value.parse().ok());
    Ok(UploadInfo { content_type, filename, content_length })
}

fn parse_server_name(value: &str) -> Result<OwnedServerName> {
    ServerName::parse(value).map_err(|e| Error::invalid_param(format!("invalid server name {value:?}: {e}")))
}

/// POST /_matrix/media/v3/upload
pub async fn upload(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    let info = upload_info(&headers, query.filename)?;
    let content_uri = services.media.upload(&session.user_id, info, body.into_data_stream()).await?;
    Ok(Json(json!({ "content_uri": content_uri })))
}

/// POST /_matrix/media/v1/create
pub async fn create(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let (content_uri, expires) = services.media.create(&session.user_id).await?;
    Ok(Json(json!({ "content_uri": content_uri, "unused_expires_at": expires })))
}

/// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
pub async fn upload_reserved(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    let server_name = parse_server_name(&server_name)?;
    let info = upload_info(&headers, query.filename)?;
    services.media.upload_reserved(&session.user_id, &server_name, &media_id, info, body.into_data_stream()).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v1/media/config
pub async fn config(State(services): State<Arc<Services>>, Auth(_): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": services.media.config().max_upload_size }))
}

/// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}
pub async fn download(
    State(services): State<Arc<Services>>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    serve_download(&services, &server_name, &media_id, None, query).await
}

/// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}
pub async fn download_named(
    State(services): State<Arc<Services>>,
    Auth(_): Auth,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    serve_download(&services, &server_name, &media_id, Some(file_name), query).await
}

/// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    Auth(_): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response> {
    serve_thumbnail(&services, &server_name, &media_id, query).await
}

/// GET /_matrix/media/v3/config (deprecated; authenticated like the new one)
pub async fn legacy_config(State(services): State<Arc<Services>>, auth: Auth) -> Result<Json<Value>> {
    check_not_frozen(&services)?;
    Ok(config(State(services), auth).await)
}

/// GET /_matrix/media/v3/download/{serverName}/{mediaId} (deprecated, unauthenticated)
pub async fn legacy_download(
    State(services): State<Arc<Services>>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    check_not_frozen(&services)?;
    serve_download(&services, &server_name, &media_id, None, query).await
}

/// GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName} (deprecated, unauthenticated)
pub async fn legacy_download_named(
    State(services): State<Arc<Services>>,
    Path((server_name, media_id, file_name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response> {
    check_not_frozen(&services)?;
    serve_download(&services, &server_name, &media_id, Some(file_name), query).await
}

/// GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId} (deprecated, unauthenticated)
pub async fn legacy_thumbnail(
    State(services): State<Arc<Services>>,
    Path((server_name, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
) -> Result<Response> {
    check_not_frozen(&services)?;
    serve_thumbnail(&services, &server_name, &media_id, query).await
}

/// DELETE /_lattice/admin/v1/media/{serverName}/{mediaId}: server administrators only.
pub async fn admin_delete(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    if !services.users.is_admin(&session.user_id).await? {
        return Err(Error::forbidden("only server administrators can delete media"));
    }
    let server_name = parse_server_name(&server_name)?;
    services.media.delete(&server_name, &media_id).await?;
    tracing::info!(admin = %session.user_id, %server_name, media_id, "admin deleted media");
    Ok(Json(json!({})))
}

/// With `media.freeze_legacy`, the unauthenticated endpoints serve nothing,
/// as the spec allows for a server that froze them.
fn check_not_frozen(services: &Services) -> Result<()> {
    if services.media.config().freeze_legacy {
        return Err(Error::not_found(
            "the unauthenticated media endpoints are frozen on this server: use /_matrix/client/v1/media with an access token",
        ));
    }
    Ok(())
}

fn timeout(timeout_ms: Option<u64>) -> Option<Duration> {
    timeout_ms.map(Duration::from_millis)
}

async fn serve_download(
    services: &Services,
    server_name: &str,
    media_id: &str,
    file_name: Option<String>,
    query: DownloadQuery,
) -> Result<Response> {
    let server_name = parse_server_name(server_name)?;
    let mut media = services.media.get(&server_name, media_id, timeout(query.timeout_ms)).await?;
    if file_name.is_some() {
        media.filename = file_name;
    }
    let disposition =
        if INLINE_CONTENT_TYPES.contains(&essence(&media.content_type).as_str()) { "inline" } else { "attachment" };
    file_response(media, disposition).await
}

async fn serve_thumbnail(
    services: &Services,
    server_name: &str,
    media_id: &str,
    query: ThumbnailQuery,
) -> Result<Response> {
    let server_name = parse_server_name(server_name)?;
    let width = dimension(query.width.as_deref(), "width")?;
    let height = dimension(query.height.as_deref(), "height")?;
    let method = match query.method.as_deref() {
        None => Method::Scale,
        Some(value) => Method::parse(value)
            .ok_or_else(|| Error::invalid_param(format!("invalid method {value:?}: expected \"scale\" or \"crop\"")))?,
    };
    let media =
        services.media.thumbnail(&server_name, media_id, width, height, method, timeout(query.timeout_ms)).await?;
    // The spec requires `inline` for thumbnails; they are always images of the inline list.
    file_response(media, "inline").await
}

/// Largest thumbnail dimension a client may request, in pixels.
const MAX_THUMBNAIL_DIMENSION: u32 = 8192;

fn dimension(value: Option<&str>, name: &str) -> Result<u32> {
    let value = value.ok_or_else(|| Error::missing_param(format!("missing query parameter {name}")))?;
    match value.parse::<u32>() {
        Ok(pixels) if (1..=MAX_THUMBNAIL_DIMENSION).contains(&pixels) => Ok(pixels),
        _ => Err(Error::invalid_param(format!(
            "invalid {name} {value:?}: expected an integer from 1 to {MAX_THUMBNAIL_DIMENSION}"
        ))),
    }
}

/// Streams a stored file with the headers the spec asks of media responses.
async fn file_response(media: StoredMedia, disposition: &str) -> Result<Response> {
    let file = match tokio::fs::File::open(&media.path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(path = %media.path.display(), "media file missing from the store");
            return Err(Error::not_found("the content of this media is missing on the server"));
        }
        Err(err) => return Err(Error::internal("opening a media file", err)),
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let content_type = HeaderValue::from_str(&media.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let disposition = content_disposition(disposition, media.filename.as_deref());
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_LENGTH, HeaderValue::from(media.size)),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&disposition).map_err(|e| Error::internal("building Content-Disposition", e))?,
        ),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("cross-origin")),
    ];
    Ok((StatusCode::OK, headers, body).into_response())
}

/// `inline` or `attachment`, with the file name as RFC 6266 asks: a quoted
/// `filename` when it is plain ASCII, else `filename*=utf-8''` percent-encoded.
pub fn content_disposition(disposition: &str, filename: Option<&str>) -> String {
    let Some(name) = filename.filter(|name| !name.is_empty()) else {
        return disposition.to_owned();
    };
    let plain = name.bytes().all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\');
    if plain {
        format!("{disposition}; filename=\"{name}\"")
    } else {
        format!("{disposition}; filename*=utf-8''{}", utf8_percent_encode(name, ATTR_CHAR_ESCAPES))
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn disposition_quotes_ascii_names() {
        assert_eq!(content_disposition("inline", Some("cat.png")), "inline; filename=\"cat.png\"");
        assert_eq!(content_disposition("attachment", None), "attachment");
    }

    #[test]
    fn disposition_encodes_other_names() {
        assert_eq!(
            content_disposition("attachment", Some("résumé \"final\".pdf")),
            "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
        );
    }
}
