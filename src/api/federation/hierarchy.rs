//! `GET /_matrix/federation/v1/hierarchy/{roomId}` (spec: Server-Server
//! API, "Spaces"): a space and its direct children, for another server
//! whose users walk the space.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use ruma::{OwnedRoomId, RoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::FederationAuth;
use crate::{
    Services,
    api::{Path, Query},
    error::{Error, Result},
    rooms::hierarchy::{Requester, summary},
};

pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/_matrix/federation/v1/hierarchy/{room_id}", get(hierarchy))
}

#[derive(Deserialize)]
struct HierarchyQuery {
    suggested_only: Option<bool>,
}

async fn hierarchy(
    State(services): State<Arc<Services>>,
    Path(room_id): Path<String>,
    Query(query): Query<HierarchyQuery>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let room_id =
        RoomId::parse(&room_id).map_err(|e| Error::invalid_param(format!("room id {room_id:?} is invalid: {e}")))?;
    let suggested_only = query.suggested_only.unwrap_or(false);
    let requester = Requester::Server(&auth.origin);
    let rooms = &services.rooms;
    let not_found = || Error::not_found(format!("room {room_id} is unknown or not visible to {}", auth.origin));
    if !rooms.is_resident(&room_id).await? {
        return Err(not_found());
    }
    let state = rooms.state(&room_id).await?;
    if !rooms.may_preview(&state, requester).await? {
        return Err(not_found());
    }
    let root = summary(&state, suggested_only);

    // Children this server is in are summarised; those it may not show are
    // listed as inaccessible; those it does not know are left out.
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    let child_ids: Vec<String> = root["children_state"]
        .as_array()
        .map(|list| list.iter().filter_map(|c| c["state_key"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for child in child_ids {
        let Ok(child) = OwnedRoomId::try_from(child) else { continue };
        if !rooms.is_resident(&child).await? {
            continue;
        }
        let child_state = rooms.state(&child).await?;
        if rooms.may_preview(&child_state, requester).await? {
            children.push(summary(&child_state, suggested_only));
        } else {
            inaccessible.push(child.to_string());
        }
    }
    Ok(Json(json!({ "room": root, "children": children, "inaccessible_children": inaccessible })))
}
