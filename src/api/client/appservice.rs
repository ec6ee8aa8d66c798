//! Client-Server endpoints of application services (spec: Application Service
//! API, "Client-Server API Extensions", and Client-Server API, "Third-party
//! networks").

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    appservice::{
        Registration,
        client::{CallError, segment},
    },
    error::{Error, ErrorKind, Result},
};

#[derive(Deserialize)]
pub struct PingBody {
    transaction_id: Option<String>,
}

fn custom_error(errcode: &str, status: StatusCode, message: String, extra: Map<String, Value>) -> Error {
    Error::new(ErrorKind::Custom { errcode: errcode.into(), status, extra }, message)
}

/// POST /_matrix/client/v1/appservice/{appserviceId}/ping
pub async fn ping(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(appservice_id): Path<String>,
    JsonBody(body): JsonBody<PingBody>,
) -> Result<Json<Value>> {
    let registration = session
        .appservice
        .filter(|registration| registration.id == appservice_id)
        .ok_or_else(|| Error::forbidden(format!("only application service {appservice_id:?} may ping itself")))?;
    let started = Instant::now();
    match services.appservice_client.ping(&registration, body.transaction_id.as_deref()).await {
        // A 2xx response whose body is not JSON still shows that the application service is reachable.
        // Whole milliseconds, rounded up: a loopback ping takes less than one,
        // and clients such as mautrix read a 0 as a failed ping.
        Ok(()) | Err(CallError::Body(_)) => {
            Ok(Json(json!({ "duration_ms": started.elapsed().as_micros().div_ceil(1000) as u64 })))
        }
        Err(CallError::NoUrl) => Err(custom_error(
            "M_URL_NOT_SET",
            StatusCode::BAD_REQUEST,
            format!("application service {appservice_id:?} has no url in its registration"),
            Map::new(),
        )),
        Err(CallError::Timeout) => Err(custom_error(
            "M_CONNECTION_TIMEOUT",
            StatusCode::GATEWAY_TIMEOUT,
            "the application service did not answer the ping in time".into(),
            Map::new(),
        )),
        Err(CallError::Connect(message)) => Err(custom_error(
            "M_CONNECTION_FAILED",
            StatusCode::BAD_GATEWAY,
            format!("could not connect to the application service: {message}"),
            Map::new(),
        )),
        Err(CallError::Status { status, body }) => {
            let mut extra = Map::new();
            extra.insert("status".into(), json!(status));
            extra.insert("body".into(), json!(body));
            Err(custom_error(
                "M_BAD_STATUS",
                StatusCode::BAD_GATEWAY,
                format!("the application service answered the ping with HTTP {status}"),
                extra,
            ))
        }
    }
}

/// Returns the query string of a client request without the access token, for
/// forwarding the search fields to application services.
fn forwarded_query(raw: Option<String>) -> String {
    let raw = raw.unwrap_or_default();
    let forwarded: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .filter(|(key, _)| key != "access_token")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(forwarded).finish()
}

fn providers<'a>(services: &'a Services, protocol: &'a str) -> Vec<&'a Arc<Registration>> {
    services.appservices.iter().filter(|registration| registration.protocols.iter().any(|p| p == protocol)).collect()
}

/// Asks each application service in `registrations` and concatenates the arrays they return.
async fn gather(services: &Services, registrations: &[&Arc<Registration>], path: &str, query: &str) -> Vec<Value> {
    let mut results = Vec::new();
    for registration in registrations {
        match services.appservice_client.thirdparty(registration, path, Some(query)).await {
            Ok(Value::Array(items)) => results.extend(items),
            Ok(_) => {
                tracing::warn!(appservice = %registration.id, path, "third-party lookup returned something other than a JSON array")
            }
            Err(err) => {
                tracing::warn!(appservice = %registration.id, path, error = %err, "third-party lookup failed")
            }
        }
    }
    results
}

/// Fetches a protocol's description, merging the `instances` of every
/// application service that provides it.
async fn protocol_description(services: &Services, protocol: &str) -> Option<Value> {
    let mut merged: Option<Value> = None;
    for registration in providers(services, protocol) {
        let path = format!("protocol/{}", segment(protocol));
        let description = match services.appservice_client.thirdparty(registration, &path, None).await {
            Ok(description @ Value::Object(_)) => description,
            Ok(_) => continue,
            Err(err) => {
                tracing::warn!(appservice = %registration.id, protocol, error = %err, "third-party protocol lookup failed");
                continue;
            }
        };
        match &mut merged {
            None => merged = Some(description),
            Some(existing) => {
                let instances = description.get("instances").and_then(Value::as_array).cloned().unwrap_or_default();
                if let Some(list) = existing.get_mut("instances").and_then(Value::as_array_mut) {
                    list.extend(instances);
                }
            }
        }
    }
    merged
}

/// GET /_matrix/client/v3/thirdparty/protocols
pub async fn protocols(State(services): State<Arc<Services>>, Auth(_session): Auth) -> Result<Json<Value>> {
    let mut names: Vec<&str> = services
        .appservices
        .iter()
        .flat_map(|registration| registration.protocols.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut body = Map::new();
    for name in names {
        if let Some(description) = protocol_description(&services, name).await {
            body.insert(name.to_owned(), description);
        }
    }
    Ok(Json(Value::Object(body)))
}

/// GET /_matrix/client/v3/thirdparty/protocol/{protocol}
pub async fn protocol(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    Path(protocol): Path<String>,
) -> Result<Json<Value>> {
    protocol_description(&services, &protocol)
        .await
        .map(Json)
        .ok_or_else(|| Error::not_found(format!("protocol {protocol:?} is not provided by any application service")))
}

/// GET /_matrix/client/v3/thirdparty/location/{protocol}
pub async fn protocol_locations(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    lookup_in_protocol(&services, "location", &protocol, query).await
}

/// GET /_matrix/client/v3/thirdparty/user/{protocol}
pub async fn protocol_users(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    Path(protocol): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    lookup_in_protocol(&services, "user", &protocol, query).await
}

async fn lookup_in_protocol(
    services: &Services,
    kind: &str,
    protocol: &str,
    query: Option<String>,
) -> Result<Json<Value>> {
    let registrations = providers(services, protocol);
    if registrations.is_empty() {
        return Err(Error::not_found(format!("protocol {protocol:?} is not provided by any application service")));
    }
    let path = format!("{kind}/{}", segment(protocol));
    Ok(Json(Value::Array(gather(services, &registrations, &path, &forwarded_query(query)).await)))
}

/// GET /_matrix/client/v3/thirdparty/location?alias=...
pub async fn locations_by_alias(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    reverse_lookup(&services, "location", "alias", query).await
}

/// GET /_matrix/client/v3/thirdparty/user?userid=...
pub async fn users_by_id(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    reverse_lookup(&services, "user", "userid", query).await
}

async fn reverse_lookup(
    services: &Services,
    kind: &str,
    parameter: &str,
    query: Option<String>,
) -> Result<Json<Value>> {
    let query = forwarded_query(query);
    if !url::form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == parameter) {
        return Err(Error::new(ErrorKind::MissingParam, format!("query parameter {parameter} is missing")));
    }
    let registrations: Vec<&Arc<Registration>> =
        services.appservices.iter().filter(|registration| !registration.protocols.is_empty()).collect();
    Ok(Json(Value::Array(gather(services, &registrations, kind, &query).await)))
}
