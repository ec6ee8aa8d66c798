//! Send-to-device messaging (spec: Client-Server API, "Send-to-Device
//! messaging"): messages queued per device, delivered by `/sync`, and deleted
//! once a later `/sync` shows, by its `since` token, that the client has them.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    Services,
    error::{Error, Result},
    storage::{self, now_ms, writer::Stream},
    users::Session,
};

/// Messages handed to one device per `/sync` response.
const MAX_PER_SYNC: i64 = 100;

/// `PUT /sendToDevice/{eventType}/{txnId}`. A repeated transaction id of the
/// same device is acknowledged without sending again.
pub async fn send(
    services: &Services,
    session: &Session,
    event_type: &str,
    txn_id: &str,
    messages: BTreeMap<String, Map<String, Value>>,
) -> Result<()> {
    let mut targets: Vec<(OwnedUserId, String, String)> = Vec::new();
    for (user, devices) in messages {
        let user_id = UserId::parse(&user)
            .map_err(|e| Error::bad_json(format!("messages: {user:?} is not a valid user id: {e}")))?;
        if user_id.server_name() != services.server_name {
            // NOTE: messages to users on other servers need federation; they are dropped.
            tracing::debug!(%user_id, "dropping a to-device message for a remote user");
            continue;
        }
        for (device, content) in devices {
            if !content.is_object() {
                return Err(Error::bad_json(format!("messages.{user}.{device} must be an object")));
            }
            targets.push((user_id.clone(), device, content.to_string()));
        }
    }

    let sender = session.user_id.to_string();
    let sender_device = session.device_id.clone();
    let event_type = event_type.to_owned();
    let txn_id = txn_id.to_owned();
    let recipients = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                if !storage::e2ee::claim_to_device_txn(&mut txn.conn, &sender, &sender_device, &txn_id, now_ms())
                    .await?
                {
                    return Ok(Vec::new());
                }
                let mut recipients = Vec::new();
                for (user_id, device, content) in targets {
                    let devices = if device == "*" {
                        storage::e2ee::device_ids(&mut txn.conn, user_id.as_str()).await?
                    } else {
                        vec![device]
                    };
                    for device in devices {
                        let position = txn.next_position(Stream::ToDevice);
                        storage::e2ee::insert_to_device(
                            &mut txn.conn,
                            position,
                            user_id.as_str(),
                            &device,
                            &sender,
                            &event_type,
                            &content,
                        )
                        .await?;
                    }
                    recipients.push(user_id);
                }
                Ok(recipients)
            })
        })
        .await?;
    services.notifier.wake(recipients.iter().map(|u| &**u));
    Ok(())
}

/// Messages that `/sync` delivers to a device, with the to-device position
/// for `next_batch` (lower than `upto` when more messages wait).
pub struct Delivery {
    pub events: Vec<Value>,
    pub position: i64,
}

/// Deletes what the client acknowledged with `since` and returns the messages
/// waiting up to `upto`.
pub async fn for_sync(services: &Services, session: &Session, since: Option<i64>, upto: i64) -> Result<Delivery> {
    let pool = &services.db.pool;
    let user = session.user_id.to_string();
    let device = session.device_id.clone();
    if let Some(acknowledged) = since.filter(|s| *s > 0)
        && storage::e2ee::has_to_device_upto(pool, &user, &device, acknowledged).await?
    {
        let (user, device) = (user.clone(), device.clone());
        services
            .db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    storage::e2ee::delete_to_device_upto(&mut txn.conn, &user, &device, acknowledged).await?;
                    Ok(())
                })
            })
            .await?;
    }
    let rows = storage::e2ee::to_device_pending(pool, &user, &device, upto, MAX_PER_SYNC).await?;
    let position = if rows.len() as i64 == MAX_PER_SYNC { rows.last().map_or(upto, |r| r.stream_id) } else { upto };
    let events = rows
        .into_iter()
        .map(|row| {
            let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
            json!({ "type": row.event_type, "sender": row.sender, "content": content })
        })
        .collect();
    Ok(Delivery { events, position })
}
