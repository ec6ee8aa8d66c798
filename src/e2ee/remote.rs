//! Keys of users on other servers (spec: Server-Server API, "End-to-End
//! Encryption" and "Device Management"). A client's `/keys/query` and
//! `/keys/claim` for such users go to their servers, one request per server,
//! all in parallel and bounded by the request's `timeout`. A server that
//! fails or does not respond in time is listed in `failures`.
//!
//! The device lists of remote users who share a room with a local user are
//! cached: their servers announce every change with `m.device_list_update`
//! (see [`super::device_updates`]), so the cache stays current and queries
//! for those users read it. The cache of such a user is filled
//! on the first query with `GET /_matrix/federation/v1/user/devices/{userId}`.

use std::time::Duration;

use futures::future::join_all;
use http::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use super::{ClaimedKeys, QueryResponse, UserKeys, device_updates::is_tracked};
use crate::{Services, storage, storage::now_ms};

/// The wait for other servers when the client gives no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The maximum wait a client may request.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Converts a request's `timeout` in milliseconds into the wait for other servers.
pub fn timeout(requested_ms: Option<u64>) -> Duration {
    requested_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis).min(MAX_TIMEOUT)
}

/// Builds the `failures` entry of a server that failed or timed out.
fn failure(message: impl Into<String>) -> Value {
    json!({ "status": 503, "message": message.into() })
}

/// Checks that `keys` are device keys of `user_id`'s device `device_id`.
pub fn device_keys_belong(keys: &Value, user_id: &str, device_id: &str) -> bool {
    keys.is_object() && keys["user_id"] == user_id && keys["device_id"] == device_id && keys["keys"].is_object()
}

/// Checks that `key` is a cross-signing key of `user_id` with `usage`.
pub fn cross_signing_key_belongs(key: &Value, user_id: &str, usage: &str) -> bool {
    key["user_id"] == user_id
        && key["keys"].is_object()
        && key["usage"].as_array().is_some_and(|u| u.iter().any(|x| x == usage))
}

/// Queries each server for its users' keys and adds the results to `response`.
pub async fn query(
    services: &Services,
    viewer: &str,
    users: std::collections::BTreeMap<OwnedServerName, Vec<(OwnedUserId, Vec<String>)>>,
    wait: Duration,
    response: &mut QueryResponse,
) {
    let answers = join_all(users.into_iter().map(|(server, users)| async move {
        let answer = tokio::time::timeout(wait, query_server(services, &server, users)).await;
        (server, answer)
    }))
    .await;
    for (server, answer) in answers {
        match answer {
            Ok(Ok(keys)) => {
                for (user, mut keys) in keys {
                    if let Err(err) = add_viewer_signatures(services, viewer, &user, &mut keys).await {
                        tracing::warn!(%user, error = %err.message, "could not load signatures of a remote master key");
                    }
                    response.add(&user, keys);
                }
            }
            Ok(Err(message)) => {
                tracing::info!(%server, error = %message, "keys query to another server failed");
                response.failures.insert(server.to_string(), failure(message));
            }
            Err(_) => {
                tracing::info!(%server, "keys query to another server timed out");
                response.failures.insert(server.to_string(), failure(format!("{server} did not respond in time")));
            }
        }
    }
}

/// Adds the viewer's own signatures (made with their user-signing key) to a
/// remote user's master key. Only the viewer sees them, and they stay on this
/// server.
async fn add_viewer_signatures(
    services: &Services,
    viewer: &str,
    user: &str,
    keys: &mut UserKeys,
) -> crate::error::Result<()> {
    let Some(master) = keys.master.as_mut() else { return Ok(()) };
    let Some(public) = master["keys"].as_object().and_then(|k| k.values().next()).and_then(Value::as_str) else {
        return Ok(());
    };
    let public = public.to_owned();
    let rows = storage::e2ee::signatures_for(&services.db.pool, user, viewer).await?;
    let on_master: Vec<_> = rows.iter().filter(|r| r.signer_user_id == viewer && r.target_key_id == public).collect();
    super::merge_signatures(master, &on_master);
    Ok(())
}

/// Loads the keys of one server's users. Tracked users come from the cache
/// (filled first when empty), the others from one `/user/keys/query`.
async fn query_server(
    services: &Services,
    server: &ServerName,
    users: Vec<(OwnedUserId, Vec<String>)>,
) -> Result<Vec<(String, UserKeys)>, String> {
    let mut found = Vec::new();
    let mut ask = Map::new();
    for (user_id, requested) in users {
        if is_tracked(services, &user_id).await.map_err(|e| e.message)? {
            let pool = &services.db.pool;
            let mut cached =
                storage::e2ee_federation::remote_stream_id(pool, user_id.as_str()).await.map_err(|e| e.to_string())?;
            if cached.is_none() {
                match resync(services, &user_id).await {
                    Ok(()) => cached = Some(0),
                    Err(err) => tracing::info!(%user_id, error = %err, "could not fetch a device list to cache"),
                }
            }
            if cached.is_some() {
                found.push((user_id.to_string(), cached_keys(services, &user_id, &requested).await?));
                continue;
            }
        }
        ask.insert(user_id.to_string(), json!(requested));
    }
    if !ask.is_empty() {
        let body = json!({ "device_keys": ask });
        let answer = services
            .federation
            .send_json(server, Method::POST, "/_matrix/federation/v1/user/keys/query", Some(&body), true)
            .await
            .map_err(|e| e.to_string())?;
        for user in ask.keys() {
            found.push((user.clone(), keys_from_answer(&answer, user)));
        }
    }
    Ok(found)
}

/// Reads one user's keys from another server's `/user/keys/query` response,
/// keeping only keys that name the user (and the device) they are filed under.
fn keys_from_answer(answer: &Value, user: &str) -> UserKeys {
    let mut keys = UserKeys::default();
    if let Some(devices) = answer["device_keys"][user].as_object() {
        for (device_id, device) in devices {
            if device_keys_belong(device, user, device_id) {
                keys.devices.insert(device_id.clone(), device.clone());
            }
        }
    }
    let master = &answer["master_keys"][user];
    if cross_signing_key_belongs(master, user, "master") {
        keys.master = Some(master.clone());
    }
    let self_signing = &answer["self_signing_keys"][user];
    if cross_signing_key_belongs(self_signing, user, "self_signing") {
        keys.self_signing = Some(self_signing.clone());
    }
    keys
}

/// Reads a remote user's keys from the cache.
async fn cached_keys(services: &Services, user_id: &UserId, requested: &[String]) -> Result<UserKeys, String> {
    let pool = &services.db.pool;
    let mut keys = UserKeys::default();
    let devices = storage::e2ee_federation::remote_devices(pool, user_id.as_str()).await.map_err(|e| e.to_string())?;
    for row in devices {
        if !requested.is_empty() && !requested.contains(&row.device_id) {
            continue;
        }
        let Ok(mut device) = serde_json::from_str::<Value>(&row.key_json) else { continue };
        if let Some(map) = device.as_object_mut() {
            let mut unsigned = Map::new();
            if let Some(name) = row.display_name {
                unsigned.insert("device_display_name".into(), json!(name));
            }
            map.insert("unsigned".into(), Value::Object(unsigned));
        }
        keys.devices.insert(row.device_id, device);
    }
    let cross_signing =
        storage::e2ee_federation::remote_cross_signing_keys(pool, user_id.as_str()).await.map_err(|e| e.to_string())?;
    for (key_type, json) in cross_signing {
        let Ok(key) = serde_json::from_str::<Value>(&json) else { continue };
        match key_type.as_str() {
            "master" => keys.master = Some(key),
            "self_signing" => keys.self_signing = Some(key),
            _ => {}
        }
    }
    Ok(keys)
}

/// Fetches a remote user's whole device list with `/user/devices` and
/// replaces the cached one.
pub async fn resync(services: &Services, user_id: &UserId) -> Result<(), String> {
    let path =
        format!("/_matrix/federation/v1/user/devices/{}", utf8_percent_encode(user_id.as_str(), NON_ALPHANUMERIC));
    let answer = services
        .federation
        .send_json(user_id.server_name(), Method::GET, &path, None, true)
        .await
        .map_err(|e| e.to_string())?;

    let user = user_id.to_string();
    if answer["user_id"] != user.as_str() {
        return Err(format!("the answer is about {} instead of {user}", answer["user_id"]));
    }
    let stream_id = answer["stream_id"].as_i64().ok_or("the answer has no integer stream_id")?;
    let mut devices = Vec::new();
    for device in answer["devices"].as_array().ok_or("the answer has no devices array")? {
        let Some(device_id) = device["device_id"].as_str() else { continue };
        if !device_keys_belong(&device["keys"], &user, device_id) {
            continue;
        }
        let name = device["device_display_name"].as_str().map(str::to_owned);
        devices.push((device_id.to_owned(), name, device["keys"].to_string()));
    }

    let mut cross_signing = Vec::new();
    for (field, key_type) in [("master_key", "master"), ("self_signing_key", "self_signing")] {
        if cross_signing_key_belongs(&answer[field], &user, key_type) {
            cross_signing.push((key_type, answer[field].to_string()));
        }
    }
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let conn = &mut txn.conn;
                storage::e2ee_federation::drop_remote_list(conn, &user).await?;
                storage::e2ee_federation::set_remote_stream_id(conn, &user, stream_id, now_ms()).await?;
                for (device_id, name, json) in &devices {
                    storage::e2ee_federation::put_remote_device(conn, &user, device_id, name.as_deref(), json).await?;
                }
                for (key_type, json) in &cross_signing {
                    storage::e2ee_federation::put_remote_cross_signing_key(conn, &user, key_type, json).await?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| e.message)?;
    tracing::debug!(%user_id, stream_id, "cached a remote device list");
    Ok(())
}

/// Claims keys of each server's users with `/user/keys/claim` and adds them
/// to `keys`.
pub async fn claim(
    services: &Services,
    requests: std::collections::BTreeMap<OwnedServerName, Map<String, Value>>,
    wait: Duration,
    keys: &mut ClaimedKeys,
    failures: &mut Map<String, Value>,
) {
    let answers = join_all(requests.into_iter().map(|(server, users)| async move {
        let body = json!({ "one_time_keys": users });
        let path = "/_matrix/federation/v1/user/keys/claim";
        let answer =
            tokio::time::timeout(wait, services.federation.send_json(&server, Method::POST, path, Some(&body), true))
                .await;
        (server, answer)
    }))
    .await;
    for (server, answer) in answers {
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                tracing::info!(%server, error = %err, "keys claim to another server failed");
                failures.insert(server.to_string(), failure(err.to_string()));
                continue;
            }
            Err(_) => {
                tracing::info!(%server, "keys claim to another server timed out");
                failures.insert(server.to_string(), failure(format!("{server} did not respond in time")));
                continue;
            }
        };
        let Some(users) = answer["one_time_keys"].as_object() else { continue };
        for (user, devices) in users {
            // Only the server's own users' keys are taken.
            if !UserId::parse(user).is_ok_and(|u| u.server_name() == server) {
                continue;
            }
            let Some(devices) = devices.as_object() else { continue };
            for (device, claimed) in devices {
                if let Some(claimed) = claimed.as_object() {
                    keys.entry(user.clone()).or_default().insert(device.clone(), claimed.clone());
                }
            }
        }
    }
}
