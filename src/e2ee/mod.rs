//! End-to-end encryption (spec: Client-Server API, "End-to-End Encryption"):
//! device keys, one-time and fallback keys, and device-list tracking. The
//! server never sees plaintext: it stores, hands out and announces keys.
//!
//! Cross-signing lives in `cross_signing.rs`, to-device messages in
//! `to_device.rs`, key backups in `backup.rs`.

pub mod backup;
pub mod cross_signing;
pub mod device_lists;
pub mod device_updates;
pub mod remote;
pub mod to_device;

use std::collections::{BTreeMap, HashMap};

use ruma::{UserId, signatures::SigningKeyAlgorithm};
use serde_json::{Map, Value, json};

use crate::{
    Services,
    error::{Error, ErrorKind, Result},
    storage::{self, WriteTxn, writer::Stream},
    users::Session,
};

/// The algorithm whose one-time key count `/sync` and `/keys/upload` always report.
const SIGNED_CURVE25519: &str = "signed_curve25519";

/// Builds a 400 `M_INVALID_SIGNATURE` error.
pub fn invalid_signature(message: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Custom {
            errcode: "M_INVALID_SIGNATURE".into(),
            status: axum::http::StatusCode::BAD_REQUEST,
            extra: Map::new(),
        },
        message,
    )
}

/// Decodes unpadded (or padded) standard base64, as keys and signatures use.
fn decode_base64(input: &str) -> Option<Vec<u8>> {
    use base64::{
        Engine,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(input).ok()
}

/// Checks the ed25519 signature `signature` by `public_key` on a signed JSON
/// object (without its `signatures` and `unsigned`), both in unpadded base64.
pub fn verify_signature(object: &Value, public_key: &str, signature: &str) -> bool {
    let Ok(canonical) = serde_json::from_value::<ruma::CanonicalJsonObject>(object.clone()) else {
        return false;
    };
    let Ok(signed) = ruma::signatures::to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    let (Some(key), Some(sig)) = (decode_base64(public_key), decode_base64(signature)) else {
        return false;
    };
    ruma::signatures::verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &key, &sig, signed.as_bytes()).is_ok()
}

/// Strips `signatures` and `unsigned` from a key object, leaving what a signature covers.
pub fn signed_part(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

/// Splits `<algorithm>:<key_id>`.
fn split_key_name<'a>(field: &str, name: &'a str) -> Result<(&'a str, &'a str)> {
    match name.split_once(':') {
        Some((algorithm, key_id)) if !algorithm.is_empty() && !key_id.is_empty() => Ok((algorithm, key_id)),
        _ => Err(Error::bad_json(format!("{field}: key name {name:?} is not of the form <algorithm>:<key_id>"))),
    }
}

/// The body of `POST /keys/upload`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct UploadRequest {
    pub device_keys: Option<Map<String, Value>>,
    #[serde(default)]
    pub one_time_keys: Map<String, Value>,
    #[serde(default)]
    pub fallback_keys: Map<String, Value>,
}

/// Checks uploaded device keys against the spec's shape and the caller's session.
fn check_device_keys(session: &Session, keys: &Map<String, Value>) -> Result<()> {
    let field = |name: &str| keys.get(name);
    match field("user_id").and_then(Value::as_str) {
        Some(user) if user == session.user_id.as_str() => {}
        Some(user) => {
            return Err(Error::invalid_param(format!(
                "device_keys.user_id {user:?} does not match the logged-in user {}",
                session.user_id
            )));
        }
        None => {
            return Err(Error::bad_json("device_keys.user_id is missing or not a string"));
        }
    }
    match field("device_id").and_then(Value::as_str) {
        Some(device) if device == session.device_id => {}
        Some(device) => {
            return Err(Error::invalid_param(format!(
                "device_keys.device_id {device:?} does not match the logged-in device {}",
                session.device_id
            )));
        }
        None => {
            return Err(Error::bad_json("device_keys.device_id is missing or not a string"));
        }
    }
    if !field("algorithms").is_some_and(|a| a.as_array().is_some_and(|a| a.iter().all(Value::is_string))) {
        return Err(Error::bad_json("device_keys.algorithms must be an array of strings"));
    }
    let Some(key_map) = field("keys").and_then(Value::as_object) else {
        return Err(Error::bad_json("device_keys.keys must be an object"));
    };
    for (name, value) in key_map {
        split_key_name("device_keys.keys", name)?;
        if !value.is_string() {
            return Err(Error::bad_json(format!("device_keys.keys.{name} must be a string")));
        }
    }
    if !field("signatures").is_some_and(Value::is_object) {
        return Err(Error::bad_json("device_keys.signatures must be an object"));
    }
    Ok(())
}

/// Marks a user's device list as changed inside a write.
pub async fn mark_changed(txn: &mut WriteTxn, user_id: &str) -> Result<()> {
    let position = txn.next_position(Stream::DeviceLists);
    storage::e2ee::mark_device_list_change(&mut txn.conn, position, user_id).await?;
    Ok(())
}

/// Wakes the `/sync` of a user and of everyone who shares a room with them,
/// after a change of the user's devices or keys.
pub async fn wake_device_list_watchers(services: &Services, user_id: &UserId) -> Result<()> {
    let users = storage::e2ee::users_sharing_rooms(&services.db.pool, user_id.as_str()).await?;
    let users: Vec<ruma::OwnedUserId> = users.into_iter().filter_map(|u| ruma::OwnedUserId::try_from(u).ok()).collect();
    services.notifier.wake(users.iter().map(|u| &**u).chain([user_id]));
    Ok(())
}

fn counts_json(counts: Vec<(String, i64)>) -> BTreeMap<String, i64> {
    let mut map: BTreeMap<String, i64> = counts.into_iter().collect();
    map.entry(SIGNED_CURVE25519.to_owned()).or_insert(0);
    map
}

/// `POST /keys/upload`: stores device keys, one-time keys and fallback keys of
/// the caller's device, all or nothing, and returns the one-time key counts.
pub async fn upload(services: &Services, session: &Session, request: UploadRequest) -> Result<Value> {
    if let Some(keys) = &request.device_keys {
        check_device_keys(session, keys)?;
    }
    let mut one_time = Vec::new();
    for (name, value) in &request.one_time_keys {
        let (algorithm, key_id) = split_key_name("one_time_keys", name)?;
        if !(value.is_string() || value.is_object()) {
            return Err(Error::bad_json(format!("one_time_keys.{name} must be a string or an object")));
        }
        one_time.push((algorithm.to_owned(), key_id.to_owned(), value.to_string()));
    }
    let mut fallback: HashMap<String, (String, String)> = HashMap::new();
    for (name, value) in &request.fallback_keys {
        let (algorithm, key_id) = split_key_name("fallback_keys", name)?;
        if !(value.is_string() || value.is_object()) {
            return Err(Error::bad_json(format!("fallback_keys.{name} must be a string or an object")));
        }
        if fallback.insert(algorithm.to_owned(), (key_id.to_owned(), value.to_string())).is_some() {
            return Err(Error::invalid_param(format!(
                "fallback_keys contains more than one key of algorithm {algorithm}: upload one per algorithm"
            )));
        }
    }

    let user = session.user_id.to_string();
    let device = session.device_id.clone();
    let device_keys = request.device_keys.map(|mut keys| {
        keys.remove("unsigned");
        Value::Object(keys)
    });
    let (counts, changed) = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let mut changed = None;
                if let Some(keys) = device_keys {
                    let existing = storage::e2ee::device_keys(&mut txn.conn, &user, &device).await?;
                    let same = existing.and_then(|e| serde_json::from_str::<Value>(&e).ok()).is_some_and(|e| e == keys);
                    if !same {
                        storage::e2ee::put_device_keys(&mut txn.conn, &user, &device, &keys.to_string()).await?;
                        changed = Some(device_updates::mark_device_changed(txn, &user, &device).await?);
                    }
                }
                let seq = storage::e2ee::next_upload_seq(&mut txn.conn, &user, &device).await?;
                for (algorithm, key_id, json) in &one_time {
                    if let Some(existing) =
                        storage::e2ee::one_time_key(&mut txn.conn, &user, &device, algorithm, key_id).await?
                    {
                        let same =
                            serde_json::from_str::<Value>(&existing).ok() == serde_json::from_str::<Value>(json).ok();
                        if !same {
                            return Err(Error::invalid_param(format!(
                                "one-time key {algorithm}:{key_id} already exists with different content"
                            )));
                        }
                        continue;
                    }
                    storage::e2ee::insert_one_time_key(&mut txn.conn, &user, &device, algorithm, key_id, json, seq)
                        .await?;
                }
                for (algorithm, (key_id, json)) in &fallback {
                    storage::e2ee::put_fallback_key(&mut txn.conn, &user, &device, algorithm, key_id, json).await?;
                }
                let counts = storage::e2ee::one_time_key_counts_in_txn(&mut txn.conn, &user, &device).await?;
                Ok((counts, changed))
            })
        })
        .await?;
    if let Some(change) = changed {
        wake_device_list_watchers(services, &session.user_id).await?;
        device_updates::announce_devices(services, &session.user_id, &[change]).await?;
    }
    Ok(json!({ "one_time_key_counts": counts_json(counts) }))
}

/// One-time key counts and unused fallback key types of a device, for `/sync`.
pub async fn sync_key_state(services: &Services, session: &Session) -> Result<(BTreeMap<String, i64>, Vec<String>)> {
    let pool = &services.db.pool;
    let counts = storage::e2ee::one_time_key_counts(pool, session.user_id.as_str(), &session.device_id).await?;
    let fallback = storage::e2ee::unused_fallback_key_types(pool, session.user_id.as_str(), &session.device_id).await?;
    Ok((counts_json(counts), fallback))
}

/// Adds the signatures stored in `key_signatures` to a key object.
pub(crate) fn merge_signatures(object: &mut Value, rows: &[&storage::e2ee::SignatureRow]) {
    if rows.is_empty() {
        return;
    }
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let signatures = map.entry("signatures").or_insert_with(|| json!({}));
    if !signatures.is_object() {
        *signatures = json!({});
    }
    for row in rows {
        let signer = signatures
            .as_object_mut()
            .expect("signatures is an object")
            .entry(row.signer_user_id.clone())
            .or_insert_with(|| json!({}));
        if let Some(signer) = signer.as_object_mut() {
            signer.insert(row.signer_key_id.clone(), json!(row.signature));
        }
    }
}

/// The body of `POST /keys/query`. `timeout` (milliseconds) bounds the wait
/// for other servers.
#[derive(Debug, serde::Deserialize)]
pub struct QueryRequest {
    pub device_keys: BTreeMap<String, Vec<String>>,
    pub timeout: Option<u64>,
}

/// The keys of one local user, as `/keys/query` and the federation key
/// endpoints return them.
#[derive(Debug, Default)]
pub struct UserKeys {
    /// Device id to device keys, with `unsigned.device_display_name`.
    pub devices: Map<String, Value>,
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// Loads a local user's device keys (every device, or those in `requested`)
/// and cross-signing keys, with the signatures of the owner and of `viewer`.
/// The user-signing key is there only when the viewer is the owner; another
/// server (`viewer` `None`) sees the owner's signatures only.
pub async fn local_user_keys(
    services: &Services,
    user: &str,
    requested: &[String],
    viewer: Option<&str>,
) -> Result<UserKeys> {
    let pool = &services.db.pool;
    let mut keys = UserKeys::default();
    let signatures = storage::e2ee::signatures_for(pool, user, viewer.unwrap_or(user)).await?;
    for row in storage::e2ee::user_device_keys(pool, user).await? {
        if !requested.is_empty() && !requested.contains(&row.device_id) {
            continue;
        }
        let Ok(mut device) = serde_json::from_str::<Value>(&row.key_json) else {
            continue;
        };
        let own: Vec<_> = signatures.iter().filter(|s| s.target_key_id == row.device_id).collect();
        merge_signatures(&mut device, &own);
        if let Some(map) = device.as_object_mut() {
            let mut unsigned = Map::new();
            if let Some(name) = &row.display_name {
                unsigned.insert("device_display_name".into(), json!(name));
            }
            map.insert("unsigned".into(), Value::Object(unsigned));
        }
        keys.devices.insert(row.device_id, device);
    }
    for (key_type, public_key, key_json) in storage::e2ee::cross_signing_keys(pool, user).await? {
        let Ok(mut key) = serde_json::from_str::<Value>(&key_json) else {
            continue;
        };
        let on_key: Vec<_> = signatures.iter().filter(|s| s.target_key_id == public_key).collect();
        merge_signatures(&mut key, &on_key);
        match key_type.as_str() {
            "master" => keys.master = Some(key),
            "self_signing" => keys.self_signing = Some(key),
            "user_signing" if viewer == Some(user) => keys.user_signing = Some(key),
            _ => {}
        }
    }
    Ok(keys)
}

/// The response of a keys query, local and remote answers merged.
#[derive(Debug, Default)]
pub struct QueryResponse {
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    pub user_signing_keys: Map<String, Value>,
    pub failures: Map<String, Value>,
}

impl QueryResponse {
    /// Adds one user's keys.
    pub fn add(&mut self, user: &str, keys: UserKeys) {
        self.device_keys.insert(user.to_owned(), Value::Object(keys.devices));
        for (map, key) in [
            (&mut self.master_keys, keys.master),
            (&mut self.self_signing_keys, keys.self_signing),
            (&mut self.user_signing_keys, keys.user_signing),
        ] {
            if let Some(key) = key {
                map.insert(user.to_owned(), key);
            }
        }
    }

    pub fn into_json(self) -> Value {
        json!({
            "failures": self.failures,
            "device_keys": self.device_keys,
            "master_keys": self.master_keys,
            "self_signing_keys": self.self_signing_keys,
            "user_signing_keys": self.user_signing_keys,
        })
    }
}

/// `POST /keys/query`: device keys and cross-signing keys. Local users are
/// read here; users of other servers are asked of their servers in parallel
/// (or read from the cache of tracked device lists, see [`remote`]), and
/// servers that do not answer in time are listed in `failures`. The
/// user-signing key is only shown to its owner; signatures on someone's keys
/// are those of the owner and of the caller.
pub async fn query(services: &Services, session: &Session, request: QueryRequest) -> Result<Value> {
    let viewer = session.user_id.as_str();
    let mut response = QueryResponse::default();
    let mut remote_users: BTreeMap<ruma::OwnedServerName, Vec<(ruma::OwnedUserId, Vec<String>)>> = BTreeMap::new();
    for (user, requested) in &request.device_keys {
        let user_id = UserId::parse(user)
            .map_err(|e| Error::bad_json(format!("device_keys: {user:?} is not a valid user id: {e}")))?;
        if user_id.server_name() != services.server_name {
            remote_users.entry(user_id.server_name().to_owned()).or_default().push((user_id, requested.clone()));
            continue;
        }
        let keys = local_user_keys(services, user, requested, Some(viewer)).await?;
        response.add(user, keys);
    }
    if !remote_users.is_empty() {
        remote::query(services, viewer, remote_users, remote::timeout(request.timeout), &mut response).await;
    }
    Ok(response.into_json())
}

/// The body of `POST /keys/claim`. `timeout` (milliseconds) bounds the wait
/// for other servers.
#[derive(Debug, serde::Deserialize)]
pub struct ClaimRequest {
    pub one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    pub timeout: Option<u64>,
}

/// Claimed keys: user, device, `<algorithm>:<key_id>`, key object.
pub type ClaimedKeys = BTreeMap<String, BTreeMap<String, Map<String, Value>>>;

/// Claims, for each `(user, device, algorithm)` of a local user, the oldest
/// one-time key of the algorithm, or else its fallback key, which is then
/// marked used.
pub async fn claim_local(services: &Services, requested: Vec<(String, String, String)>) -> Result<ClaimedKeys> {
    let claimed = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let mut claimed = Vec::new();
                for (user, device, algorithm) in requested {
                    let key = match storage::e2ee::claim_one_time_key(&mut txn.conn, &user, &device, &algorithm).await?
                    {
                        Some(key) => Some(key),
                        None => storage::e2ee::claim_fallback_key(&mut txn.conn, &user, &device, &algorithm).await?,
                    };
                    if let Some((key_id, json)) = key {
                        claimed.push((user, device, format!("{algorithm}:{key_id}"), json));
                    }
                }
                Ok(claimed)
            })
        })
        .await?;
    let mut keys = ClaimedKeys::new();
    for (user, device, name, json) in claimed {
        let value = serde_json::from_str(&json).unwrap_or(Value::Null);
        keys.entry(user).or_default().entry(device).or_default().insert(name, value);
    }
    Ok(keys)
}

/// `POST /keys/claim`: one key per requested device, see [`claim_local`].
/// Keys of users on other servers are claimed from those servers in
/// parallel; servers that do not answer in time are listed in `failures`.
pub async fn claim(services: &Services, request: ClaimRequest) -> Result<Value> {
    let mut requested = Vec::new();
    let mut remote_requests: BTreeMap<ruma::OwnedServerName, Map<String, Value>> = BTreeMap::new();
    for (user, devices) in request.one_time_keys {
        let user_id = UserId::parse(&user)
            .map_err(|e| Error::bad_json(format!("one_time_keys: {user:?} is not a valid user id: {e}")))?;
        if user_id.server_name() != services.server_name {
            remote_requests.entry(user_id.server_name().to_owned()).or_default().insert(user, json!(devices));
            continue;
        }
        for (device, algorithm) in devices {
            requested.push((user.clone(), device, algorithm));
        }
    }
    let mut keys = claim_local(services, requested).await?;
    let mut failures = Map::new();
    if !remote_requests.is_empty() {
        remote::claim(services, remote_requests, remote::timeout(request.timeout), &mut keys, &mut failures).await;
    }
    Ok(json!({ "one_time_keys": keys, "failures": failures }))
}

/// Removes the keys and pending messages of deleted devices and announces the
/// change to everyone who tracks the user's devices.
pub async fn devices_deleted(services: &Services, user_id: &UserId, device_ids: &[String]) -> Result<()> {
    if device_ids.is_empty() {
        return Ok(());
    }
    let user = user_id.to_string();
    let devices = device_ids.to_vec();
    let changes = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let mut changes = Vec::new();
                for device in &devices {
                    storage::e2ee::delete_device(&mut txn.conn, &user, device).await?;
                    changes.push(device_updates::mark_device_changed(txn, &user, device).await?);
                }
                Ok(changes)
            })
        })
        .await?;
    wake_device_list_watchers(services, user_id).await?;
    device_updates::announce_devices(services, user_id, &changes).await
}

/// Announces a device's new display name, when the device has keys: other
/// clients show the name beside the keys, so it is a device-list change.
pub async fn device_renamed(services: &Services, user_id: &UserId, device_id: &str) -> Result<()> {
    let user = user_id.to_string();
    let device = device_id.to_owned();
    let change = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                if storage::e2ee::device_keys(&mut txn.conn, &user, &device).await?.is_none() {
                    return Ok(None);
                }
                Ok(Some(device_updates::mark_device_changed(txn, &user, &device).await?))
            })
        })
        .await?;
    if let Some(change) = change {
        wake_device_list_watchers(services, user_id).await?;
        device_updates::announce_devices(services, user_id, &[change]).await?;
    }
    Ok(())
}
