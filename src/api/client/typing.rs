//! Typing notifications (spec: Client-Server API, "Typing Notifications").

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{joined_room, parse_room_id, parse_user_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
};

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
pub async fn set(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TypingBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let user_id = parse_user_id(&user_id, "userId")?;
    if user_id != session.user_id {
        return Err(Error::forbidden("you can only set your own typing state"));
    }
    let room = joined_room(&services, &room_id, &session.user_id).await?;
    let timeout = Duration::from_millis(body.timeout.unwrap_or(30_000));
    if services.typing.set(&room_id, &user_id, body.typing, timeout) {
        let members = room.local_members(&services.server_name);
        services.notifier.wake(members.iter().map(|u| &**u));
        let edu = json!({
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": user_id, "typing": body.typing},
        });
        services.rooms.send_edu(&room, &edu).await;
    }
    Ok(Json(json!({})))
}
