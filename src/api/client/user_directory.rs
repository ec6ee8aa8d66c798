//! User directory search (spec: Client-Server API, "User directory"): users
//! who share a room with the searcher or sit in a public room (published in
//! the room directory or with a `public` join rule), or every local user when
//! `directory.search_all_users` is set. The room policy orders the results
//! before the limit applies.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody},
    error::Result,
    storage,
};

/// Collects the rooms whose members any user may find: those published in the
/// room directory and those with a `public` join rule, published or not.
// NOTE: this reads the join rule of every room on each search, which grows
// with the number of rooms on the server.
async fn public_rooms(pool: &sqlx::AnyPool) -> Result<HashSet<String>> {
    let mut rooms: HashSet<String> = storage::rooms::public_rooms(pool).await?.into_iter().collect();
    let join_rules: Vec<String> = storage::state::current_of_type(pool, "m.room.join_rules", "")
        .await?
        .into_iter()
        .map(|(_, event_id)| event_id)
        .collect();
    for event in storage::events::get_many(pool, &join_rules).await? {
        if event.pdu.content_value().get("join_rule").and_then(Value::as_str) == Some("public") {
            rooms.insert(event.pdu.room_id.to_string());
        }
    }
    Ok(rooms)
}

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
        let mut visible: HashSet<String> =
            storage::rooms::users_sharing_rooms(pool, session.user_id.as_str()).await?.into_iter().collect();
        for room_id in public_rooms(pool).await? {
            visible.extend(storage::rooms::room_members(pool, &room_id, "join").await?);
        }
        Some(visible)
    };
    let mut profiles: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
    let mut found = Vec::new();
    for (user_id, displayname, avatar_url) in candidates {
        if visible.as_ref().is_some_and(|v| !v.contains(&user_id)) {
            continue;
        }
        profiles.insert(user_id.clone(), (displayname, avatar_url));
        found.push(user_id);
    }
    let ranked = services.rooms.policy().rank_directory_results(&session.user_id, found).await?;
    let limited = ranked.len() > limit;
    let results: Vec<Value> = ranked
        .into_iter()
        .take(limit)
        .map(|user_id| {
            let (displayname, avatar_url) = profiles.remove(&user_id).unwrap_or_default();
            json!({ "user_id": user_id, "display_name": displayname, "avatar_url": avatar_url })
        })
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}
