//! Federation media between two Lattice servers over TLS. A user of B
//! downloads media uploaded on A, which B fetches on first request and then
//! serves from its cache. Thumbnails and unknown media are covered too.

use std::{
    io::Cursor,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Json, Router, extract::RawQuery, routing::get};
use tokio::sync::watch;

use image::{DynamicImage, ImageFormat, RgbaImage};
use lattice::federation::{
    auth::authorization_header,
    media::{boundary, split_multipart},
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Client, TestCa, TestServer, assert_error, backends};

fn png(width: u32, height: u32) -> Vec<u8> {
    let pattern = RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 60, 255]));
    let mut bytes = Vec::new();
    DynamicImage::ImageRgba8(pattern).write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).expect("encode PNG");
    bytes
}

fn decoded_size(bytes: &[u8]) -> (u32, u32) {
    let image =
        image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().expect("format").decode().expect("decode");
    (image.width(), image.height())
}

struct Download {
    status: StatusCode,
    content_type: String,
    disposition: String,
    body: Vec<u8>,
}

async fn download(client: &Client, path: &str) -> Download {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", client.base))
        .bearer_auth(client.token.as_deref().unwrap_or_default())
        .send()
        .await
        .expect("request");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (status, content_type, disposition) =
        (response.status(), header("content-type"), header("content-disposition"));
    let body = response.bytes().await.expect("body").to_vec();
    Download { status, content_type, disposition, body }
}

async fn upload(client: &Client, bytes: &[u8], content_type: &str, filename: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload?filename={filename}", client.base))
        .bearer_auth(client.token.as_deref().unwrap_or_default())
        .header("content-type", content_type)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("upload");
    let body: Value = response.json().await.expect("JSON");
    let uri = body["content_uri"].as_str().expect("content_uri");
    uri.rsplit('/').next().expect("media id").to_owned()
}

#[tokio::test]
async fn remote_media_downloaded_and_cached() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers =
            TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
        let b = servers.pop().expect("b");
        let a = servers.pop().expect("a");
        let alice = a.register("alice").await;
        let bob = b.register("bob").await;

        let original = png(400, 200);
        let media_id = upload(&alice, &original, "image/png", "sunset.png").await;
        let document: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let document_id = upload(&alice, &document, "application/pdf", "report.pdf").await;

        // Bob, on B, downloads Alice's image: B fetches it from A over federation.
        let path = format!("/_matrix/client/v1/media/download/a.lattice.test/{media_id}");
        let first = download(&bob, &path).await;
        assert_eq!(first.status, StatusCode::OK, "{backend:?}: {}", String::from_utf8_lossy(&first.body));
        assert_eq!(first.body, original, "bytes equal");
        assert_eq!(first.content_type, "image/png");
        assert_eq!(first.disposition, "inline; filename=\"sunset.png\"");

        let pdf = download(&bob, &format!("/_matrix/client/v1/media/download/a.lattice.test/{document_id}")).await;
        assert_eq!(pdf.status, StatusCode::OK);
        assert_eq!(pdf.body, document, "binary bytes equal");
        assert_eq!(pdf.content_type, "application/pdf");
        assert_eq!(pdf.disposition, "attachment; filename=\"report.pdf\"");

        // Thumbnails are made by A and cached by B.
        let thumb = |query: &str| format!("/_matrix/client/v1/media/thumbnail/a.lattice.test/{media_id}?{query}");
        let scaled = download(&bob, &thumb("width=320&height=240&method=scale")).await;
        assert_eq!(scaled.status, StatusCode::OK, "{}", String::from_utf8_lossy(&scaled.body));
        assert_eq!(scaled.content_type, "image/png");
        assert_eq!(decoded_size(&scaled.body), (320, 160));
        let cropped = download(&bob, &thumb("width=96&height=96&method=crop")).await;
        assert_eq!(cropped.status, StatusCode::OK);
        assert_eq!(decoded_size(&cropped.body), (96, 96));

        use sqlx::Row;
        let pool = &b.homeserver.services().db.pool;
        let cached: i64 = sqlx::query("SELECT COUNT(*) FROM remote_media WHERE origin = 'a.lattice.test'")
            .fetch_one(pool)
            .await
            .expect("count")
            .get(0);
        assert_eq!(cached, 2, "both files cached on B");

        // Unknown media on A: 404 M_NOT_FOUND for Bob, and nothing cached.
        let missing = download(&bob, "/_matrix/client/v1/media/download/a.lattice.test/doesNotExist").await;
        let json: Value = serde_json::from_slice(&missing.body).expect("error JSON");
        assert_error(&(missing.status, json), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let missing =
            download(&bob, "/_matrix/client/v1/media/thumbnail/a.lattice.test/doesNotExist?width=32&height=32").await;
        let json: Value = serde_json::from_slice(&missing.body).expect("error JSON");
        assert_error(&(missing.status, json), StatusCode::NOT_FOUND, "M_NOT_FOUND");

        // The legacy endpoint fetches remote media too, unless allow_remote=false.
        let legacy = download(&b.client(), &format!("/_matrix/media/v3/download/a.lattice.test/{document_id}")).await;
        assert_eq!(legacy.status, StatusCode::OK);
        assert_eq!(legacy.body, document);
        let fresh = upload(&alice, b"not fetched yet", "text/plain", "new.txt").await;
        let refused =
            download(&b.client(), &format!("/_matrix/media/v3/download/a.lattice.test/{fresh}?allow_remote=false"))
                .await;
        let json: Value = serde_json::from_slice(&refused.body).expect("error JSON");
        assert!(json["error"].as_str().unwrap_or_default().contains("allow_remote=false"), "{json}");
        assert_error(&(refused.status, json), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let invalid =
            download(&b.client(), &format!("/_matrix/media/v3/download/a.lattice.test/{fresh}?allow_remote=maybe"))
                .await;
        let json: Value = serde_json::from_slice(&invalid.body).expect("error JSON");
        assert_error(&(invalid.status, json), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        // With A stopped, B still serves what it cached.
        a.stop().await;
        let again = download(&bob, &path).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body, original, "served from B's cache");
        let again = download(&bob, &thumb("width=96&height=96&method=crop")).await;
        assert_eq!(again.body, cropped.body, "thumbnail served from B's cache");
        // What was never fetched now fails as the unreachable server it is.
        let unreachable = download(&bob, &thumb("width=50&height=50&method=crop")).await;
        assert_eq!(unreachable.status, StatusCode::BAD_GATEWAY);
        b.stop().await;
    }
}

#[tokio::test]
async fn federation_media_endpoints_answer_multipart() {
    for backend in backends() {
        let ca = TestCa::new();
        let mut servers =
            TestServer::start_federated(&backend, &ca, &["a.lattice.test", "b.lattice.test"], |_| {}).await;
        let b = servers.pop().expect("b");
        let a = servers.pop().expect("a");
        let alice = a.register("alice").await;
        let original = png(64, 64);
        let media_id = upload(&alice, &original, "image/png", "icon.png").await;
        let b_key = &b.homeserver.services().key;
        let http = ca.client(&[&a]);

        // B requests the media from A directly, on the spec's federation media endpoint.
        let path = format!("/_matrix/federation/v1/media/download/{media_id}");
        let auth = authorization_header(&b_key.pair, "b.lattice.test", "a.lattice.test", "GET", &path, None).unwrap();
        let response =
            http.get(format!("{}{path}", a.federation_base())).header("authorization", auth).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        let delimiter = boundary(&content_type).expect("multipart/mixed with a boundary");
        let body = response.bytes().await.unwrap();
        let parts = split_multipart(&body, &delimiter).expect("well-formed multipart");
        assert_eq!(parts.len(), 2);
        assert_eq!(serde_json::from_slice::<Value>(parts[0].1).unwrap(), serde_json::json!({}));
        assert!(parts[0].0.contains(&("content-type".into(), "application/json".into())));
        assert!(parts[1].0.contains(&("content-type".into(), "image/png".into())));
        assert!(parts[1].0.contains(&("content-disposition".into(), "inline; filename=\"icon.png\"".into())));
        assert_eq!(parts[1].1, original.as_slice());

        // Thumbnail over federation.
        let path = format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=crop");
        let auth = authorization_header(&b_key.pair, "b.lattice.test", "a.lattice.test", "GET", &path, None).unwrap();
        let response =
            http.get(format!("{}{path}", a.federation_base())).header("authorization", auth).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let delimiter = boundary(response.headers()["content-type"].to_str().unwrap()).unwrap();
        let body = response.bytes().await.unwrap();
        let parts = split_multipart(&body, &delimiter).unwrap();
        assert_eq!(decoded_size(parts[1].1), (32, 32));

        // Unknown media: 404 M_NOT_FOUND; bad thumbnail size: 400 naming the parameter.
        let path = "/_matrix/federation/v1/media/download/unknownMedia";
        let auth = authorization_header(&b_key.pair, "b.lattice.test", "a.lattice.test", "GET", path, None).unwrap();
        let response =
            http.get(format!("{}{path}", a.federation_base())).header("authorization", auth).send().await.unwrap();
        let status = response.status();
        assert_error(&(status, response.json().await.unwrap()), StatusCode::NOT_FOUND, "M_NOT_FOUND");
        let path = format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=0&height=32");
        let auth = authorization_header(&b_key.pair, "b.lattice.test", "a.lattice.test", "GET", &path, None).unwrap();
        let response =
            http.get(format!("{}{path}", a.federation_base())).header("authorization", auth).send().await.unwrap();
        let status = response.status();
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].as_str().unwrap_or_default().contains("width"), "{json}");
        assert_error(&(status, json), StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

        a.stop().await;
        b.stop().await;
    }
}

/// Serves `/_matrix/media/v3/download` only, like a server from before
/// federation media, and records the query strings it receives.
async fn start_legacy_origin(ca: &TestCa, queries: Arc<Mutex<Vec<String>>>) -> (SocketAddr, watch::Sender<bool>) {
    let (certificate, key) = ca.issue("old.lattice.test");
    let tls = lattice::federation::tls::server_config(&certificate, &key).expect("TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route(
            "/_matrix/media/v3/download/old.lattice.test/{media_id}",
            get(move |RawQuery(query): RawQuery| async move {
                queries.lock().unwrap().push(query.unwrap_or_default());
                (
                    [("content-type", "text/plain"), ("content-disposition", "inline; filename=\"old.txt\"")],
                    "from an older server",
                )
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({ "errcode": "M_UNRECOGNIZED", "error": "unknown endpoint" })),
            )
        });
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(lattice::api::federation::listener::serve_tls(listener, Arc::new(tls), app, stopped));
    (addr, stop)
}

#[tokio::test]
async fn servers_without_federation_media_use_legacy_download() {
    for backend in backends() {
        let ca = TestCa::new();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (addr, _stop) = start_legacy_origin(&ca, queries.clone()).await;
        let mut servers = TestServer::start_federated(&backend, &ca, &["b.lattice.test"], |config| {
            config.federation.host_overrides.insert("old.lattice.test".into(), addr.to_string());
        })
        .await;
        let b = servers.pop().expect("b");
        let bob = b.register("bob").await;
        let response = download(&bob, "/_matrix/client/v1/media/download/old.lattice.test/abc123").await;
        assert_eq!(response.status, StatusCode::OK, "{}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.body, b"from an older server");
        assert_eq!(response.content_type, "text/plain");
        assert_eq!(response.disposition, "inline; filename=\"old.txt\"");
        let queries = queries.lock().unwrap().clone();
        assert_eq!(queries.len(), 1, "{queries:?}");
        assert!(queries[0].contains("allow_remote=false"), "{queries:?}");
        b.stop().await;
    }
}
