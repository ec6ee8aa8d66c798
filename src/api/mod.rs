//! HTTP: the routers of every API, with the layers they share (CORS, body
//! limits, request spans). Handlers only translate HTTP to service calls.

pub mod client;
mod extract;
pub mod federation;
mod media;
pub mod web;
mod well_known;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, Method, Request, header},
    response::IntoResponse,
};
use tower::ServiceExt;
use tower_http::{
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};

pub use self::extract::{Auth, ClientIp, JsonBody, OptionalToken, Path, Query, massaged_timestamp};
use crate::{Services, error::Error};

pub fn router(services: Arc<Services>) -> Router {
    let max_body = services.config.limits.max_request_body;
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-requested-with"),
        ])
        .max_age(Duration::from_secs(86400));

    let app = Router::new()
        .merge(client::router())
        .merge(media::router())
        .merge(federation::router())
        .merge(well_known::router())
        .merge(web::router(&services.config.web))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        // The limit applies where `JsonBody` reads the body, so an oversized request
        // gets the spec's 413 `M_TOO_LARGE` JSON, not a bare 413 from a middleware.
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let path = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".into());
            tracing::info_span!("request", method = %request.method(), path)
        }))
        .layer(cors)
        .with_state(services);
    with_legacy_client_paths(app)
}

/// The prefix of the Client-Server API before version 1.1 (`r0`), which
/// `/versions` still lists as `r0.6.1`.
const LEGACY_CLIENT_PREFIX: &str = "/_matrix/client/r0/";

/// Serves every `/_matrix/client/r0/...` request as its `v3` path. Spec
/// v1.1 renamed the r0.6.1 endpoints to v3 and kept their behaviour.
fn with_legacy_client_paths(app: Router) -> Router {
    let current = app.clone();
    let legacy = tower::service_fn(move |mut request: Request<axum::body::Body>| {
        let current = current.clone();
        async move {
            let uri = request.uri();
            let rest = uri.path().strip_prefix(LEGACY_CLIENT_PREFIX).unwrap_or_default();
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            if let Ok(rewritten) = format!("/_matrix/client/v3/{rest}{query}").parse() {
                *request.uri_mut() = rewritten;
            }
            current.oneshot(request).await
        }
    });
    app.route_service(&format!("{LEGACY_CLIENT_PREFIX}{{*path}}"), legacy)
}

/// Builds the Server-Server API router (with `/.well-known/matrix/server`) for
/// the federation listener, without CORS but with the same body limit and request spans.
pub fn federation_router(services: Arc<Services>) -> Router {
    let max_body = services.config.limits.max_request_body;
    Router::new()
        .merge(federation::router())
        .merge(well_known::router())
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let path = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".into());
            tracing::info_span!("federation_request", method = %request.method(), path)
        }))
        .with_state(services)
}

async fn unrecognized() -> impl IntoResponse {
    Error::unrecognized("unrecognized request: this endpoint is not implemented by this server")
}

async fn method_not_allowed() -> impl IntoResponse {
    Error::unrecognized("this endpoint does not accept that HTTP method")
        .with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}
