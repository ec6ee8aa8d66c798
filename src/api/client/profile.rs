//! Profiles (spec: Client-Server API, "Profiles"). A change rewrites the
//! user's member event in every room they are in.

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::parse_user_id;
use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    storage,
};

async fn load(services: &Services, user_id: &UserId) -> Result<storage::users::UserRow> {
    crate::appservice::query::find_user(services, user_id)
        .await?
        .filter(|u| !u.deactivated)
        .ok_or_else(|| Error::not_found(format!("profile of {user_id} not found")))
}

/// GET /_matrix/client/v3/profile/{userId}
pub async fn get(State(services): State<Arc<Services>>, Path(user_id): Path<String>) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    let user = load(&services, &user_id).await?;
    let mut body = json!({});
    if let Some(name) = user.displayname {
        body["displayname"] = json!(name);
    }
    if let Some(url) = user.avatar_url {
        body["avatar_url"] = json!(url);
    }
    Ok(Json(body))
}

/// GET /_matrix/client/v3/profile/{userId}/displayname
pub async fn get_displayname(
    State(services): State<Arc<Services>>,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    let user = load(&services, &user_id).await?;
    match user.displayname {
        Some(name) => Ok(Json(json!({ "displayname": name }))),
        None => Err(Error::not_found(format!("{user_id} has no display name"))),
    }
}

/// GET /_matrix/client/v3/profile/{userId}/avatar_url
pub async fn get_avatar_url(State(services): State<Arc<Services>>, Path(user_id): Path<String>) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    let user = load(&services, &user_id).await?;
    match user.avatar_url {
        Some(url) => Ok(Json(json!({ "avatar_url": url }))),
        None => Err(Error::not_found(format!("{user_id} has no avatar"))),
    }
}

#[derive(Deserialize)]
pub struct DisplaynameBody {
    displayname: Option<String>,
}

/// PUT /_matrix/client/v3/profile/{userId}/displayname
pub async fn set_displayname(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<DisplaynameBody>,
) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    if user_id != session.user_id {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    if body.displayname.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(Error::bad_json("displayname is longer than 256 bytes"));
    }
    let name = body.displayname.filter(|n| !n.is_empty());
    storage::users::set_displayname(&services.db.pool, user_id.as_str(), name.as_deref()).await?;
    services.rooms.propagate_profile(&user_id).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct AvatarBody {
    avatar_url: Option<String>,
}

/// PUT /_matrix/client/v3/profile/{userId}/avatar_url
pub async fn set_avatar_url(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<AvatarBody>,
) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user_id, "userId")?;
    if user_id != session.user_id {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    let url = body.avatar_url.filter(|u| !u.is_empty());
    if let Some(url) = &url
        && !url.starts_with("mxc://")
    {
        return Err(Error::bad_json(format!("avatar_url {url:?} is not an mxc:// URI")));
    }
    storage::users::set_avatar_url(&services.db.pool, user_id.as_str(), url.as_deref()).await?;
    services.rooms.propagate_profile(&user_id).await?;
    Ok(Json(json!({})))
}
