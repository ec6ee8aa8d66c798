//! End-to-end encryption keys (spec: Client-Server API, "End-to-End
//! Encryption", key management and cross-signing endpoints).

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    Services,
    api::{Auth, JsonBody, Query},
    e2ee::{self, cross_signing, device_lists},
    error::Result,
    sync::token::SyncToken,
};

/// POST /_matrix/client/v3/keys/upload
pub async fn upload(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<e2ee::UploadRequest>,
) -> Result<Json<Value>> {
    Ok(Json(e2ee::upload(&services, &session, body).await?))
}

/// POST /_matrix/client/v3/keys/query
pub async fn query(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<e2ee::QueryRequest>,
) -> Result<Json<Value>> {
    Ok(Json(e2ee::query(&services, &session, body).await?))
}

/// POST /_matrix/client/v3/keys/claim
pub async fn claim(
    State(services): State<Arc<Services>>,
    Auth(_session): Auth,
    JsonBody(body): JsonBody<e2ee::ClaimRequest>,
) -> Result<Json<Value>> {
    Ok(Json(e2ee::claim(&services, body).await?))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    from: String,
    to: String,
}

/// GET /_matrix/client/v3/keys/changes
pub async fn changes(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<Value>> {
    let from = SyncToken::parse(&query.from, "from")?;
    let to = SyncToken::parse(&query.to, "to")?;
    let found = device_lists::changes_between(&services, session.user_id.as_str(), &from, &to).await?;
    Ok(Json(serde_json::json!({ "changed": found.changed, "left": found.left })))
}

/// POST /_matrix/client/v3/keys/device_signing/upload
pub async fn upload_signing_keys(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<cross_signing::UploadRequest>,
) -> Result<Json<Value>> {
    cross_signing::upload_keys(&services, &session, body).await?;
    Ok(Json(serde_json::json!({})))
}

/// POST /_matrix/client/v3/keys/signatures/upload
pub async fn upload_signatures(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<BTreeMap<String, Map<String, Value>>>,
) -> Result<Json<Value>> {
    Ok(Json(cross_signing::upload_signatures(&services, &session, body).await?))
}
