//! `PUT /_matrix/federation/v1/send/{txnId}` (spec: Server-Server API,
//! "Transactions"): the PDUs of a transaction each get a result, the EDUs
//! `m.typing`, `m.receipt` and `m.presence` go into the local ephemeral
//! stores, and the end-to-end encryption EDUs (`m.direct_to_device`,
//! `m.device_list_update`, `m.signing_key_update`) to `e2ee`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::put,
};
use ruma::{OwnedRoomId, RoomId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::FederationAuth;
use crate::{
    Services,
    error::{Error, Result},
    rooms::{remote::Rejected, transaction::ReceivedPdu},
    storage::{self, writer::Stream},
};

/// Time spent fetching missing events for one transaction, at most.
const FETCH_BUDGET: Duration = Duration::from_secs(20);

pub fn router() -> Router<Arc<Services>> {
    Router::new().route("/_matrix/federation/v1/send/{txn_id}", put(send))
}

#[derive(Deserialize)]
struct Transaction {
    origin: String,
    #[serde(default)]
    pdus: Vec<Value>,
    #[serde(default)]
    edus: Vec<Value>,
}

/// PUT /_matrix/federation/v1/send/{txnId}
async fn send(
    State(services): State<Arc<Services>>,
    Path(_txn_id): Path<String>,
    auth: FederationAuth,
) -> Result<Json<Value>> {
    let txn: Transaction =
        serde_json::from_slice(&auth.body).map_err(|e| Error::bad_json(format!("the transaction is invalid: {e}")))?;
    if txn.origin != auth.origin.as_str() {
        return Err(Error::forbidden(format!(
            "the transaction's origin {} is not the server that signed the request, {}",
            txn.origin, auth.origin
        )));
    }
    if txn.pdus.len() > 50 || txn.edus.len() > 100 {
        return Err(Error::bad_json("a transaction holds at most 50 PDUs and 100 EDUs"));
    }

    // A repeated transaction id gets the same results again: every PDU is
    // then a duplicate, which is accepted without a second copy.
    let mut results = Map::new();
    // Fetching missing events for the whole transaction stops at this bound,
    // so that a failing sender still gets its answer in time.
    let deadline = tokio::time::Instant::now() + FETCH_BUDGET;
    // Accepted PDUs commit in the background while the next ones are
    // checked; the response waits for every commit.
    let mut commits = Vec::new();
    for ReceivedPdu { event_id, outcome } in services.rooms.receive_transaction(&auth.origin, txn.pdus, deadline).await
    {
        let result = match outcome {
            Ok((received, commit)) => {
                tracing::debug!(%event_id, ?received, "received a PDU");
                commits.extend(commit.map(|commit| (event_id.clone(), commit)));
                json!({})
            }
            Err(Rejected(reason)) => {
                tracing::info!(%event_id, reason, "rejected a PDU");
                json!({ "error": reason })
            }
        };
        results.insert(event_id.to_string(), result);
    }
    for (event_id, commit) in commits {
        if let Err(Rejected(reason)) = commit.await {
            tracing::warn!(%event_id, reason, "a received PDU failed to commit");
            results.insert(event_id.to_string(), json!({ "error": reason }));
        }
    }
    for edu in txn.edus {
        if let Err(err) = receive_edu(&services, &auth.origin, &edu).await {
            tracing::info!(origin = %auth.origin, error = %err.message, "ignoring an EDU");
        }
    }
    Ok(Json(json!({ "pdus": results })))
}

/// Takes one EDU into the local stores. Only users of the origin server may
/// be named in it, and only in rooms where they are joined.
async fn receive_edu(services: &Services, origin: &ServerName, edu: &Value) -> Result<()> {
    let content = &edu["content"];
    match edu["edu_type"].as_str() {
        Some("m.typing") => {
            let (room_id, user_id) = (room_field(content)?, user_field(content, origin)?);
            let room = joined(services, &room_id, &user_id).await?;
            let typing = content["typing"].as_bool().unwrap_or(false);
            if services.typing.set(&room_id, &user_id, typing, Duration::from_secs(30)) {
                let members = room.local_members(&services.server_name);
                services.notifier.wake(members.iter().map(|u| &**u));
            }
        }
        Some("m.receipt") => {
            let Some(rooms) = content.as_object() else { return Err(Error::bad_json("content is not an object")) };
            for (room_id, by_type) in rooms {
                let room_id = RoomId::parse(room_id).map_err(|e| Error::bad_json(format!("room id: {e}")))?;
                let Some(read) = by_type.get("m.read").and_then(Value::as_object) else { continue };
                for (user_id, receipt) in read {
                    let user_id = UserId::parse(user_id).map_err(|e| Error::bad_json(format!("user id: {e}")))?;
                    if user_id.server_name() != origin {
                        continue;
                    }
                    let Ok(room) = joined(services, &room_id, &user_id).await else { continue };
                    for event_id in receipt["event_ids"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        store_receipt(services, &room_id, &user_id, event_id, &receipt["data"]).await?;
                    }
                    let members = room.local_members(&services.server_name);
                    services.notifier.wake(members.iter().map(|u| &**u));
                }
            }
        }
        Some("m.presence") => {
            for update in content["push"].as_array().into_iter().flatten() {
                let Ok(user_id) = user_field(update, origin) else { continue };
                let Some(state @ ("online" | "offline" | "unavailable")) = update["presence"].as_str() else {
                    continue;
                };
                let status = update["status_msg"].as_str().map(str::to_owned);
                crate::api::client::presence::update(services, &user_id, state, Some(status), false).await?;
            }
        }
        Some("m.direct_to_device") => crate::e2ee::to_device::receive(services, origin, content).await?,
        Some("m.device_list_update") => {
            crate::e2ee::device_updates::receive_device_list_update(services, origin, content).await?;
        }
        Some("m.signing_key_update") => {
            crate::e2ee::device_updates::receive_signing_key_update(services, origin, content).await?;
        }
        _ => {}
    }
    Ok(())
}

fn room_field(content: &Value) -> Result<OwnedRoomId> {
    content["room_id"]
        .as_str()
        .and_then(|id| RoomId::parse(id).ok())
        .ok_or_else(|| Error::bad_json("room_id is missing or invalid"))
}

fn user_field(content: &Value, origin: &ServerName) -> Result<ruma::OwnedUserId> {
    let user_id = content["user_id"]
        .as_str()
        .and_then(|id| UserId::parse(id).ok())
        .ok_or_else(|| Error::bad_json("user_id is missing or invalid"))?;
    if user_id.server_name() != origin {
        return Err(Error::forbidden(format!("{user_id} does not belong to {origin}")));
    }
    Ok(user_id)
}

async fn joined(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<Arc<crate::rooms::state::RoomState>> {
    if !services.rooms.exists(room_id).await? {
        return Err(Error::not_found(format!("room {room_id} is not known here")));
    }
    let room = services.rooms.state(room_id).await?;
    if !room.is_joined(user_id) {
        return Err(Error::forbidden(format!("{user_id} is not joined to {room_id}")));
    }
    Ok(room)
}

async fn store_receipt(
    services: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &str,
    data: &Value,
) -> Result<()> {
    let Some(event) = storage::events::get(&services.db.pool, event_id).await?.filter(|e| e.pdu.room_id == room_id)
    else {
        return Ok(());
    };
    let thread_id = data["thread_id"].as_str().unwrap_or_default().to_owned();
    let ts = data["ts"].as_i64().unwrap_or_else(storage::now_ms);
    let (room, user, event_id, event_stream) =
        (room_id.to_string(), user_id.to_string(), event_id.to_owned(), event.stream);
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                let stream = txn.next_position(Stream::Receipts);
                storage::receipts::put(
                    &mut txn.conn,
                    &room,
                    &user,
                    "m.read",
                    &thread_id,
                    &event_id,
                    event_stream,
                    ts,
                    stream,
                )
                .await?;
                Ok(())
            })
        })
        .await?;
    Ok(())
}
