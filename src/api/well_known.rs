//! `/.well-known/matrix/client` and `/.well-known/matrix/server`: server discovery.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{
    Services,
    error::{Error, Result},
};

pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/.well-known/matrix/client", get(client)).route("/.well-known/matrix/server", get(server))
}

/// GET /.well-known/matrix/client (spec: Client-Server API, server discovery).
async fn client(State(services): State<Arc<Services>>) -> Json<Value> {
    let base =
        services.config.public_baseurl.clone().unwrap_or_else(|| format!("http://{}", services.config.listen.client));
    Json(json!({ "m.homeserver": { "base_url": base } }))
}

/// GET /.well-known/matrix/server (spec: Server-Server API, server discovery).
async fn server(State(services): State<Arc<Services>>) -> Result<Json<Value>> {
    match &services.config.well_known_server {
        Some(server) => Ok(Json(json!({ "m.server": server }))),
        None => Err(Error::not_found("this server does not publish a federation delegation")),
    }
}
