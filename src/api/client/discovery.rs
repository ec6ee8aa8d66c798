//! Discovery: supported versions and server capabilities.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Map, Value, json};

use crate::{Services, api::Auth, rooms::version};

/// GET /_matrix/client/versions (spec: Client-Server API, "Supported versions").
pub async fn versions() -> Json<Value> {
    Json(json!({
        "versions": [
            "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
            "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16"
        ],
        "unstable_features": {},
    }))
}

/// GET /_matrix/client/v3/capabilities (spec: Client-Server API, "Capabilities negotiation").
pub async fn capabilities(State(services): State<Arc<Services>>, Auth(_session): Auth) -> Json<Value> {
    let available: Map<String, Value> = version::SUPPORTED.iter().map(|v| (v.to_string(), json!("stable"))).collect();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": {
                "default": services.config.rooms.default_version,
                "available": available,
            },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": services.mailer.is_enabled() },
            "m.get_login_token": { "enabled": false },
        }
    }))
}
