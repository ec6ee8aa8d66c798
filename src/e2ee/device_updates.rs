//! Device lists over federation (spec: Server-Server API, "Device
//! Management" and "End-to-End Encryption"). The `m.device_list_update` and
//! `m.signing_key_update` EDUs announce a local user's changes to the servers
//! sharing a room with them. The same EDUs from other servers keep the cache
//! of remote device lists current.
//!
//! Each update of a local user's device takes a position on the device-list
//! stream; that position is the EDU's `stream_id`, and the user's previous
//! update is its `prev_id`. A received update applies to the cached list
//! when its `prev_id` holds nothing newer than the cached `stream_id`;
//! otherwise an update was missed and the list is fetched again with
//! `GET /_matrix/federation/v1/user/devices/{userId}`.

use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{Value, json};

use super::{local_user_keys, mark_changed, remote, wake_device_list_watchers};
use crate::{
    Services,
    error::{Error, Result},
    storage::{self, WriteTxn, now_ms, writer::Stream},
};

/// One update of a local user's device, as recorded in its write.
#[derive(Debug, Clone)]
pub struct DeviceChange {
    pub device_id: String,
    pub stream_id: i64,
    pub prev_id: Option<i64>,
}

/// Marks a device of a local user as changed inside a write: a position on
/// the device-list stream, which `/sync` reports and which numbers the
/// update for other servers.
pub async fn mark_device_changed(txn: &mut WriteTxn, user_id: &str, device_id: &str) -> Result<DeviceChange> {
    let stream_id = txn.next_position(Stream::DeviceLists);
    storage::e2ee::mark_device_list_change(&mut txn.conn, stream_id, user_id).await?;
    let prev_id = storage::e2ee_federation::record_outbound(&mut txn.conn, user_id, stream_id, device_id).await?;
    Ok(DeviceChange { device_id: device_id.to_owned(), stream_id, prev_id })
}

/// The other servers with a member in a room where the user is joined.
pub async fn servers_sharing_rooms(services: &Services, user_id: &UserId) -> Result<Vec<OwnedServerName>> {
    let mut servers: Vec<OwnedServerName> = Vec::new();
    for user in storage::rooms::users_sharing_rooms(&services.db.pool, user_id.as_str()).await? {
        let Ok(user) = UserId::parse(&user) else { continue };
        let server = user.server_name();
        if server != services.server_name && !servers.iter().any(|s| s == server) {
            servers.push(server.to_owned());
        }
    }
    Ok(servers)
}

async fn queue(services: &Services, servers: &[OwnedServerName], edu: &Value) {
    for server in servers {
        if let Err(err) = services.sender.queue_edu(server, edu).await {
            tracing::warn!(error = %err, destination = %server, "could not queue a device-list EDU");
        }
    }
}

/// Sends `m.device_list_update` EDUs for committed changes of a local user's
/// devices to every server that shares a room with the user. A device that
/// no longer exists is announced as deleted.
pub async fn announce_devices(services: &Services, user_id: &UserId, changes: &[DeviceChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let servers = servers_sharing_rooms(services, user_id).await?;
    if servers.is_empty() {
        return Ok(());
    }
    let keys = local_user_keys(services, user_id.as_str(), &[], None).await?;
    let devices = storage::users::devices(&services.db.pool, user_id.as_str()).await?;
    for change in changes {
        let mut content = json!({
            "user_id": user_id,
            "device_id": change.device_id,
            "stream_id": change.stream_id,
            "prev_id": change.prev_id.into_iter().collect::<Vec<_>>(),
        });
        match devices.iter().find(|d| d.device_id == change.device_id) {
            Some(device) => {
                if let Some(name) = &device.display_name {
                    content["device_display_name"] = json!(name);
                }
                if let Some(mut device_keys) = keys.devices.get(&change.device_id).cloned() {
                    if let Some(map) = device_keys.as_object_mut() {
                        map.remove("unsigned");
                    }
                    content["keys"] = device_keys;
                }
            }
            None => content["deleted"] = json!(true),
        }
        queue(services, &servers, &json!({ "edu_type": "m.device_list_update", "content": content })).await;
    }
    Ok(())
}

/// Sends an `m.signing_key_update` EDU with a local user's current master and
/// self-signing keys to every server that shares a room with the user.
pub async fn announce_signing_keys(services: &Services, user_id: &UserId) -> Result<()> {
    let servers = servers_sharing_rooms(services, user_id).await?;
    if servers.is_empty() {
        return Ok(());
    }
    let keys = local_user_keys(services, user_id.as_str(), &[], None).await?;
    let mut content = json!({ "user_id": user_id });
    if let Some(master) = keys.master {
        content["master_key"] = master;
    }
    if let Some(self_signing) = keys.self_signing {
        content["self_signing_key"] = self_signing;
    }
    queue(services, &servers, &json!({ "edu_type": "m.signing_key_update", "content": content })).await;
    Ok(())
}

/// Whether a user of another server shares a room with a local user, so
/// that its server sends this server the user's device-list updates.
pub async fn is_tracked(services: &Services, user_id: &UserId) -> Result<bool> {
    let sharing = storage::rooms::users_sharing_rooms(&services.db.pool, user_id.as_str()).await?;
    Ok(sharing.iter().any(|u| UserId::parse(u).is_ok_and(|u| u.server_name() == services.server_name)))
}

/// Reads the `user_id` of an EDU's content and checks that it belongs to the origin.
fn origin_user(content: &Value, origin: &ServerName) -> Result<OwnedUserId> {
    let user_id = content["user_id"]
        .as_str()
        .and_then(|id| UserId::parse(id).ok())
        .ok_or_else(|| Error::bad_json("user_id is missing or invalid"))?;
    if user_id.server_name() != origin {
        return Err(Error::forbidden(format!("{user_id} does not belong to {origin}")));
    }
    Ok(user_id)
}

/// Marks a remote user's device list as changed for the local users who
/// share a room with them, and wakes their `/sync`.
async fn announce_locally(services: &Services, user_id: &UserId) -> Result<()> {
    let user = user_id.to_string();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                mark_changed(txn, &user).await?;
                Ok(())
            })
        })
        .await?;
    wake_device_list_watchers(services, user_id).await
}

/// What an `m.device_list_update` does to the cached list.
enum Step {
    /// The update is already in the cache.
    Seen,
    /// The update follows the cached list: apply it.
    Apply,
    /// An earlier update is missing: fetch the whole list again.
    Resync,
    /// The user's list is not cached: only tell local clients.
    NotCached,
}

fn step(cached: Option<i64>, stream_id: i64, prev_id: &[i64]) -> Step {
    match cached {
        None => Step::NotCached,
        Some(current) if stream_id <= current => Step::Seen,
        Some(current) if prev_id.iter().all(|p| *p <= current) => Step::Apply,
        Some(_) => Step::Resync,
    }
}

/// Takes in an `m.device_list_update` EDU from `origin`.
pub async fn receive_device_list_update(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    let user_id = origin_user(content, origin)?;
    let device_id = content["device_id"]
        .as_str()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| Error::bad_json("device_id is missing or not a string"))?
        .to_owned();
    let stream_id = content["stream_id"].as_i64().ok_or_else(|| Error::bad_json("stream_id is not an integer"))?;
    let prev_id: Vec<i64> = match &content["prev_id"] {
        Value::Null => Vec::new(),
        Value::Array(ids) => ids.iter().filter_map(Value::as_i64).collect(),
        _ => return Err(Error::bad_json("prev_id is not an array")),
    };
    if !is_tracked(services, &user_id).await? {
        tracing::debug!(%user_id, "ignoring a device-list update of a user who shares no room here");
        return Ok(());
    }
    let cached = storage::e2ee_federation::remote_stream_id(&services.db.pool, user_id.as_str()).await?;
    match step(cached, stream_id, &prev_id) {
        Step::Seen => Ok(()),
        Step::NotCached => announce_locally(services, &user_id).await,
        Step::Resync => {
            tracing::info!(%user_id, stream_id, ?prev_id, "missed a device-list update; fetching the list again");
            if let Err(err) = remote::resync(services, &user_id).await {
                // The list can no longer be trusted: drop it, so queries ask the origin.
                tracing::info!(%user_id, error = %err, "could not fetch a device list; dropping the cached one");
                let user = user_id.to_string();
                services
                    .db
                    .writer
                    .write(move |txn| {
                        Box::pin(async move {
                            storage::e2ee_federation::drop_remote_list(&mut txn.conn, &user).await?;
                            Ok(())
                        })
                    })
                    .await?;
            }
            announce_locally(services, &user_id).await
        }
        Step::Apply => {
            let deleted = content["deleted"].as_bool().unwrap_or(false);
            let keys = content
                .get("keys")
                .filter(|k| remote::device_keys_belong(k, user_id.as_str(), &device_id))
                .map(|k| k.to_string());
            let display_name = content["device_display_name"].as_str().map(str::to_owned);
            let user = user_id.to_string();
            services
                .db
                .writer
                .write(move |txn| {
                    Box::pin(async move {
                        let conn = &mut txn.conn;
                        match keys {
                            Some(keys) if !deleted => {
                                storage::e2ee_federation::put_remote_device(
                                    conn,
                                    &user,
                                    &device_id,
                                    display_name.as_deref(),
                                    &keys,
                                )
                                .await?;
                            }
                            _ => storage::e2ee_federation::delete_remote_device(conn, &user, &device_id).await?,
                        }
                        storage::e2ee_federation::set_remote_stream_id(conn, &user, stream_id, now_ms()).await?;
                        mark_changed(txn, &user).await?;
                        Ok(())
                    })
                })
                .await?;
            wake_device_list_watchers(services, &user_id).await
        }
    }
}

/// Takes in an `m.signing_key_update` EDU from `origin`: the cached master
/// and self-signing keys of the user are replaced by those in it.
pub async fn receive_signing_key_update(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    let user_id = origin_user(content, origin)?;
    if !is_tracked(services, &user_id).await? {
        return Ok(());
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for (field, key_type) in [("master_key", "master"), ("self_signing_key", "self_signing")] {
        if let Some(key) = content.get(field).filter(|k| !k.is_null()) {
            if !remote::cross_signing_key_belongs(key, user_id.as_str(), key_type) {
                return Err(Error::bad_json(format!("{field} is not a {key_type} key of {user_id}")));
            }
            keys.push((key_type.to_owned(), key.to_string()));
        }
    }
    let cached = storage::e2ee_federation::remote_stream_id(&services.db.pool, user_id.as_str()).await?.is_some();
    let user = user_id.to_string();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                if cached {
                    for (key_type, json) in &keys {
                        storage::e2ee_federation::put_remote_cross_signing_key(&mut txn.conn, &user, key_type, json)
                            .await?;
                    }
                }
                mark_changed(txn, &user).await?;
                Ok(())
            })
        })
        .await?;
    wake_device_list_watchers(services, &user_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_applies_only_on_top_of_what_is_cached() {
        assert!(matches!(step(None, 5, &[4]), Step::NotCached));
        assert!(matches!(step(Some(5), 5, &[4]), Step::Seen));
        assert!(matches!(step(Some(5), 3, &[]), Step::Seen));
        assert!(matches!(step(Some(5), 7, &[5]), Step::Apply));
        assert!(matches!(step(Some(5), 7, &[]), Step::Apply));
        assert!(matches!(step(Some(5), 9, &[7]), Step::Resync));
        assert!(matches!(step(Some(5), 9, &[5, 7]), Step::Resync));
    }
}
