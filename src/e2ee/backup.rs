//! Server-side key backups (spec: "Server-side key backups"): versions with
//! their `auth_data`, and the encrypted room keys stored in them. Keys can
//! only be written to the newest version; an older one gets 403
//! `M_WRONG_ROOM_KEYS_VERSION` with the current version.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    Services,
    error::{Error, ErrorKind, Result},
    storage::{
        self,
        key_backup::{KeyRow, VersionRow},
    },
    users::Session,
};

/// The body of version creation and update.
#[derive(Debug, serde::Deserialize)]
pub struct VersionRequest {
    pub algorithm: String,
    pub auth_data: Map<String, Value>,
    pub version: Option<String>,
}

/// One session key as clients upload it (`KeyBackupData`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct KeyBackupData {
    pub first_message_index: u64,
    pub forwarded_count: u64,
    pub is_verified: bool,
    pub session_data: Map<String, Value>,
}

#[derive(Debug, serde::Deserialize)]
pub struct RoomKeys {
    pub sessions: BTreeMap<String, KeyBackupData>,
}

#[derive(Debug, serde::Deserialize)]
pub struct AllKeys {
    pub rooms: BTreeMap<String, RoomKeys>,
}

fn parse_version(version: &str) -> Result<i64> {
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::not_found(format!("backup version {version:?} does not exist")))
}

fn wrong_version(current: Option<i64>) -> Error {
    let mut extra = Map::new();
    extra.insert("current_version".into(), json!(current.map(|v| v.to_string())));
    Error::new(
        ErrorKind::Custom {
            errcode: "M_WRONG_ROOM_KEYS_VERSION".into(),
            status: axum::http::StatusCode::FORBIDDEN,
            extra,
        },
        "that backup version is not the current one",
    )
}

/// Keys are written only to the current version: 404 when the user has no
/// backup, 403 `M_WRONG_ROOM_KEYS_VERSION` when `number` is not the newest.
async fn check_current(conn: &mut sqlx::AnyConnection, user: &str, number: i64) -> Result<()> {
    match storage::key_backup::latest_version(conn, user).await? {
        None => Err(Error::not_found("no current backup version")),
        Some(current) if current.version != number => Err(wrong_version(Some(current.version))),
        Some(_) => Ok(()),
    }
}

async fn version_json(services: &Services, user: &str, row: VersionRow) -> Result<Value> {
    let count = storage::key_backup::count(&services.db.pool, user, row.version).await?;
    Ok(json!({
        "algorithm": row.algorithm,
        "auth_data": serde_json::from_str::<Value>(&row.auth_data).unwrap_or_else(|_| json!({})),
        "count": count,
        "etag": row.etag.to_string(),
        "version": row.version.to_string(),
    }))
}

/// `POST /room_keys/version`: creates a version, which becomes the current one.
pub async fn create_version(services: &Services, session: &Session, request: VersionRequest) -> Result<Value> {
    let user = session.user_id.to_string();
    let auth_data = Value::Object(request.auth_data).to_string();
    let algorithm = request.algorithm;
    let version = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                Ok(storage::key_backup::create_version(&mut txn.conn, &user, &algorithm, &auth_data).await?)
            })
        })
        .await?;
    Ok(json!({ "version": version.to_string() }))
}

/// `GET /room_keys/version` and `GET /room_keys/version/{version}`.
pub async fn get_version(services: &Services, session: &Session, version: Option<&str>) -> Result<Value> {
    let user = session.user_id.as_str();
    let row = match version {
        Some(version) => storage::key_backup::version(&services.db.pool, user, parse_version(version)?).await?,
        None => {
            let mut conn = services.db.pool.acquire().await?;
            storage::key_backup::latest_version(&mut conn, user).await?
        }
    };
    let row = row.ok_or_else(|| match version {
        Some(v) => Error::not_found(format!("backup version {v} does not exist")),
        None => Error::not_found("no current backup version"),
    })?;
    version_json(services, user, row).await
}

/// `PUT /room_keys/version/{version}`: replaces `auth_data`; the algorithm cannot change.
pub async fn update_version(
    services: &Services,
    session: &Session,
    version: &str,
    request: VersionRequest,
) -> Result<()> {
    let number = parse_version(version)?;
    if let Some(body_version) = &request.version
        && body_version != version
    {
        return Err(Error::invalid_param(format!(
            "version {body_version:?} in the body does not match the path's {version:?}"
        )));
    }
    let user = session.user_id.as_str();
    let existing = storage::key_backup::version(&services.db.pool, user, number)
        .await?
        .ok_or_else(|| Error::not_found(format!("backup version {version} does not exist")))?;
    if existing.algorithm != request.algorithm {
        return Err(Error::invalid_param(format!(
            "algorithm {:?} differs from the version's {:?}; create a new version instead",
            request.algorithm, existing.algorithm
        )));
    }
    let user = user.to_owned();
    let auth_data = Value::Object(request.auth_data).to_string();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                storage::key_backup::update_auth_data(&mut txn.conn, &user, number, &auth_data).await?;
                Ok(())
            })
        })
        .await
}

/// `DELETE /room_keys/version/{version}`: deletes the version and its keys.
pub async fn delete_version(services: &Services, session: &Session, version: &str) -> Result<()> {
    let number = parse_version(version)?;
    let user = session.user_id.to_string();
    let deleted = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move { Ok(storage::key_backup::delete_version(&mut txn.conn, &user, number).await?) })
        })
        .await?;
    if !deleted {
        return Err(Error::not_found(format!("backup version {version} does not exist")));
    }
    Ok(())
}

/// Whether `new` should replace `old` under the spec's rule: a verified key
/// beats an unverified one, then the lower first message index, then the
/// lower forwarded count.
fn replaces(old: &KeyRow, new: &KeyRow) -> bool {
    if old.is_verified != new.is_verified {
        return new.is_verified;
    }
    if old.first_message_index != new.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

/// `PUT /room_keys/keys[/{roomId}[/{sessionId}]]?version=`: stores keys in the
/// current version, keeping a stored key that is better than the new one.
pub async fn put_keys(
    services: &Services,
    session: &Session,
    version: &str,
    keys: Vec<(String, String, KeyBackupData)>,
) -> Result<Value> {
    let number = parse_version(version)?;
    let mut rows = Vec::with_capacity(keys.len());
    for (room_id, session_id, data) in keys {
        ruma::RoomId::parse(&room_id)
            .map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))?;
        rows.push(KeyRow {
            room_id,
            session_id,
            first_message_index: i64::try_from(data.first_message_index)
                .map_err(|_| Error::bad_json("first_message_index is too large"))?,
            forwarded_count: i64::try_from(data.forwarded_count)
                .map_err(|_| Error::bad_json("forwarded_count is too large"))?,
            is_verified: data.is_verified,
            session_data: Value::Object(data.session_data).to_string(),
        });
    }
    let user = session.user_id.to_string();
    let (count, etag) = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                check_current(&mut txn.conn, &user, number).await?;
                let mut changed = false;
                for row in &rows {
                    let old =
                        storage::key_backup::key_in_txn(&mut txn.conn, &user, number, &row.room_id, &row.session_id)
                            .await?;
                    if old.as_ref().is_none_or(|old| replaces(old, row)) {
                        storage::key_backup::put_key(&mut txn.conn, &user, number, row).await?;
                        changed = true;
                    }
                }
                let etag = if changed {
                    storage::key_backup::bump_etag(&mut txn.conn, &user, number).await?
                } else {
                    storage::key_backup::etag_in_txn(&mut txn.conn, &user, number).await?
                };
                let count = storage::key_backup::count_in_txn(&mut txn.conn, &user, number).await?;
                Ok((count, etag))
            })
        })
        .await?;
    Ok(json!({ "count": count, "etag": etag.to_string() }))
}

fn key_json(row: &KeyRow) -> Value {
    json!({
        "first_message_index": row.first_message_index,
        "forwarded_count": row.forwarded_count,
        "is_verified": row.is_verified,
        "session_data": serde_json::from_str::<Value>(&row.session_data).unwrap_or_else(|_| json!({})),
    })
}

/// The level of a key read or deletion.
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl Scope<'_> {
    fn room(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::Room(room) | Self::Session(room, _) => Some(room),
        }
    }

    fn session(&self) -> Option<&str> {
        match self {
            Self::Session(_, session) => Some(session),
            _ => None,
        }
    }
}

/// `GET /room_keys/keys[/{roomId}[/{sessionId}]]?version=`.
pub async fn get_keys(services: &Services, session: &Session, version: &str, scope: Scope<'_>) -> Result<Value> {
    let number = parse_version(version)?;
    let user = session.user_id.as_str();
    if storage::key_backup::version(&services.db.pool, user, number).await?.is_none() {
        return Err(Error::not_found(format!("backup version {version} does not exist")));
    }
    let rows = storage::key_backup::keys(&services.db.pool, user, number, scope.room(), scope.session()).await?;
    match scope {
        Scope::Session(room, session_id) => rows
            .first()
            .map(key_json)
            .ok_or_else(|| Error::not_found(format!("no key for session {session_id} in room {room}"))),
        Scope::Room(_) => {
            let sessions: Map<String, Value> = rows.iter().map(|r| (r.session_id.clone(), key_json(r))).collect();
            Ok(json!({ "sessions": sessions }))
        }
        Scope::All => {
            let mut rooms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
            for row in &rows {
                rooms.entry(row.room_id.clone()).or_default().insert(row.session_id.clone(), key_json(row));
            }
            let rooms: Map<String, Value> =
                rooms.into_iter().map(|(room, sessions)| (room, json!({ "sessions": sessions }))).collect();
            Ok(json!({ "rooms": rooms }))
        }
    }
}

/// `DELETE /room_keys/keys[/{roomId}[/{sessionId}]]?version=`.
pub async fn delete_keys(services: &Services, session: &Session, version: &str, scope: Scope<'_>) -> Result<Value> {
    let number = parse_version(version)?;
    if storage::key_backup::version(&services.db.pool, session.user_id.as_str(), number).await?.is_none() {
        return Err(Error::not_found(format!("backup version {version} does not exist")));
    }
    let user = session.user_id.to_string();
    let room = scope.room().map(str::to_owned);
    let session_id = scope.session().map(str::to_owned);
    let (count, etag) = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let removed = storage::key_backup::delete_keys(
                    &mut txn.conn,
                    &user,
                    number,
                    room.as_deref(),
                    session_id.as_deref(),
                )
                .await?;
                let etag = if removed > 0 {
                    storage::key_backup::bump_etag(&mut txn.conn, &user, number).await?
                } else {
                    storage::key_backup::etag_in_txn(&mut txn.conn, &user, number).await?
                };
                let count = storage::key_backup::count_in_txn(&mut txn.conn, &user, number).await?;
                Ok((count, etag))
            })
        })
        .await?;
    Ok(json!({ "count": count, "etag": etag.to_string() }))
}
