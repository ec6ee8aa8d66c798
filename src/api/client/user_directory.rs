//! User directory search (spec: Client-Server API, "User directory"): users
//! who share a room with the searcher or sit in a public room, or every local
//! user when `directory.search_all_users` is set.

use std::{collections::HashSet, sync::Arc};

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody},
    error::Result,
    storage,
};

#[derive(Deserialize)]
pub struct SearchBody {
    search_term: String,
    limit: Option<usize>,
}

/// POST /_matrix/client/v3/user_directory/search
pub async fn search(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<Value>> {
    let limit = body.limit.unwrap_or(10).min(100);
    let pool = &services.db.pool;
    let candidates = storage::users::search(pool, body.search_term.trim(), 1000).await?;
    let visible: Option<HashSet<String>> = if services.config.directory.search_all_users {
        None
    } else {
        let mut visible: HashSet<String> = storage::rooms::users_sharing_rooms(pool, session.user_id.as_str()).await?.into_iter().collect();
        for room_id in storage::rooms::public_rooms(pool).await? {
            visible.extend(storage::rooms::room_members(pool, &room_id, "join").await?);
        }
        Some(visible)
    };
    let mut results = Vec::new();
    let mut limited = false;
    for (user_id, displayname, avatar_url) in candidates {
        if visible.as_ref().is_some_and(|v| !v.contains(&user_id)) {
            continue;
        }
        if results.len() == limit {
            limited = true;
            break;
        }
        results.push(json!({ "user_id": user_id, "display_name": displayname, "avatar_url": avatar_url }));
    }
    Ok(Json(json!({ "results": results, "limited": limited })))
}
