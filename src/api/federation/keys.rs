//! Server keys (spec: Server-Server API, "Retrieving server keys"):
//! `GET /_matrix/key/v2/server` publishes this server's keys;
//! `/_matrix/key/v2/query` serves the keys of other servers as a notary.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use ruma::CanonicalJsonObject;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{JsonBody, Path, Query},
    error::{Error, Result},
    federation::keys::KeyCriteria,
};

pub fn router() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/key/v2/query", post(query_keys))
        .route("/_matrix/key/v2/query/{server_name}", get(query_server_keys))
}

/// GET /_matrix/key/v2/server: this server's current and old keys, signed.
async fn server_keys(State(services): State<Arc<Services>>) -> Result<Json<CanonicalJsonObject>> {
    Ok(Json(services.federation.local_key_response().await?))
}

#[derive(Deserialize)]
struct QueryParams {
    minimum_valid_until_ts: Option<i64>,
}

/// GET /_matrix/key/v2/query/{serverName}: all keys of one server, through this notary.
async fn query_server_keys(
    State(services): State<Arc<Services>>,
    Path(server_name): Path<String>,
    Query(params): Query<QueryParams>,
) -> Result<Json<Value>> {
    let criteria = KeyCriteria { key_ids: Vec::new(), minimum_valid_until_ts: params.minimum_valid_until_ts };
    let responses = services.federation.query_keys(BTreeMap::from([(server_name, criteria)])).await?;
    Ok(Json(json!({ "server_keys": responses })))
}

#[derive(Deserialize)]
struct QueryBody {
    server_keys: BTreeMap<String, BTreeMap<String, KeyQuery>>,
}

#[derive(Deserialize, Default)]
struct KeyQuery {
    minimum_valid_until_ts: Option<i64>,
}

/// POST /_matrix/key/v2/query: keys of several servers, through this notary.
async fn query_keys(State(services): State<Arc<Services>>, JsonBody(body): JsonBody<Value>) -> Result<Json<Value>> {
    let body: QueryBody = serde_json::from_value(body)
        .map_err(|e| Error::bad_json(format!("server_keys: expected an object of server names to key ids: {e}")))?;
    let query = body
        .server_keys
        .into_iter()
        .map(|(server, keys)| {
            // The strictest of the requested minimums applies to the server.
            let minimum = keys.values().filter_map(|key| key.minimum_valid_until_ts).max();
            (server, KeyCriteria { key_ids: keys.into_keys().collect(), minimum_valid_until_ts: minimum })
        })
        .collect();
    let responses = services.federation.query_keys(query).await?;
    Ok(Json(json!({ "server_keys": responses })))
}
