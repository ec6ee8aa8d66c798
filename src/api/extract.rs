//! Request extractors that turn every kind of bad input into the spec's error JSON.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use crate::{
    Services,
    error::{Error, ErrorKind},
    users::Session,
};

/// The session behind the request's access token (`Authorization: Bearer` or
/// the deprecated `access_token` query parameter).
pub struct Auth(pub Session);

pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
}

impl FromRequestParts<Arc<Services>> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Error> {
        let token = access_token(parts).ok_or_else(|| Error::new(ErrorKind::MissingToken, "missing access token"))?;
        Ok(Self(services.users.authenticate(&token).await?))
    }
}

/// A JSON body. An empty body counts as `{}`, because clients such as
/// matrix-nio send none where every field is optional.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(ErrorKind::TooLarge, "request body is too large")
            } else {
                Error::new(ErrorKind::NotJson, format!("could not read the request body: {rejection}"))
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::new(ErrorKind::NotJson, format!("request body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::new(ErrorKind::BadJson, "request body must be a JSON object"));
        }
        // The path names the offending field, which serde_json's own message leaves out.
        serde_path_to_error::deserialize(value).map(JsonBody).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                Error::bad_json(format!("invalid request body: {}", e.inner()))
            } else {
                Error::bad_json(format!("invalid request body: field {path}: {}", e.inner()))
            }
        })
    }
}

/// Path parameters, percent-decoded.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e| Error::invalid_param(format!("invalid path parameter: {e}")))
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(Query)
            .map_err(|e| Error::invalid_param(format!("invalid query parameter: {e}")))
    }
}

/// The peer address, when the server runs with connection info (not when mounted
/// into an application that serves without it).
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip());
        Ok(Self(ip))
    }
}
