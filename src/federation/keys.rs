//! Server signing keys (spec: Server-Server API, "Retrieving server keys"):
//! this server's key document, the cache of other servers' keys, and the
//! notary that serves key queries for other servers.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use http::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    signatures::{SigningKeyAlgorithm, sign_json, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};

use super::{Federation, FederationError};
use crate::{
    error::{Error, ErrorKind, Result},
    signing_key::SigningKey,
    storage::{now_ms, server_keys},
};

/// Receivers treat a key as valid for at most this long after they fetched
/// it, whatever its `valid_until_ts` (spec: room versions 5 and later).
const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// One key request of a notary query: the key ids wanted (empty: all) and
/// the time until which they must be valid.
#[derive(Debug, Default, Clone)]
pub struct KeyCriteria {
    pub key_ids: Vec<String>,
    pub minimum_valid_until_ts: Option<i64>,
}

/// A failure to get the key of a server.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Fetch(#[from] FederationError),
    #[error("{server_name} does not publish a key {key_id}")]
    UnknownKey { server_name: String, key_id: String },
    #[error("the key response of {server_name} is invalid: {reason}")]
    Invalid { server_name: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Federation {
    /// This server's key response for `GET /_matrix/key/v2/server`: the
    /// current key, the expired ones, and a signature by the current key.
    pub async fn local_key_response(&self) -> Result<CanonicalJsonObject> {
        let key = &self.inner.key;
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(key.key_id.clone(), key_object(&key.public_key_base64(), None));
        let mut old_verify_keys = CanonicalJsonObject::new();
        let old =
            SigningKey::old_keys(&self.inner.db).await.map_err(|e| Error::internal("reading old signing keys", e))?;
        for (key_id, public_key, expired_ts) in old {
            old_verify_keys.insert(key_id, key_object(&public_key, Some(expired_ts)));
        }
        let valid_until_ts = now_ms() + self.inner.config.key_validity_ms as i64;
        let mut response = CanonicalJsonObject::new();
        response.insert("server_name".into(), CanonicalJsonValue::String(self.inner.server_name.to_string()));
        response.insert("verify_keys".into(), CanonicalJsonValue::Object(verify_keys));
        response.insert("old_verify_keys".into(), CanonicalJsonValue::Object(old_verify_keys));
        response
            .insert("valid_until_ts".into(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(valid_until_ts)));
        sign_json(self.inner.server_name.as_str(), &key.pair, &mut response)
            .map_err(|e| Error::internal("signing the key response", e))?;
        Ok(response)
    }

    /// Fetches the keys of `server_name` from the server itself, checks its
    /// signatures, and caches them.
    #[tracing::instrument(skip(self), fields(server_name = %server_name))]
    pub async fn fetch_keys(&self, server_name: &ServerName) -> Result<CanonicalJsonObject, KeyError> {
        let value = self.send_json(server_name, Method::GET, "/_matrix/key/v2/server", None, false).await?;
        let response = CanonicalJsonObject::try_from_value(value, server_name)?;
        let parsed = parse_key_response(server_name, &response)?;
        // The server's own signature by each of its current keys.
        let canonical = canonical(server_name, &response)?;
        for (key_id, public_key) in &parsed.verify_keys {
            check_signature(server_name, &response, server_name.as_str(), key_id, public_key, &canonical)?;
        }
        self.store_keys(server_name, &parsed, &response).await?;
        tracing::info!(keys = parsed.verify_keys.len(), valid_until_ts = parsed.valid_until_ts, "fetched server keys");
        Ok(response)
    }

    async fn store_keys(
        &self,
        server_name: &ServerName,
        parsed: &ParsedKeys,
        response: &CanonicalJsonObject,
    ) -> Result<(), KeyError> {
        let text = serde_json::to_string(response).unwrap_or_default();
        let current = parsed.verify_keys.iter().map(|(key_id, key)| server_keys::KeyRow {
            key_id,
            public_key: STANDARD_NO_PAD.encode(key),
            valid_until_ts: parsed.valid_until_ts,
            expired_ts: None,
        });
        let old = parsed.old_verify_keys.iter().map(|(key_id, (key, expired))| server_keys::KeyRow {
            key_id,
            public_key: STANDARD_NO_PAD.encode(key),
            valid_until_ts: *expired,
            expired_ts: Some(*expired),
        });
        let rows: Vec<_> = current.chain(old).collect();
        server_keys::store(&self.inner.db.pool, server_name.as_str(), &rows, &text, now_ms()).await?;
        Ok(())
    }

    /// The public keys of the servers that signed `object` (a PDU), as far
    /// as they can be had; a key that cannot be fetched is left out, so the
    /// signature check then fails for its server.
    pub async fn signing_keys(&self, object: &CanonicalJsonObject) -> ruma::signatures::PublicKeyMap {
        self.signing_keys_of([object]).await
    }

    /// Returns the public keys of the servers that signed any of `objects`
    /// (the PDUs of a transaction), like [`Federation::signing_keys`]. Each
    /// key is looked up once, also when it cannot be had.
    pub async fn signing_keys_of<'a>(
        &self,
        objects: impl IntoIterator<Item = &'a CanonicalJsonObject>,
    ) -> ruma::signatures::PublicKeyMap {
        let mut map = ruma::signatures::PublicKeyMap::new();
        let mut missing = std::collections::HashSet::new();
        for object in objects {
            let Some(CanonicalJsonValue::Object(signatures)) = object.get("signatures") else { continue };
            for (server, signed) in signatures {
                let (Ok(server_name), CanonicalJsonValue::Object(key_ids)) = (ServerName::parse(server), signed) else {
                    continue;
                };
                let set = map.entry(server.clone()).or_default();
                for key_id in key_ids.keys() {
                    if set.contains_key(key_id) || missing.contains(&(server, key_id)) {
                        continue;
                    }
                    match self.verify_key(&server_name, key_id).await {
                        Ok(key) => {
                            set.insert(key_id.clone(), ruma::serde::Base64::new(key));
                        }
                        Err(err) => {
                            tracing::info!(server, key_id, error = %err, "no key to check a PDU signature");
                            missing.insert((server, key_id));
                        }
                    }
                }
            }
        }
        map
    }

    /// Returns the public key `key_id` of `server_name`, valid now: from the
    /// cache, else fetched from the server.
    pub async fn verify_key(&self, server_name: &ServerName, key_id: &str) -> Result<Vec<u8>, KeyError> {
        if server_name == self.inner.server_name && key_id == self.inner.key.key_id {
            return Ok(self.inner.key.pair.public_key().to_vec());
        }
        if let Some(key) = self.cached_key(server_name, key_id).await? {
            return Ok(key);
        }
        self.fetch_keys(server_name).await?;
        self.cached_key(server_name, key_id)
            .await?
            .ok_or_else(|| KeyError::UnknownKey { server_name: server_name.to_string(), key_id: key_id.to_owned() })
    }

    async fn cached_key(&self, server_name: &ServerName, key_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        let now = now_ms();
        let key =
            server_keys::current_key(&self.inner.db.pool, server_name.as_str(), key_id, now, now - MAX_KEY_VALIDITY_MS)
                .await?;
        Ok(key.and_then(|key| STANDARD_NO_PAD.decode(key).ok()))
    }

    /// Runs a key query as a notary (`/_matrix/key/v2/query`). Each server's
    /// key responses come from the cache when they satisfy the criteria, else
    /// they are fetched anew, and this server countersigns each of them.
    pub async fn query_keys(&self, query: BTreeMap<String, KeyCriteria>) -> Result<Vec<CanonicalJsonObject>> {
        let mut responses = Vec::new();
        for (server, criteria) in query {
            let Ok(server_name) = ServerName::parse(&server) else {
                return Err(Error::invalid_param(format!("server_keys: {server:?} is not a server name")));
            };
            if server_name == self.inner.server_name {
                responses.push(self.local_key_response().await?);
                continue;
            }
            let threshold = criteria.minimum_valid_until_ts.unwrap_or_else(now_ms);
            let cached = self.cached_responses(&server_name, &criteria.key_ids).await.map_err(key_error)?;
            let satisfied = !cached.is_empty() && cached.iter().all(|(valid_until, _)| *valid_until >= threshold);
            let found = if satisfied {
                cached.into_iter().map(|(_, response)| response).collect()
            } else {
                match self.fetch_keys(&server_name).await {
                    Ok(_) => self
                        .cached_responses(&server_name, &criteria.key_ids)
                        .await
                        .map_err(key_error)?
                        .into_iter()
                        .map(|(_, response)| response)
                        .collect(),
                    Err(err) => {
                        // The most recent keys known are still worth returning.
                        tracing::info!(server_name = %server_name, error = %err, "notary could not refresh keys");
                        cached.into_iter().map(|(_, response)| response).collect::<Vec<_>>()
                    }
                }
            };
            for mut response in found {
                sign_json(self.inner.server_name.as_str(), &self.inner.key.pair, &mut response)
                    .map_err(|e| Error::internal("countersigning a key response", e))?;
                responses.push(response);
            }
        }
        Ok(responses)
    }

    /// Reads the distinct cached key responses of `server_name` that contain
    /// one of `key_ids` (any key when empty), with their `valid_until_ts`.
    async fn cached_responses(
        &self,
        server_name: &ServerName,
        key_ids: &[String],
    ) -> Result<Vec<(i64, CanonicalJsonObject)>, KeyError> {
        let rows = server_keys::responses(&self.inner.db.pool, server_name.as_str()).await?;
        let mut seen = std::collections::BTreeSet::new();
        let mut responses = Vec::new();
        for (key_id, text) in rows {
            if (!key_ids.is_empty() && !key_ids.contains(&key_id)) || !seen.insert(text.clone()) {
                continue;
            }
            let Ok(response) = serde_json::from_str::<CanonicalJsonObject>(&text) else {
                continue;
            };
            let valid_until = match response.get("valid_until_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
                _ => 0,
            };
            responses.push((valid_until, response));
        }
        Ok(responses)
    }
}

fn key_error(err: KeyError) -> Error {
    Error::new(ErrorKind::Unknown, err.to_string())
}

fn key_object(public_key: &str, expired_ts: Option<i64>) -> CanonicalJsonValue {
    let mut object = CanonicalJsonObject::new();
    object.insert("key".into(), CanonicalJsonValue::String(public_key.to_owned()));
    if let Some(expired_ts) = expired_ts {
        object.insert("expired_ts".into(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(expired_ts)));
    }
    CanonicalJsonValue::Object(object)
}

/// The keys of a key response.
struct ParsedKeys {
    verify_keys: BTreeMap<String, Vec<u8>>,
    old_verify_keys: BTreeMap<String, (Vec<u8>, i64)>,
    valid_until_ts: i64,
}

fn invalid(server_name: &ServerName, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid { server_name: server_name.to_string(), reason: reason.into() }
}

trait TryFromValue: Sized {
    fn try_from_value(value: serde_json::Value, server_name: &ServerName) -> Result<Self, KeyError>;
}

impl TryFromValue for CanonicalJsonObject {
    fn try_from_value(value: serde_json::Value, server_name: &ServerName) -> Result<Self, KeyError> {
        match CanonicalJsonValue::try_from(value) {
            Ok(CanonicalJsonValue::Object(object)) => Ok(object),
            Ok(_) => Err(invalid(server_name, "not a JSON object")),
            Err(e) => Err(invalid(server_name, format!("not canonical JSON: {e}"))),
        }
    }
}

fn parse_key_response(server_name: &ServerName, response: &CanonicalJsonObject) -> Result<ParsedKeys, KeyError> {
    match response.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server_name.as_str() => {}
        _ => {
            return Err(invalid(server_name, "server_name does not name the server asked"));
        }
    }
    let valid_until_ts = match response.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err(invalid(server_name, "valid_until_ts is missing")),
    };
    let decode_key = |key_id: &str, value: &CanonicalJsonValue| -> Result<Vec<u8>, KeyError> {
        let CanonicalJsonValue::Object(object) = value else {
            return Err(invalid(server_name, format!("key {key_id} is not an object")));
        };
        let Some(CanonicalJsonValue::String(key)) = object.get("key") else {
            return Err(invalid(server_name, format!("key {key_id} has no key")));
        };
        STANDARD_NO_PAD
            .decode(key.trim_end_matches('='))
            .map_err(|_| invalid(server_name, format!("key {key_id} is not base64")))
    };
    let mut verify_keys = BTreeMap::new();
    if let Some(CanonicalJsonValue::Object(keys)) = response.get("verify_keys") {
        for (key_id, value) in keys {
            if key_id.starts_with("ed25519:") {
                verify_keys.insert(key_id.clone(), decode_key(key_id, value)?);
            }
        }
    }
    if verify_keys.is_empty() {
        return Err(invalid(server_name, "verify_keys holds no ed25519 key"));
    }
    let mut old_verify_keys = BTreeMap::new();
    if let Some(CanonicalJsonValue::Object(keys)) = response.get("old_verify_keys") {
        for (key_id, value) in keys {
            let expired = match value {
                CanonicalJsonValue::Object(object) => match object.get("expired_ts") {
                    Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
                    _ => 0,
                },
                _ => 0,
            };
            if key_id.starts_with("ed25519:") {
                old_verify_keys.insert(key_id.clone(), (decode_key(key_id, value)?, expired));
            }
        }
    }
    Ok(ParsedKeys { verify_keys, old_verify_keys, valid_until_ts })
}

fn canonical(server_name: &ServerName, object: &CanonicalJsonObject) -> Result<String, KeyError> {
    to_canonical_json_string_for_signing(object).map_err(|e| invalid(server_name, e.to_string()))
}

/// Checks the signature of `signer` by `key_id` on a key response.
fn check_signature(
    server_name: &ServerName,
    response: &CanonicalJsonObject,
    signer: &str,
    key_id: &str,
    public_key: &[u8],
    canonical: &str,
) -> Result<(), KeyError> {
    let signature = match response.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(signer) {
            Some(CanonicalJsonValue::Object(by_key)) => match by_key.get(key_id) {
                Some(CanonicalJsonValue::String(signature)) => signature.clone(),
                _ => return Err(invalid(server_name, format!("no signature by {key_id}"))),
            },
            _ => return Err(invalid(server_name, format!("not signed by {signer}"))),
        },
        _ => return Err(invalid(server_name, "no signatures")),
    };
    let signature = STANDARD_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| invalid(server_name, "signature is not base64"))?;
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, public_key, &signature, canonical.as_bytes())
        .map_err(|e| invalid(server_name, format!("signature by {key_id} does not verify: {e}")))
}
