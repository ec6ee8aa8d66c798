//! The media repository: uploads, limits, downloads and their headers,
//! thumbnails, the legacy freeze, admin deletion, and media events in rooms.

use std::{io::Cursor, path::Path, time::Duration};

use image::{DynamicImage, ImageFormat, RgbaImage};
use lattice::Config;
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    accounts::login_client,
    harness::{Client, TestServer, assert_error, backends, encode, timeline},
};

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; object-src 'self';";

/// A response with its raw body, for downloads.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn error(&self) -> (StatusCode, Value) {
        (self.status, self.json())
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client")
}

async fn send(request: reqwest::RequestBuilder, token: Option<&str>) -> Raw {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request.send().await.expect("request reaches the server");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("response body").to_vec();
    Raw { status, headers, body }
}

/// GET with the client's token (or none).
async fn get(client: &Client, path: &str) -> Raw {
    send(http().get(format!("{}{path}", client.base)), client.token.as_deref()).await
}

/// POST /_matrix/media/v3/upload; returns the status and JSON body.
async fn upload(client: &Client, bytes: &[u8], content_type: &str, filename: Option<&str>) -> (StatusCode, Value) {
    let mut path = "/_matrix/media/v3/upload".to_owned();
    if let Some(name) = filename {
        path = format!("{path}?filename={}", encode(name));
    }
    let request =
        http().post(format!("{}{path}", client.base)).header("content-type", content_type).body(bytes.to_vec());
    send(request, client.token.as_deref()).await.error()
}

/// Uploads and returns the `(server_name, media_id)` of the new `mxc://` URI.
async fn upload_ok(client: &Client, bytes: &[u8], content_type: &str, filename: Option<&str>) -> (String, String) {
    let (status, body) = upload(client, bytes, content_type, filename).await;
    assert_eq!(status, StatusCode::OK, "upload: {body}");
    split_mxc(body["content_uri"].as_str().expect("content_uri"))
}

fn split_mxc(uri: &str) -> (String, String) {
    let rest = uri.strip_prefix("mxc://").expect("an mxc:// URI");
    let (server, media_id) = rest.split_once('/').expect("server and media id");
    (server.to_owned(), media_id.to_owned())
}

fn download_path(server: &str, media_id: &str) -> String {
    format!("/_matrix/client/v1/media/download/{server}/{media_id}")
}

/// Every file under the media directory, temporary files included.
fn file_count(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries.flatten().map(|entry| if entry.path().is_dir() { file_count(&entry.path()) } else { 1 }).sum()
}

async fn media_rows(server: &TestServer) -> i64 {
    use sqlx::Row;
    let pool = &server.homeserver.services().db.pool;
    sqlx::query("SELECT COUNT(*) FROM media").fetch_one(pool).await.expect("count media").get(0)
}

fn media_dir(server: &TestServer) -> std::path::PathBuf {
    server.homeserver.services().media.root().to_path_buf()
}

/// A `width`×`height` test pattern encoded as `format`.
fn encoded_image(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let pattern = RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255]));
    let mut bytes = Vec::new();
    let image = if format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(pattern).to_rgb8())
    } else {
        DynamicImage::ImageRgba8(pattern)
    };
    image.write_to(&mut Cursor::new(&mut bytes), format).expect("encode test image");
    bytes
}

fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("guess format")
        .decode()
        .expect("thumbnail decodes");
    (image.width(), image.height())
}

#[tokio::test]
async fn upload_download_round_trip() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let png = encoded_image(ImageFormat::Png, 40, 30);
        let (host, media_id) = upload_ok(&alice, &png, "image/png", Some("cat.png")).await;
        assert_eq!(host, server.server_name, "{backend:?}");

        let response = get(&alice, &download_path(&host, &media_id)).await;
        assert_eq!(response.status, StatusCode::OK, "{backend:?}");
        assert_eq!(response.body, png, "bytes round-trip");
        assert_eq!(response.header("content-type"), "image/png");
        assert_eq!(response.header("content-length"), png.len().to_string());
        assert_eq!(response.header("content-disposition"), "inline; filename=\"cat.png\"");
        assert_eq!(response.header("content-security-policy"), CSP);
        assert_eq!(response.header("x-content-type-options"), "nosniff");
        assert_eq!(response.header("cross-origin-resource-policy"), "cross-origin");

        // Without a filename the disposition carries none.
        let text = b"plain words".to_vec();
        let (host, text_id) = upload_ok(&alice, &text, "text/plain; charset=utf-8", None).await;
        let response = get(&alice, &download_path(&host, &text_id)).await;
        assert_eq!(response.body, text);
        assert_eq!(response.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(response.header("content-disposition"), "inline");

        // The file name in the path overrides the uploaded one, RFC 6266-encoded when not ASCII.
        let named = format!("{}/{}", download_path(&host, &media_id), encode("chat noir é.png"));
        let response = get(&alice, &named).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("content-disposition"), "inline; filename*=utf-8''chat%20noir%20%C3%A9.png");

        // The deprecated unauthenticated endpoint serves the same bytes.
        let anonymous = server.client();
        let response = get(&anonymous, &format!("/_matrix/media/v3/download/{host}/{media_id}")).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body, png);
        let response = get(&anonymous, &format!("/_matrix/media/v3/download/{host}/{media_id}/other.png")).await;
        assert_eq!(response.header("content-disposition"), "inline; filename=\"other.png\"");

        // No Content-Type header: stored as application/octet-stream, served as an attachment.
        let request = http().post(format!("{}/_matrix/media/v3/upload", alice.base)).body(b"\x00\x01".to_vec());
        let created = send(request, alice.token.as_deref()).await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.json());
        let (host, raw_id) = split_mxc(created.json()["content_uri"].as_str().expect("content_uri"));
        let response = get(&alice, &download_path(&host, &raw_id)).await;
        assert_eq!(response.header("content-type"), "application/octet-stream");
        assert_eq!(response.header("content-disposition"), "attachment");
        server.stop().await;
    }
}

#[tokio::test]
async fn disposition_follows_content_type() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let cases: [(&[u8], &str, &str, &str); 5] = [
            (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "application/pdf", "report.pdf", "attachment"),
            (b"<html><script>alert(1)</script></html>", "text/html", "page.html", "attachment"),
            (b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>", "image/svg+xml", "logo.svg", "attachment"),
            // Ogg and WebM are on the spec's list of types safe to serve inline.
            (b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00", "audio/ogg", "voice.ogg", "inline"),
            (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01", "video/webm", "clip.webm", "inline"),
        ];
        for (bytes, content_type, filename, expected) in cases {
            let (host, media_id) = upload_ok(&alice, bytes, content_type, Some(filename)).await;
            let response = get(&alice, &download_path(&host, &media_id)).await;
            assert_eq!(response.status, StatusCode::OK, "{content_type} on {backend:?}");
            assert_eq!(response.body, bytes, "{content_type} bytes");
            assert_eq!(response.header("content-type"), content_type);
            assert_eq!(response.header("content-disposition"), format!("{expected}; filename=\"{filename}\""));
            assert_eq!(response.header("content-security-policy"), CSP, "{content_type}");
            assert_eq!(response.header("x-content-type-options"), "nosniff", "{content_type}");
        }

        // A non-ASCII upload name is encoded as filename*.
        let (host, media_id) = upload_ok(&alice, b"%PDF-1.4\n", "application/pdf", Some("Résumé 2026.pdf")).await;
        let response = get(&alice, &download_path(&host, &media_id)).await;
        assert_eq!(response.header("content-disposition"), "attachment; filename*=utf-8''R%C3%A9sum%C3%A9%202026.pdf");
        server.stop().await;
    }
}

#[tokio::test]
async fn identical_content_stored_once() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let dir = media_dir(&server);
        let before = file_count(&dir);
        let bytes = b"the same document, uploaded twice".to_vec();
        let (_, first) = upload_ok(&alice, &bytes, "application/octet-stream", Some("a.bin")).await;
        assert_eq!(file_count(&dir), before + 1, "{backend:?}");
        let (host, second) = upload_ok(&bob, &bytes, "text/plain", Some("b.txt")).await;
        assert_ne!(first, second, "each upload gets its own media id");
        assert_eq!(file_count(&dir), before + 1, "identical content is stored once");

        let response = get(&alice, &download_path(&host, &second)).await;
        assert_eq!(response.body, bytes);
        assert_eq!(response.header("content-type"), "text/plain", "metadata stays per media id");
        server.stop().await;
    }
}

#[tokio::test]
async fn async_upload_to_created_uri() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let (status, created) = alice.post("/_matrix/media/v1/create", json!({})).await;
        assert_eq!(status, StatusCode::OK, "create: {created}");
        let expires = created["unused_expires_at"].as_i64().expect("unused_expires_at");
        assert!(expires > 0);
        let (host, media_id) = split_mxc(created["content_uri"].as_str().expect("content_uri"));

        // Not uploaded yet: the download waits timeout_ms, then 504.
        let pending = get(&alice, &format!("{}?timeout_ms=200", download_path(&host, &media_id))).await;
        assert_error(&pending.error(), StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED");

        let put_path = format!("/_matrix/media/v3/upload/{host}/{media_id}?filename=later.txt");
        let request = http().put(format!("{}{put_path}", bob.base)).header("content-type", "text/plain").body("bob's");
        let other = send(request, bob.token.as_deref()).await;
        assert_error(&other.error(), StatusCode::FORBIDDEN, "M_FORBIDDEN");

        // A download waiting for the content returns it once the upload lands.
        let waiter = {
            let alice = alice.clone();
            let path = format!("{}?timeout_ms=20000", download_path(&host, &media_id));
            tokio::spawn(async move { get(&alice, &path).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request =
            http().put(format!("{}{put_path}", alice.base)).header("content-type", "text/plain").body("hello later");
        let uploaded = send(request, alice.token.as_deref()).await;
        assert_eq!(uploaded.status, StatusCode::OK, "{backend:?}: {}", uploaded.json());
        assert_eq!(uploaded.json(), json!({}));
        let waited = waiter.await.expect("waiting download");
        assert_eq!(waited.status, StatusCode::OK);
        assert_eq!(waited.body, b"hello later");

        let request =
            http().put(format!("{}{put_path}", alice.base)).header("content-type", "text/plain").body("again");
        let again = send(request, alice.token.as_deref()).await;
        assert_error(&again.error(), StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA");

        let response = get(&alice, &download_path(&host, &media_id)).await;
        assert_eq!(response.body, b"hello later", "the first upload stays");
        assert_eq!(response.header("content-disposition"), "inline; filename=\"later.txt\"");

        // An id that was never created is unknown.
        let request = http().put(format!("{}/_matrix/media/v3/upload/{host}/neverCreated", alice.base)).body("x");
        let unknown = send(request, alice.token.as_deref()).await;
        assert_error(&unknown.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

/// Sends an upload with `Transfer-Encoding: chunked`, so the server learns the
/// size only while it reads, and returns the status line and body.
async fn chunked_upload(base: &str, token: &str, chunks: usize, chunk_size: usize) -> (u16, Value) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![b'x'; chunk_size];
    for _ in 0..chunks {
        let frame = [format!("{chunk_size:x}\r\n").as_bytes(), &chunk, b"\r\n"].concat();
        // The server may reject and close before the last chunk.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The body may itself be chunked; take the JSON object inside.
    let json = body.find('{').and_then(|start| body.rfind('}').map(|end| &body[start..=end])).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test]
async fn oversized_upload_rejected() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config: &mut Config| config.media.max_upload_size = 1000).await;
        let alice = server.register("alice").await;
        let dir = media_dir(&server);
        let files = file_count(&dir);

        let (status, config) = alice.get("/_matrix/client/v1/media/config").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(config["m.upload.size"], 1000);

        let rejected = upload(&alice, &vec![7u8; 1001], "application/octet-stream", None).await;
        assert_error(&rejected, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE");

        // Without Content-Length the server counts while it streams.
        let (status, body) = chunked_upload(&alice.base, alice.token.as_deref().unwrap(), 8, 300).await;
        assert_eq!(status, 413, "{backend:?}: {body}");
        assert_eq!(body["errcode"], "M_TOO_LARGE");

        assert_eq!(file_count(&dir), files, "no file stored on rejection");
        assert_eq!(media_rows(&server).await, 0, "no metadata stored on rejection");

        // Exactly the maximum is accepted, also chunked.
        upload_ok(&alice, &vec![1u8; 1000], "application/octet-stream", None).await;
        let (status, body) = chunked_upload(&alice.base, alice.token.as_deref().unwrap(), 4, 250).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(media_rows(&server).await, 2);
        server.stop().await;
    }
}

#[tokio::test]
async fn over_quota_upload_rejected() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config: &mut Config| {
            config.media.per_user_quota = 3000;
            config.media.quota_info_uri = "https://example.org/quota".into();
        })
        .await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let dir = media_dir(&server);

        upload_ok(&alice, &vec![1u8; 2000], "application/octet-stream", None).await;
        let files = file_count(&dir);
        let rows = media_rows(&server).await;

        let rejected = upload(&alice, &vec![2u8; 1500], "application/octet-stream", None).await;
        assert_error(&rejected, StatusCode::FORBIDDEN, "M_USER_LIMIT_EXCEEDED");
        assert_eq!(rejected.1["info_uri"], "https://example.org/quota");
        let (status, body) = chunked_upload(&alice.base, alice.token.as_deref().unwrap(), 3, 500).await;
        assert_eq!(status, 403, "{backend:?}: {body}");
        assert_eq!(body["errcode"], "M_USER_LIMIT_EXCEEDED");
        assert_eq!(file_count(&dir), files, "no file stored on rejection");
        assert_eq!(media_rows(&server).await, rows, "no metadata stored on rejection");

        // The rest of the quota is still usable, and the quota is per user.
        upload_ok(&alice, &vec![3u8; 1000], "application/octet-stream", None).await;
        upload_ok(&bob, &vec![4u8; 2500], "application/octet-stream", None).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_and_unauthenticated_requests() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let host = server.server_name.clone();
        let (_, media_id) = upload_ok(&alice, b"secret", "text/plain", None).await;

        let unknown = get(&alice, &download_path(&host, "doesNotExist")).await;
        assert_error(&unknown.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let unknown = get(&alice, "/_matrix/client/v1/media/thumbnail/localhost/doesNotExist?width=32&height=32").await;
        assert_error(&unknown.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let legacy = get(&server.client(), "/_matrix/media/v3/download/localhost/doesNotExist").await;
        assert_error(&legacy.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");

        let remote = get(&alice, &download_path("other.example", &media_id)).await;
        assert_error(&remote.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert!(remote.json()["error"].as_str().unwrap().contains("another server"), "{}", remote.json());

        let invalid = get(&alice, &download_path(&host, "bad.id")).await;
        assert_error(&invalid.error(), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        let anonymous = server.client();
        for path in [
            download_path(&host, &media_id),
            format!("{}/name.txt", download_path(&host, &media_id)),
            format!("/_matrix/client/v1/media/thumbnail/{host}/{media_id}?width=32&height=32"),
            "/_matrix/client/v1/media/config".to_owned(),
            "/_matrix/media/v3/config".to_owned(),
        ] {
            let response = get(&anonymous, &path).await;
            assert_error(&response.error(), StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        }
        let response = upload(&anonymous, b"x", "text/plain", None).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        let response = anonymous.post("/_matrix/media/v1/create", json!({})).await;
        assert_error(&response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
        let mut stranger = server.client();
        stranger.token = Some("not-a-token".into());
        let response = get(&stranger, &download_path(&host, &media_id)).await;
        assert_error(&response.error(), StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

        let preview = alice.get("/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fexample.org").await;
        assert_error(&preview, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
        server.stop().await;
    }
}

#[tokio::test]
async fn freeze_closes_legacy_endpoints() {
    for backend in backends() {
        let server = TestServer::start_with(&backend, |config: &mut Config| config.media.freeze_legacy = true).await;
        let alice = server.register("alice").await;
        let png = encoded_image(ImageFormat::Png, 20, 20);
        let (host, media_id) = upload_ok(&alice, &png, "image/png", None).await;

        for path in [
            format!("/_matrix/media/v3/download/{host}/{media_id}"),
            format!("/_matrix/media/v3/download/{host}/{media_id}/a.png"),
            format!("/_matrix/media/v3/thumbnail/{host}/{media_id}?width=32&height=32"),
            "/_matrix/media/v3/config".to_owned(),
        ] {
            let response = get(&alice, &path).await;
            assert_error(&response.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        }
        let response = get(&alice, &download_path(&host, &media_id)).await;
        assert_eq!(response.status, StatusCode::OK, "{backend:?}");
        assert_eq!(response.body, png);
        let (status, _) = alice.get("/_matrix/client/v1/media/config").await;
        assert_eq!(status, StatusCode::OK);
        server.stop().await;
    }

    // Without the switch the legacy config endpoint returns 200.
    let server = TestServer::start(&backends()[0]).await;
    let alice = server.register("alice").await;
    let (status, config) = alice.get("/_matrix/media/v3/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);
    server.stop().await;
}

#[tokio::test]
async fn thumbnails_of_each_format() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let formats = [
            (ImageFormat::Png, "image/png", "image/png"),
            (ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
            (ImageFormat::Gif, "image/gif", "image/png"),
            (ImageFormat::WebP, "image/webp", "image/png"),
        ];
        for (format, content_type, thumbnail_type) in formats {
            let original = encoded_image(format, 400, 200);
            let (host, media_id) = upload_ok(&alice, &original, content_type, Some("picture")).await;
            let thumb = |query: &str| format!("/_matrix/client/v1/media/thumbnail/{host}/{media_id}?{query}");

            // scale fits the image into the box and keeps its aspect ratio.
            let scaled = get(&alice, &thumb("width=320&height=240&method=scale")).await;
            assert_eq!(scaled.status, StatusCode::OK, "{content_type} on {backend:?}: {}", scaled.json());
            assert_eq!(scaled.header("content-type"), thumbnail_type, "{content_type}");
            assert_eq!(decoded_size(&scaled.body), (320, 160), "{content_type} scale");
            assert!(scaled.header("content-disposition").starts_with("inline"), "{content_type}");
            assert_eq!(scaled.header("content-security-policy"), CSP);
            assert_eq!(scaled.header("x-content-type-options"), "nosniff");

            // crop returns exactly the requested size.
            let cropped = get(&alice, &thumb("width=96&height=96&method=crop")).await;
            assert_eq!(cropped.status, StatusCode::OK, "{content_type}");
            assert_eq!(decoded_size(&cropped.body), (96, 96), "{content_type} crop");
            let cropped = get(&alice, &thumb("width=150&height=100&method=crop")).await;
            assert_eq!(decoded_size(&cropped.body), (150, 100), "{content_type} crop on first request");
            let again = get(&alice, &thumb("width=150&height=100&method=crop")).await;
            assert_eq!(again.body, cropped.body, "{content_type} stored thumbnail served again");

            // The legacy endpoint serves thumbnails too; the default method is scale.
            let legacy =
                get(&server.client(), &format!("/_matrix/media/v3/thumbnail/{host}/{media_id}?width=100&height=100"))
                    .await;
            assert_eq!(legacy.status, StatusCode::OK);
            assert_eq!(decoded_size(&legacy.body), (100, 50), "{content_type} legacy scale");

            // No upscaling: an image smaller than the request comes back at its own size,
            // PNG and JPEG as the original bytes.
            let large = get(&alice, &thumb("width=800&height=600&method=scale")).await;
            assert_eq!(large.status, StatusCode::OK);
            assert_eq!(decoded_size(&large.body), (400, 200), "{content_type} not upscaled");
            if matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
                assert_eq!(large.body, original, "{content_type} original returned");
            }
            let wide = get(&alice, &thumb("width=800&height=100&method=crop")).await;
            assert_eq!(decoded_size(&wide.body), (400, 50), "{content_type} crop without upscaling");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn recommended_thumbnails_pregenerated() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let (_, media_id) = upload_ok(&alice, &encoded_image(ImageFormat::Png, 1000, 700), "image/png", None).await;
        let pool = server.homeserver.services().db.pool.clone();
        let expected =
            [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale")];
        for (width, height, method) in expected {
            let mut found = None;
            for _ in 0..200 {
                found = lattice::storage::media::get_thumbnail(&pool, &media_id, width, height, method).await.unwrap();
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let row = found.unwrap_or_else(|| panic!("{width}x{height} {method} pre-generated on {backend:?}"));
            assert_eq!(row.content_type, "image/png");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn thumbnail_request_errors() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let (host, png_id) = upload_ok(&alice, &encoded_image(ImageFormat::Png, 50, 50), "image/png", None).await;
        let (_, pdf_id) = upload_ok(&alice, b"%PDF-1.4\n", "application/pdf", None).await;
        let thumb = |id: &str, query: &str| format!("/_matrix/client/v1/media/thumbnail/{host}/{id}?{query}");

        let response = get(&alice, &thumb(&png_id, "width=32&height=32&method=stretch")).await;
        assert_error(&response.error(), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = get(&alice, &thumb(&png_id, "height=32")).await;
        assert_error(&response.error(), StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
        let response = get(&alice, &thumb(&png_id, "width=-4&height=32")).await;
        assert_error(&response.error(), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = get(&alice, &thumb(&png_id, "width=0&height=32")).await;
        assert_error(&response.error(), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
        let response = get(&alice, &thumb(&pdf_id, "width=32&height=32")).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{backend:?}: {}", response.json());
        server.stop().await;
    }
}

#[tokio::test]
async fn admin_deletes_media() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let admin_id = ruma::UserId::parse(server.user_id("admin")).unwrap();
        server.homeserver.services().users.create(&admin_id, Some("admin password"), true).await.unwrap();
        let admin = login_client(&server, "admin", "admin password").await;
        let dir = media_dir(&server);

        let png = encoded_image(ImageFormat::Png, 300, 300);
        let (host, media_id) = upload_ok(&alice, &png, "image/png", None).await;
        let (_, shared_a) = upload_ok(&alice, b"shared bytes", "text/plain", None).await;
        let (_, shared_b) = upload_ok(&alice, b"shared bytes", "text/plain", None).await;
        let thumbnail =
            get(&alice, &format!("/_matrix/client/v1/media/thumbnail/{host}/{media_id}?width=50&height=50")).await;
        assert_eq!(thumbnail.status, StatusCode::OK);
        let admin_path = |id: &str| format!("/_lattice/admin/v1/media/{host}/{id}");

        let refused = alice.delete(&admin_path(&media_id), json!({})).await;
        assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        assert_eq!(get(&alice, &download_path(&host, &media_id)).await.status, StatusCode::OK);

        // Let the pre-generated thumbnails finish so the file count is stable.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = admin.delete(&admin_path(&media_id), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{backend:?}: {body}");
        let gone = get(&alice, &download_path(&host, &media_id)).await;
        assert_error(&gone.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let gone =
            get(&alice, &format!("/_matrix/client/v1/media/thumbnail/{host}/{media_id}?width=50&height=50")).await;
        assert_error(&gone.error(), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        assert_eq!(file_count(&dir), 1, "only the shared text file is left");
        let thumbnails =
            lattice::storage::media::get_thumbnail(&server.homeserver.services().db.pool, &media_id, 50, 50, "scale")
                .await
                .unwrap();
        assert!(thumbnails.is_none(), "thumbnail metadata deleted");

        // Content shared by another media id survives the deletion of one of them.
        let (status, _) = admin.delete(&admin_path(&shared_a), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(file_count(&dir), 1);
        assert_eq!(get(&alice, &download_path(&host, &shared_b)).await.body, b"shared bytes");
        let (status, _) = admin.delete(&admin_path(&shared_b), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(file_count(&dir), 0, "the last reference removes the file");

        let again = admin.delete(&admin_path(&shared_b), json!({})).await;
        assert_error(&again, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let remote = admin.delete("/_lattice/admin/v1/media/other.example/abc", json!({})).await;
        assert_error(&remote, StatusCode::NOT_FOUND, "M_NOT_FOUND");
        server.stop().await;
    }
}

#[tokio::test]
async fn media_events_pass_through() {
    for backend in backends() {
        let server = TestServer::start(&backend).await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let room = alice.create_room(json!({ "invite": [bob.user_id] })).await;
        bob.join(&room).await;
        let png = encoded_image(ImageFormat::Png, 64, 48);
        let (host, image_id) = upload_ok(&alice, &png, "image/png", Some("photo.png")).await;
        let (_, file_id) = upload_ok(&alice, b"%PDF-1.4\n", "application/pdf", Some("notes.pdf")).await;

        let contents = [
            json!({
                "msgtype": "m.image",
                "body": "photo.png",
                "url": format!("mxc://{host}/{image_id}"),
                "info": {
                    "mimetype": "image/png", "size": png.len(), "w": 64, "h": 48,
                    "thumbnail_url": format!("mxc://{host}/{image_id}"),
                    "thumbnail_info": { "mimetype": "image/png", "size": png.len(), "w": 64, "h": 48 },
                },
            }),
            json!({
                "msgtype": "m.file",
                "body": "notes.pdf",
                "filename": "notes.pdf",
                "url": format!("mxc://{host}/{file_id}"),
                "info": { "mimetype": "application/pdf", "size": 9 },
            }),
        ];
        let mut event_ids = Vec::new();
        for (index, content) in contents.iter().enumerate() {
            let (status, body) = alice
                .put(
                    &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/media{index}", encode(&room)),
                    content.clone(),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            event_ids.push(body["event_id"].as_str().unwrap().to_owned());
        }

        let sync = bob.sync("").await;
        let events = timeline(&sync, &room);
        for (event_id, content) in event_ids.iter().zip(&contents) {
            let event = events.iter().find(|e| &e["event_id"] == event_id).expect("media event in bob's timeline");
            assert_eq!(&event["content"], content, "{backend:?}");
        }
        server.stop().await;
    }
}
