//! `GET /_matrix/federation/v1/openid/userinfo` (spec: Server-Server API,
//! "OpenID"): the user behind an OpenID token, for third parties. It is
//! called without request signatures, as the spec provides.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::Query,
    error::{Error, ErrorKind, Result},
};

pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/_matrix/federation/v1/openid/userinfo", get(userinfo))
}

#[derive(Deserialize)]
struct UserInfoQuery {
    access_token: Option<String>,
}

async fn userinfo(State(services): State<Arc<Services>>, Query(query): Query<UserInfoQuery>) -> Result<Json<Value>> {
    let token =
        query.access_token.ok_or_else(|| Error::missing_param("the access_token query parameter is required"))?;
    let user = services.users.openid.user_of(&token).ok_or_else(|| {
        Error::new(ErrorKind::UnknownToken { soft_logout: false }, "the OpenID token is unknown or has expired")
    })?;
    Ok(Json(json!({ "sub": user })))
}
