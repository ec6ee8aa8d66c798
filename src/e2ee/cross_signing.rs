//! Cross-signing (spec: "Cross-signing"): a user's master, self-signing and
//! user-signing keys, and the signatures clients upload with them.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{Map, Value, json};

use super::{
    device_updates, invalid_signature, mark_changed, signed_part, verify_signature, wake_device_list_watchers,
};
use crate::{
    Services,
    error::{Error, Result},
    storage,
    users::Session,
};

/// The three kinds of cross-signing key, by the `usage` they carry.
const KINDS: [&str; 3] = ["master", "self_signing", "user_signing"];

/// A validated cross-signing key: its JSON and its public key.
#[derive(Debug, Clone)]
struct CrossSigningKey {
    json: Value,
    public_key: String,
}

/// Checks a key's shape: owned by the caller, the expected usage, exactly one ed25519 key.
fn parse_key(field: &str, usage: &str, user_id: &UserId, value: &Value) -> Result<CrossSigningKey> {
    let Some(object) = value.as_object() else {
        return Err(Error::bad_json(format!("{field} must be an object")));
    };
    if object.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()) {
        return Err(Error::invalid_param(format!("{field}.user_id must be the logged-in user {user_id}")));
    }
    let usages = object.get("usage").and_then(Value::as_array);
    if !usages.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage))) {
        return Err(Error::invalid_param(format!("{field}.usage must contain {usage:?}")));
    }
    let keys = object.get("keys").and_then(Value::as_object);
    let Some(keys) = keys.filter(|k| k.len() == 1) else {
        return Err(Error::invalid_param(format!("{field}.keys must hold exactly one key")));
    };
    let (name, key) = keys.iter().next().expect("one key");
    let public_key = match (name.strip_prefix("ed25519:"), key.as_str()) {
        (Some(id), Some(key)) if id == key => key.to_owned(),
        _ => {
            return Err(Error::invalid_param(format!(
                "{field}.keys must map \"ed25519:<public key>\" to the same public key"
            )));
        }
    };
    let mut json = value.clone();
    if let Some(map) = json.as_object_mut() {
        map.remove("unsigned");
    }
    Ok(CrossSigningKey { json, public_key })
}

/// Checks that `key` carries a valid signature of `user_id`'s master key `master`.
fn signed_by_master(user_id: &UserId, key: &CrossSigningKey, master: &str) -> bool {
    key.json
        .get("signatures")
        .and_then(|s| s.get(user_id.as_str()))
        .and_then(|s| s.get(format!("ed25519:{master}")))
        .and_then(Value::as_str)
        .is_some_and(|signature| verify_signature(&key.json, master, signature))
}

/// The body of `POST /keys/device_signing/upload`.
#[derive(Debug, serde::Deserialize)]
pub struct UploadRequest {
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    pub user_signing_key: Option<Value>,
    pub auth: Option<Value>,
}

/// `POST /keys/device_signing/upload`. User-interactive authentication is
/// skipped when the user has no master key yet, or when every uploaded key is
/// the one already stored (a retried upload).
pub async fn upload_keys(services: &Services, session: &Session, request: UploadRequest) -> Result<()> {
    let user_id = &session.user_id;
    let mut uploaded: Vec<(&str, CrossSigningKey)> = Vec::new();
    for (kind, value) in KINDS.iter().zip([&request.master_key, &request.self_signing_key, &request.user_signing_key]) {
        if let Some(value) = value {
            uploaded.push((kind, parse_key(&format!("{kind}_key"), kind, user_id, value)?));
        }
    }
    let existing: BTreeMap<String, (String, Value)> =
        storage::e2ee::cross_signing_keys(&services.db.pool, user_id.as_str())
            .await?
            .into_iter()
            .map(|(kind, public, json)| (kind, (public, serde_json::from_str(&json).unwrap_or(Value::Null))))
            .collect();
    let has_master = existing.contains_key("master");
    let unchanged = !uploaded.is_empty()
        && uploaded.iter().all(|(kind, key)| existing.get(*kind).is_some_and(|(_, json)| *json == key.json));
    if has_master && !unchanged {
        services
            .uiaa
            .check(services, request.auth.as_ref(), &[vec![crate::api::client::uiaa::PASSWORD]], Some(user_id))
            .await?;
    }
    if unchanged {
        return Ok(());
    }

    let master = match uploaded.iter().find(|(kind, _)| *kind == "master") {
        Some((_, key)) => Some(key.public_key.clone()),
        None => existing.get("master").map(|(public, _)| public.clone()),
    };
    for (kind, key) in &uploaded {
        if *kind == "master" {
            continue;
        }
        let Some(master) = &master else {
            return Err(Error::invalid_param(format!("{kind}_key needs a master key, and none is uploaded or stored")));
        };
        if !signed_by_master(user_id, key, master) {
            return Err(invalid_signature(format!("{kind}_key is not signed by the master key ed25519:{master}")));
        }
    }

    let user = user_id.to_string();
    let rows: Vec<(String, String, String)> =
        uploaded.into_iter().map(|(kind, key)| (kind.to_owned(), key.public_key, key.json.to_string())).collect();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                for (kind, public, json) in &rows {
                    storage::e2ee::put_cross_signing_key(&mut txn.conn, &user, kind, public, json).await?;
                }
                mark_changed(txn, &user).await?;
                Ok(())
            })
        })
        .await?;
    wake_device_list_watchers(services, user_id).await?;
    device_updates::announce_signing_keys(services, user_id).await
}

fn failure(errcode: &str, message: impl Into<String>) -> Value {
    json!({ "errcode": errcode, "error": message.into() })
}

/// A signature ready to store: `(signer key id, target user, target key id, signature)`.
type NewSignature = (String, String, String, String);

/// Loads the stored key that a signature upload names, and whether it is a device.
async fn stored_target(services: &Services, user: &str, key_id: &str) -> Result<Option<(Value, bool)>> {
    let pool = &services.db.pool;
    for row in storage::e2ee::user_device_keys(pool, user).await? {
        if row.device_id == key_id {
            return Ok(serde_json::from_str(&row.key_json).ok().map(|v| (v, true)));
        }
    }
    for (_, public, json) in storage::e2ee::cross_signing_keys(pool, user).await? {
        if public == key_id {
            return Ok(serde_json::from_str(&json).ok().map(|v| (v, false)));
        }
    }
    // A user of another server: their master key, when their device list is cached.
    for (key_type, json) in storage::e2ee_federation::remote_cross_signing_keys(pool, user).await? {
        let Ok(key) = serde_json::from_str::<Value>(&json) else { continue };
        let public = key["keys"].as_object().and_then(|keys| keys.values().next()).and_then(Value::as_str);
        if key_type == "master" && public == Some(key_id) {
            return Ok(Some((key, false)));
        }
    }
    Ok(None)
}

/// Checks the caller's new signatures on one key and returns them, or the failure.
async fn check_signatures(
    services: &Services,
    session: &Session,
    own_keys: &BTreeMap<String, String>,
    user: &str,
    key_id: &str,
    object: &Value,
) -> Result<Result<Vec<NewSignature>, Value>> {
    let signer = session.user_id.as_str();
    let Some((stored, is_device)) = stored_target(services, user, key_id).await? else {
        return Ok(Err(failure("M_NOT_FOUND", format!("user {user} has no key {key_id}"))));
    };
    if signed_part(&stored) != signed_part(object) {
        return Ok(Err(failure("M_INVALID_PARAM", "the signed object differs from the stored key")));
    }
    let Some(signatures) = object.get("signatures").and_then(|s| s.get(signer)).and_then(Value::as_object) else {
        return Ok(Err(failure("M_INVALID_PARAM", format!("the object carries no signature of {signer}"))));
    };
    let already = stored.get("signatures").and_then(|s| s.get(signer)).and_then(Value::as_object);
    let is_own = user == signer;
    let is_master =
        !is_device && stored.get("usage").and_then(Value::as_array).is_some_and(|u| u.iter().any(|x| x == "master"));
    let mut accepted = Vec::new();
    for (signer_key_id, signature) in signatures {
        if already.and_then(|a| a.get(signer_key_id)) == Some(signature) {
            continue;
        }
        let Some(signature) = signature.as_str() else {
            return Ok(Err(failure("M_INVALID_PARAM", format!("signature {signer_key_id} is not a string"))));
        };
        let Some(name) = signer_key_id.strip_prefix("ed25519:") else {
            return Ok(Err(failure(
                "M_INVALID_PARAM",
                format!("signature {signer_key_id} is not an ed25519 signature"),
            )));
        };
        // Which of the caller's keys may make this signature.
        let public_key = if is_own && is_device {
            own_keys.get("self_signing").filter(|k| k.as_str() == name).cloned()
        } else if is_own && is_master {
            device_ed25519_key(services, signer, name).await?
        } else if !is_own && is_master {
            own_keys.get("user_signing").filter(|k| k.as_str() == name).cloned()
        } else {
            None
        };
        let Some(public_key) = public_key else {
            return Ok(Err(failure(
                "M_INVALID_SIGNATURE",
                format!("{signer_key_id} is not a key that can sign this key"),
            )));
        };
        if !verify_signature(object, &public_key, signature) {
            return Ok(Err(failure("M_INVALID_SIGNATURE", format!("signature {signer_key_id} does not verify"))));
        }
        accepted.push((signer_key_id.clone(), user.to_owned(), key_id.to_owned(), signature.to_owned()));
    }
    Ok(Ok(accepted))
}

async fn device_ed25519_key(services: &Services, user: &str, device_id: &str) -> Result<Option<String>> {
    for row in storage::e2ee::user_device_keys(&services.db.pool, user).await? {
        if row.device_id == device_id {
            let keys: Value = serde_json::from_str(&row.key_json).unwrap_or(Value::Null);
            return Ok(keys.pointer(&format!("/keys/ed25519:{device_id}")).and_then(Value::as_str).map(str::to_owned));
        }
    }
    Ok(None)
}

/// `POST /keys/signatures/upload`: verifies and stores the caller's signatures
/// of their own devices (self-signing key), their own master key (a device
/// key) and other users' master keys (user-signing key). Each key that fails
/// is reported in `failures`; the others are stored.
pub async fn upload_signatures(
    services: &Services,
    session: &Session,
    request: BTreeMap<String, Map<String, Value>>,
) -> Result<Value> {
    let own_keys: BTreeMap<String, String> =
        storage::e2ee::cross_signing_keys(&services.db.pool, session.user_id.as_str())
            .await?
            .into_iter()
            .map(|(kind, public, _)| (kind, public))
            .collect();
    let mut failures: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut accepted: Vec<NewSignature> = Vec::new();
    for (user, keys) in &request {
        if UserId::parse(user).is_err() {
            return Err(Error::bad_json(format!("{user:?} is not a valid user id")));
        }
        for (key_id, object) in keys {
            match check_signatures(services, session, &own_keys, user, key_id, object).await? {
                Ok(found) => accepted.extend(found),
                Err(reason) => {
                    failures.entry(user.clone()).or_default().insert(key_id.clone(), reason);
                }
            }
        }
    }
    if !accepted.is_empty() {
        let signer = session.user_id.to_string();
        let targets: Vec<String> = {
            let mut t: Vec<String> = accepted.iter().map(|(_, user, _, _)| user.clone()).collect();
            t.dedup();
            t
        };
        let wake = targets.clone();
        // Other servers learn of a new signature on one of the caller's devices
        // as an update of that device. A new signature on the caller's master
        // key reaches them as an update of the signing keys.
        let own_devices: Vec<String> = {
            let devices = storage::users::devices(&services.db.pool, session.user_id.as_str()).await?;
            let mut signed: Vec<String> = accepted
                .iter()
                .filter(|(_, user, key_id, _)| *user == signer && devices.iter().any(|d| d.device_id == *key_id))
                .map(|(_, _, key_id, _)| key_id.clone())
                .collect();
            signed.sort();
            signed.dedup();
            signed
        };
        let master_signed = own_keys
            .get("master")
            .is_some_and(|master| accepted.iter().any(|(_, user, key_id, _)| *user == signer && key_id == master));
        let changes = services
            .db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    for (signer_key_id, user, key_id, signature) in &accepted {
                        storage::e2ee::put_signature(&mut txn.conn, &signer, signer_key_id, user, key_id, signature)
                            .await?;
                    }
                    let mut changes = Vec::new();
                    for user in &targets {
                        if *user == signer && !own_devices.is_empty() {
                            for device in &own_devices {
                                changes.push(device_updates::mark_device_changed(txn, user, device).await?);
                            }
                        } else {
                            mark_changed(txn, user).await?;
                        }
                    }
                    Ok(changes)
                })
            })
            .await?;
        for user in wake {
            if let Ok(user_id) = UserId::parse(&user) {
                wake_device_list_watchers(services, &user_id).await?;
            }
        }
        device_updates::announce_devices(services, &session.user_id, &changes).await?;
        if master_signed {
            device_updates::announce_signing_keys(services, &session.user_id).await?;
        }
    }
    Ok(json!({ "failures": failures }))
}
