//! The Server-Server API endpoints (spec: Server-Server API): server keys,
//! the version, federation media, inbound transactions, joins as the
//! resident server, and users' devices and encryption keys. Every endpoint
//! except the key and version endpoints requires an `X-Matrix` signed request
//! ([`FederationAuth`]).

mod events;
mod hierarchy;
mod keys;
pub mod listener;
mod media;
mod membership;
mod openid;
pub mod query;
mod send;
mod user_keys;
mod version;

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, OriginalUri, Request},
    http::header,
};
use ruma::{CanonicalJsonValue, OwnedServerName};

use crate::{
    Services,
    error::{Error, ErrorKind},
    federation::auth::XMatrix,
};

/// Builds the Server-Server API routes, served on the federation listener and
/// on the client listener for deployments that terminate TLS in a proxy.
pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .merge(keys::router())
        .merge(version::router())
        .merge(media::router())
        .merge(events::router())
        .merge(hierarchy::router())
        .merge(query::router())
        .merge(send::router())
        .merge(membership::router())
        .merge(openid::router())
        .merge(user_keys::router())
}

/// A request that another server signed: the verified origin, and the body
/// (already read, because the signature covers it).
pub struct FederationAuth {
    pub origin: OwnedServerName,
    pub body: Bytes,
}

fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unauthorized, message)
}

impl FromRequest<Arc<Services>> for FederationAuth {
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, Error> {
        let (parts, body) = request.into_parts();
        let uri = parts.extensions.get::<OriginalUri>().map(|original| original.0.clone()).unwrap_or(parts.uri.clone());
        let target = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| uri.path().to_owned());

        let mut headers = Vec::new();
        let mut parse_error = None;
        for value in parts.headers.get_all(header::AUTHORIZATION) {
            match value
                .to_str()
                .map_err(|_| "the Authorization header is not ASCII".to_owned())
                .and_then(|value| XMatrix::parse(value).map_err(|e| e.to_string()))
            {
                Ok(header) => headers.push(header),
                Err(err) => parse_error = Some(err),
            }
        }
        if headers.is_empty() {
            return Err(unauthorized(parse_error.unwrap_or_else(|| {
                "missing Authorization header: federation requests must be signed with X-Matrix".to_owned()
            })));
        }

        let limit = services.config.limits.max_request_body;
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::new(ErrorKind::TooLarge, format!("request body is larger than {limit} bytes")))?;
        let content = if body.is_empty() {
            None
        } else {
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| Error::new(ErrorKind::NotJson, format!("request body is not JSON: {e}")))?;
            Some(
                CanonicalJsonValue::try_from(value)
                    .map_err(|e| Error::bad_json(format!("request body is not canonical JSON: {e}")))?,
            )
        };

        let mut last_error = None;
        for header in &headers {
            match services.federation.verify_request(header, parts.method.as_str(), &target, content.clone()).await {
                Ok(origin) => return Ok(Self { origin, body }),
                Err(message) => last_error = Some(message),
            }
        }
        let message = last_error.unwrap_or_default();
        tracing::info!(reason = %message, "rejected a federation request");
        Err(unauthorized(message))
    }
}
