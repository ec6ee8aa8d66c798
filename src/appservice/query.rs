//! Lookups that ask application services about users and room aliases in
//! their namespaces (spec: Application Service API, "Querying"), and the
//! exclusive-namespace checks of the Client-Server API.

use ruma::{RoomAliasId, UserId};

use super::Registration;
use crate::{
    Services,
    error::{Error, ErrorKind, Result},
    storage,
};

/// Rejects a room alias in another application service's exclusive namespace
/// (`M_EXCLUSIVE`). `acting` is the application service behind the request, if any.
pub fn check_alias_namespace(services: &Services, alias: &str, acting: Option<&Registration>) -> Result<()> {
    if let Some(registration) = acting
        && registration.covers_alias(alias)
    {
        return Ok(());
    }
    match services.appservices.exclusive_alias_owner(alias) {
        Some(owner) => Err(Error::new(
            ErrorKind::Exclusive,
            format!("room alias {alias} is reserved by application service {:?}", owner.id),
        )),
        None => Ok(()),
    }
}

/// Resolves a local room alias to its room id. An alias that is not stored
/// but lies in an application service's namespace is asked for at that
/// application service, which may create it before it responds.
pub async fn resolve_alias(services: &Services, alias: &RoomAliasId) -> Result<Option<String>> {
    let pool = &services.db.pool;
    if let Some((room_id, _)) = storage::rooms::resolve_alias(pool, alias.as_str()).await? {
        return Ok(Some(room_id));
    }
    if alias.server_name() != services.server_name {
        return Ok(None);
    }
    for registration in services.appservices.alias_namespace_owners(alias.as_str()) {
        match services.appservice_client.query_alias(registration, alias.as_str()).await {
            Ok(true) => {
                if let Some((room_id, _)) = storage::rooms::resolve_alias(pool, alias.as_str()).await? {
                    return Ok(Some(room_id));
                }
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(appservice = %registration.id, %alias, error = %err, "room alias query failed");
            }
        }
    }
    Ok(None)
}

/// Returns a local user's stored row. A user who does not exist but lies in
/// an application service's namespace is asked for at that application
/// service, which may register it before it responds.
pub async fn find_user(services: &Services, user_id: &UserId) -> Result<Option<storage::users::UserRow>> {
    let pool = &services.db.pool;
    if let Some(user) = storage::users::get(pool, user_id.as_str()).await? {
        return Ok(Some(user));
    }
    if user_id.server_name() != services.server_name {
        return Ok(None);
    }
    for registration in services.appservices.user_namespace_owners(user_id) {
        match services.appservice_client.query_user(registration, user_id.as_str()).await {
            Ok(true) => {
                if let Some(user) = storage::users::get(pool, user_id.as_str()).await? {
                    return Ok(Some(user));
                }
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(appservice = %registration.id, %user_id, error = %err, "user query failed");
            }
        }
    }
    Ok(None)
}
