//! The "My Network" page under `/_lattice/network/`: a single-page app in
//! plain HTML, CSS and JavaScript, built into the binary from `web/network/`.
//! It talks to the Client-Server API and the connection endpoints of the same
//! listener with the user's access token (`docs/network-page.md`).

use std::sync::{Arc, LazyLock};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Services, config::WebConfig};

/// Path prefix of the page on the client listener.
pub const PREFIX: &str = "/_lattice/network";

/// Scripts and styles only from the page's own files, API calls only to this
/// origin, images from this origin or the blob URLs that the page makes from
/// authenticated media downloads. No inline script or style runs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the page, with its entity tag computed once.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            body: include_bytes!(concat!("../../web/network/", $path)),
            content_type: $content_type,
            etag: LazyLock::new(|| entity_tag(include_bytes!(concat!("../../web/network/", $path)))),
        }
    };
}

static INDEX_HTML: Asset = asset!("index.html", "text/html; charset=utf-8");
static APP_JS: Asset = asset!("app.js", "text/javascript; charset=utf-8");
static STYLE_CSS: Asset = asset!("style.css", "text/css; charset=utf-8");
static ICON_SVG: Asset = asset!("icon.svg", "image/svg+xml");

fn entity_tag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
}

/// Builds the page's routes, or none when `web.network_page` is off. Then the
/// paths return 404 `M_UNRECOGNIZED` like any unknown endpoint.
pub fn router(config: &WebConfig) -> Router<Arc<Services>> {
    if !config.network_page {
        return Router::new();
    }
    Router::new()
        .route(PREFIX, get(redirect_to_page))
        .route(&format!("{PREFIX}/"), get(|headers: HeaderMap| async move { serve(&INDEX_HTML, &headers) }))
        .route(&format!("{PREFIX}/index.html"), get(|headers: HeaderMap| async move { serve(&INDEX_HTML, &headers) }))
        .route(&format!("{PREFIX}/app.js"), get(|headers: HeaderMap| async move { serve(&APP_JS, &headers) }))
        .route(&format!("{PREFIX}/style.css"), get(|headers: HeaderMap| async move { serve(&STYLE_CSS, &headers) }))
        .route(&format!("{PREFIX}/icon.svg"), get(|headers: HeaderMap| async move { serve(&ICON_SVG, &headers) }))
        .route(&format!("{PREFIX}/config.json"), get(page_config))
}

/// Redirects GET /_lattice/network to the page (308), with the security headers.
async fn redirect_to_page() -> Response {
    let mut response = Redirect::permanent(&format!("{PREFIX}/")).into_response();
    security_headers(response.headers_mut());
    response
}

/// Headers that every response of the page carries.
fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Serves a file. The browser keeps a copy but revalidates it on each load
/// (`no-cache` with an entity tag), so an upgraded server serves its new page
/// at once and an unchanged file costs a 304 without a body.
fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = asset.etag.as_str();
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.body.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    security_headers(headers);
    response
}

/// GET /_lattice/network/config.json: the settings that the page reads at start.
async fn page_config(State(services): State<Arc<Services>>) -> Response {
    let body = json!({
        "server_name": services.server_name,
        "element_url": services.config.web.element_url,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(headers);
    response
}
