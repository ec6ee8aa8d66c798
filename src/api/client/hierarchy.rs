//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` (spec: Client-Server
//! API, "Spaces"): a page of a space's tree, depth first.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::parse_room_id;
use crate::{
    Services,
    api::{Auth, Path, Query},
    error::{Error, Result},
    rooms::hierarchy::Requester,
};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;
/// The depth of a walk when the client sets none, and the deepest allowed.
const MAX_DEPTH: i64 = 10;

#[derive(Deserialize)]
pub struct HierarchyQuery {
    suggested_only: Option<bool>,
    limit: Option<i64>,
    max_depth: Option<i64>,
    from: Option<String>,
}

/// Builds the token of a position in a walk, with the walk's settings,
/// which may not change between pages: `h{rooms already returned}_{max_depth}_{suggested_only}`.
fn token(skip: usize, max_depth: i64, suggested_only: bool) -> String {
    format!("h{skip}_{max_depth}_{}", u8::from(suggested_only))
}

fn parse_token(token: &str, max_depth: i64, suggested_only: bool) -> Result<usize> {
    let invalid = || Error::invalid_param(format!("from {token:?} is not a token of this endpoint"));
    let parts: Vec<&str> = token.strip_prefix('h').ok_or_else(invalid)?.split('_').collect();
    let [skip, depth, suggested] = parts.as_slice() else {
        return Err(invalid());
    };
    if *depth != max_depth.to_string() || *suggested != u8::from(suggested_only).to_string() {
        return Err(Error::invalid_param("suggested_only and max_depth cannot change between pages"));
    }
    skip.parse().map_err(|_| invalid())
}

/// GET /_matrix/client/v1/rooms/{roomId}/hierarchy
pub async fn hierarchy(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    Query(query): Query<HierarchyQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let limit = match query.limit {
        Some(limit) if limit < 1 => {
            return Err(Error::invalid_param(format!("limit must be at least 1, not {limit}")));
        }
        Some(limit) => limit.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let max_depth = match query.max_depth {
        Some(depth) if depth < 0 => {
            return Err(Error::invalid_param(format!("max_depth must not be negative, not {depth}")));
        }
        Some(depth) => depth.min(MAX_DEPTH),
        None => MAX_DEPTH,
    };
    let suggested_only = query.suggested_only.unwrap_or(false);
    let skip = match &query.from {
        Some(token) => parse_token(token, max_depth, suggested_only)?,
        None => 0,
    };

    let rooms = &services.rooms;
    let forbidden = || Error::forbidden(format!("you cannot view the space {room_id}"));
    if !rooms.exists(&room_id).await? {
        return Err(forbidden());
    }
    let requester = Requester::User(&session.user_id);
    let state = rooms.state(&room_id).await?;
    if !rooms.may_preview(&state, requester).await? {
        return Err(forbidden());
    }
    let walk =
        rooms.walk_hierarchy(&room_id, requester, suggested_only, max_depth as u64, skip, limit as usize).await?;
    let returned = walk.rooms.len();
    let mut body = json!({ "rooms": walk.rooms });
    if walk.more {
        body["next_batch"] = json!(token(skip + returned, max_depth, suggested_only));
    }
    Ok(Json(body))
}
