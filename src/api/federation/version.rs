//! `GET /_matrix/federation/v1/version` (spec: Server-Server API, "Server implementation").

use std::sync::Arc;

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};

use crate::Services;

pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/_matrix/federation/v1/version", get(version))
}

/// GET /_matrix/federation/v1/version: the name and version of this server's software.
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Lattice", "version": env!("CARGO_PKG_VERSION") } }))
}
