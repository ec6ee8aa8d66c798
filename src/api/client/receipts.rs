//! Receipts and read markers (spec: Client-Server API, "Receipts" and "Read
//! and unread markers").

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{EventId, RoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::{joined_room, parse_room_id};
use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    ephemeral::receipts::{PRIVATE, PUBLIC},
    error::{Error, Result},
    storage::{self, writer::Stream},
    users::Session,
};

#[derive(Deserialize)]
pub struct ReceiptBody {
    thread_id: Option<String>,
}

async fn store_receipt(
    services: &Services,
    session: &Session,
    room_id: &RoomId,
    receipt_type: &str,
    event_id: &str,
    thread_id: Option<String>,
) -> Result<()> {
    let event_id =
        EventId::parse(event_id).map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    let room = joined_room(services, room_id, &session.user_id).await?;
    let event = storage::events::get(&services.db.pool, event_id.as_str())
        .await?
        .filter(|e| e.pdu.room_id == room_id)
        .ok_or_else(|| Error::not_found(format!("event {event_id} not found in room {room_id}")))?;
    let thread_id = match thread_id.as_deref() {
        None => String::new(),
        Some("") => return Err(Error::invalid_param("thread_id must not be empty")),
        Some(thread) => thread.to_owned(),
    };

    let thread_for_edu = (!thread_id.is_empty()).then(|| thread_id.clone());
    let room_owned = room_id.to_string();
    let user = session.user_id.to_string();
    let receipt_type_owned = receipt_type.to_owned();
    let event_owned = event_id.to_string();
    let event_stream = event.stream;
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let stream = txn.next_position(Stream::Receipts);
                storage::receipts::put(
                    &mut txn.conn,
                    &room_owned,
                    &user,
                    &receipt_type_owned,
                    &thread_id,
                    &event_owned,
                    event_stream,
                    storage::now_ms(),
                    stream,
                )
                .await?;
                Ok(())
            })
        })
        .await?;
    if receipt_type == PRIVATE {
        services.notifier.wake([&*session.user_id]);
    } else {
        let members = room.local_members(&services.server_name);
        services.notifier.wake(members.iter().map(|u| &**u));
        // Public receipts go to the other servers in the room; private ones stay here.
        let mut data = serde_json::json!({"ts": storage::now_ms()});
        if let Some(thread) = &thread_for_edu {
            data["thread_id"] = serde_json::json!(thread);
        }
        let edu = serde_json::json!({
            "edu_type": "m.receipt",
            "content": {
                room_id.as_str(): {
                    receipt_type: {
                        session.user_id.as_str(): {"event_ids": [event_id.as_str()], "data": data}
                    }
                }
            },
        });
        services.rooms.send_edu(&room, &edu).await;
    }
    Ok(())
}

async fn set_fully_read(services: &Services, session: &Session, room_id: &RoomId, event_id: &str) -> Result<()> {
    let event_id =
        EventId::parse(event_id).map_err(|e| Error::invalid_param(format!("event id {event_id:?} is invalid: {e}")))?;
    joined_room(services, room_id, &session.user_id).await?;
    super::account_data::store(
        services,
        &session.user_id,
        room_id.as_str(),
        "m.fully_read",
        &json!({ "event_id": event_id }),
    )
    .await
}

/// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
pub async fn receipt(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((room_id, receipt_type, event_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<ReceiptBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    match receipt_type.as_str() {
        PUBLIC | PRIVATE => {
            store_receipt(&services, &session, &room_id, &receipt_type, &event_id, body.thread_id).await?
        }
        "m.fully_read" => set_fully_read(&services, &session, &room_id, &event_id).await?,
        other => {
            return Err(Error::invalid_param(format!("receipt type {other:?} is not supported")));
        }
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// POST /_matrix/client/v3/rooms/{roomId}/read_markers
pub async fn read_markers(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(room_id): Path<String>,
    JsonBody(body): JsonBody<ReadMarkersBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    if let Some(event_id) = &body.fully_read {
        set_fully_read(&services, &session, &room_id, event_id).await?;
    }
    if let Some(event_id) = &body.read {
        store_receipt(&services, &session, &room_id, PUBLIC, event_id, None).await?;
    }
    if let Some(event_id) = &body.read_private {
        store_receipt(&services, &session, &room_id, PRIVATE, event_id, None).await?;
    }
    Ok(Json(json!({})))
}
