//! `POST /_matrix/client/v3/user/{userId}/openid/request_token` (spec:
//! Client-Server API, "OpenID").

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    users::openid::TOKEN_LIFETIME_SECS,
};

/// POST /_matrix/client/v3/user/{userId}/openid/request_token
pub async fn request_token(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    JsonBody(_body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>> {
    if session.user_id.as_str() != user_id {
        return Err(Error::forbidden(format!("you cannot request OpenID tokens for {user_id}")));
    }
    let token = services.users.openid.issue(&session.user_id);
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": services.server_name,
        "expires_in": TOKEN_LIFETIME_SECS,
    })))
}
