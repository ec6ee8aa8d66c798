//! Device management (spec: Client-Server API, "Device management").

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::uiaa;
use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    storage,
};

fn device_json(device: &storage::users::DeviceRow) -> Value {
    json!({
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ts": device.last_seen_ts,
        "last_seen_ip": device.last_seen_ip,
    })
}

/// GET /_matrix/client/v3/devices
pub async fn list(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let devices = storage::users::devices(&services.db.pool, session.user_id.as_str()).await?;
    Ok(Json(json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() })))
}

/// GET /_matrix/client/v3/devices/{deviceId}
pub async fn get(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
) -> Result<Json<Value>> {
    let devices = storage::users::devices(&services.db.pool, session.user_id.as_str()).await?;
    devices
        .iter()
        .find(|d| d.device_id == device_id)
        .map(|d| Json(device_json(d)))
        .ok_or_else(|| Error::not_found(format!("device {device_id} not found")))
}

#[derive(Deserialize)]
pub struct UpdateBody {
    display_name: Option<String>,
}

/// PUT /_matrix/client/v3/devices/{deviceId}
pub async fn update(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<Value>> {
    if body.display_name.as_ref().is_some_and(|n| n.len() > 100) {
        return Err(Error::bad_json("display_name is longer than 100 bytes"));
    }
    let updated = storage::users::set_device_name(
        &services.db.pool,
        session.user_id.as_str(),
        &device_id,
        body.display_name.as_deref(),
    )
    .await?;
    if !updated {
        return Err(Error::not_found(format!("device {device_id} not found")));
    }
    crate::e2ee::device_renamed(&services, &session.user_id, &device_id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    auth: Option<Value>,
}

/// DELETE /_matrix/client/v3/devices/{deviceId}
pub async fn delete(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(device_id): Path<String>,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Json<Value>> {
    let devices = storage::users::devices(&services.db.pool, session.user_id.as_str()).await?;
    if !devices.iter().any(|d| d.device_id == device_id) {
        return Err(Error::not_found(format!("device {device_id} not found")));
    }
    services.uiaa.check(&services, body.auth.as_ref(), &[vec![uiaa::PASSWORD]], Some(&session.user_id)).await?;
    let devices = [device_id];
    services.users.delete_devices(&session.user_id, &devices).await?;
    crate::e2ee::devices_deleted(&services, &session.user_id, &devices).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteManyBody {
    auth: Option<Value>,
    devices: Vec<String>,
}

/// POST /_matrix/client/v3/delete_devices
pub async fn delete_many(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<DeleteManyBody>,
) -> Result<Json<Value>> {
    services.uiaa.check(&services, body.auth.as_ref(), &[vec![uiaa::PASSWORD]], Some(&session.user_id)).await?;
    services.users.delete_devices(&session.user_id, &body.devices).await?;
    crate::e2ee::devices_deleted(&services, &session.user_id, &body.devices).await?;
    Ok(Json(json!({})))
}
