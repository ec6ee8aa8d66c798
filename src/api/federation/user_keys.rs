//! Devices and encryption keys of local users for other servers (spec:
//! Server-Server API, "Device Management" and "End-to-End Encryption"):
//! `GET /_matrix/federation/v1/user/devices/{userId}`,
//! `POST /_matrix/federation/v1/user/keys/query` and `/user/keys/claim`.
//! Responses to another server contain the owner's signatures only, and
//! never the user-signing key.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use ruma::UserId;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::FederationAuth;
use crate::{
    Services,
    api::Path,
    e2ee::{self, QueryResponse},
    error::{Error, Result},
    storage,
};

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/federation/v1/user/devices/{user_id}", get(user_devices))
        .route("/_matrix/federation/v1/user/keys/query", post(keys_query))
        .route("/_matrix/federation/v1/user/keys/claim", post(keys_claim))
}

/// Parses the body of a signed request, naming the field that is wrong.
fn parse_body<T: DeserializeOwned>(auth: &FederationAuth) -> Result<T> {
    let value: Value = if auth.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&auth.body).map_err(|e| Error::bad_json(format!("request body is not JSON: {e}")))?
    };
    serde_path_to_error::deserialize(value)
        .map_err(|e| Error::bad_json(format!("invalid request body: field {}: {}", e.path(), e.inner())))
}

/// Parses a user id that must belong to this server.
fn local_user(services: &Services, field: &str, user: &str) -> Result<ruma::OwnedUserId> {
    let user_id = UserId::parse(user)
        .map_err(|e| Error::invalid_param(format!("{field}: {user:?} is not a valid user id: {e}")))?;
    if user_id.server_name() != services.server_name {
        return Err(Error::invalid_param(format!("{field}: {user_id} is not a user of this server")));
    }
    Ok(user_id)
}

/// GET /_matrix/federation/v1/user/devices/{userId}
async fn user_devices(
    State(services): State<Arc<Services>>,
    Path(user): Path<String>,
    _auth: FederationAuth,
) -> Result<Json<Value>> {
    let user_id = local_user(&services, "userId", &user)?;
    let pool = &services.db.pool;
    let stream_id = storage::e2ee_federation::latest_outbound(pool, user_id.as_str()).await?;
    let keys = e2ee::local_user_keys(&services, user_id.as_str(), &[], None).await?;
    let mut devices = Vec::new();
    for (device_id, mut device_keys) in keys.devices {
        let name = device_keys.pointer("/unsigned/device_display_name").cloned();
        if let Some(map) = device_keys.as_object_mut() {
            map.remove("unsigned");
        }
        let mut device = json!({ "device_id": device_id, "keys": device_keys });
        if let Some(name) = name {
            device["device_display_name"] = name;
        }
        devices.push(device);
    }
    let mut response = json!({ "user_id": user_id, "stream_id": stream_id, "devices": devices });
    if let Some(master) = keys.master {
        response["master_key"] = master;
    }
    if let Some(self_signing) = keys.self_signing {
        response["self_signing_key"] = self_signing;
    }
    Ok(Json(response))
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

/// POST /_matrix/federation/v1/user/keys/query
async fn keys_query(State(services): State<Arc<Services>>, auth: FederationAuth) -> Result<Json<Value>> {
    let body: QueryBody = parse_body(&auth)?;
    let mut response = QueryResponse::default();
    for (user, requested) in &body.device_keys {
        let user_id = local_user(&services, "device_keys", user)?;
        let keys = e2ee::local_user_keys(&services, user_id.as_str(), requested, None).await?;
        response.add(user, keys);
    }
    Ok(Json(json!({
        "device_keys": response.device_keys,
        "master_keys": response.master_keys,
        "self_signing_keys": response.self_signing_keys,
    })))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// POST /_matrix/federation/v1/user/keys/claim
async fn keys_claim(State(services): State<Arc<Services>>, auth: FederationAuth) -> Result<Json<Value>> {
    let body: ClaimBody = parse_body(&auth)?;
    let mut requested = Vec::new();
    for (user, devices) in body.one_time_keys {
        local_user(&services, "one_time_keys", &user)?;
        for (device, algorithm) in devices {
            requested.push((user.clone(), device, algorithm));
        }
    }
    let keys = e2ee::claim_local(&services, requested).await?;
    Ok(Json(json!({ "one_time_keys": keys })))
}
