//! Request extractors that turn every kind of bad input into the spec's error JSON.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use ruma::UserId;

use crate::{
    Services,
    appservice::Registration,
    error::{Error, ErrorKind},
    storage,
    users::Session,
};

/// The session behind the request's access token (`Authorization: Bearer` or
/// the deprecated `access_token` query parameter). An application service's
/// `as_token` acts as its sender, or as the user named by the `user_id` query
/// parameter when that user is in its namespaces.
pub struct Auth(pub Session);

/// The access token of the request, if any, without checking it.
pub struct OptionalToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalToken {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        Ok(Self(access_token(parts)))
    }
}

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
        if let Some(registration) = services.appservices.by_as_token(&token) {
            return appservice_session(parts, services, registration.clone()).await.map(Self);
        }
        Ok(Self(services.users.authenticate(&token).await?))
    }
}

/// Reads the `ts` query parameter of an application service request
/// (spec: Application Service API, "Timestamp massaging"). Other callers'
/// `ts` is ignored.
pub fn massaged_timestamp(
    session: &Session,
    query: Option<&str>,
) -> Result<Option<ruma::MilliSecondsSinceUnixEpoch>, Error> {
    if session.appservice.is_none() {
        return Ok(None);
    }
    let Some((_, raw)) = url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(key, _)| key == "ts")
    else {
        return Ok(None);
    };
    let invalid = || Error::invalid_param(format!("ts {raw:?} is invalid: expected milliseconds since the Unix epoch"));
    let millis: u64 = raw.parse().map_err(|_| invalid())?;
    let millis = ruma::UInt::new(millis).ok_or_else(invalid)?;
    Ok(Some(ruma::MilliSecondsSinceUnixEpoch(millis)))
}

/// Identity assertion (spec: Application Service API, "Identity assertion"):
/// the `user_id` and `device_id` query parameters pick the user and device an
/// application service acts as.
async fn appservice_session(
    parts: &Parts,
    services: &Services,
    registration: Arc<Registration>,
) -> Result<Session, Error> {
    let mut user_id = None;
    let mut device_id = None;
    for (key, value) in url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        match &*key {
            "user_id" => user_id = Some(value.into_owned()),
            "device_id" | "org.matrix.msc3202.device_id" => device_id = Some(value.into_owned()),
            _ => {}
        }
    }
    let user_id = match user_id {
        None => registration.sender.clone(),
        Some(raw) => UserId::parse(raw.as_str())
            .map_err(|e| Error::invalid_param(format!("user_id {raw:?} is not a valid user id: {e}")))?,
    };
    if !registration.covers_user(&user_id) {
        return Err(Error::new(
            ErrorKind::Exclusive,
            format!(
                "application service {:?} cannot act as {user_id}: the user is outside its namespaces",
                registration.id
            ),
        )
        .with_status(axum::http::StatusCode::FORBIDDEN));
    }
    let Some(user) = storage::users::get(&services.db.pool, user_id.as_str()).await? else {
        return Err(Error::forbidden(format!(
            "{user_id} is not registered; register it first with type m.login.application_service"
        )));
    };
    if user.deactivated {
        return Err(Error::new(ErrorKind::UserDeactivated, format!("{user_id} has been deactivated")));
    }
    let device_id = match device_id {
        None => String::new(),
        Some(device_id) => {
            let known = storage::users::devices(&services.db.pool, user_id.as_str())
                .await?
                .iter()
                .any(|device| device.device_id == device_id);
            if !known {
                return Err(Error::new(
                    ErrorKind::Custom {
                        errcode: "M_UNKNOWN_DEVICE".into(),
                        status: axum::http::StatusCode::BAD_REQUEST,
                        extra: Default::default(),
                    },
                    format!("device_id {device_id:?} is not a device of {user_id}"),
                ));
            }
            device_id
        }
    };
    Ok(Session { user_id, device_id, appservice: Some(registration) })
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
        let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer).map(Query).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                Error::invalid_param(format!("invalid query parameter: {}", e.inner()))
            } else {
                Error::invalid_param(format!("invalid query parameter {path}: {}", e.inner()))
            }
        })
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
