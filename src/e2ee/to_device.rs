//! Send-to-device messaging (spec: Client-Server API, "Send-to-Device
//! messaging"): messages queued per device, delivered by `/sync`, and deleted
//! once a later `/sync` shows, by its `since` token, that the client has them.
//! Messages between servers travel as `m.direct_to_device` EDUs (spec:
//! Server-Server API, "Send-to-device messaging").

use std::collections::BTreeMap;

use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::{
    Services,
    error::{Error, Result},
    storage::{self, now_ms, writer::Stream},
    users::Session,
};

/// Messages handed to one device per `/sync` response.
const MAX_PER_SYNC: i64 = 100;

/// Messages for the users of one other server: user, device (or `*`), content.
type RemoteMessages = BTreeMap<String, Map<String, Value>>;

/// `PUT /sendToDevice/{eventType}/{txnId}`. A repeated transaction id of the
/// same device is acknowledged without sending again. Messages for users of
/// other servers leave as one `m.direct_to_device` EDU per server.
pub async fn send(
    services: &Services,
    session: &Session,
    event_type: &str,
    txn_id: &str,
    messages: BTreeMap<String, Map<String, Value>>,
) -> Result<()> {
    let mut targets: Vec<(OwnedUserId, String, String)> = Vec::new();
    let mut remote: BTreeMap<OwnedServerName, RemoteMessages> = BTreeMap::new();
    for (user, devices) in messages {
        let user_id = UserId::parse(&user)
            .map_err(|e| Error::bad_json(format!("messages: {user:?} is not a valid user id: {e}")))?;
        for (device, content) in &devices {
            if !content.is_object() {
                return Err(Error::bad_json(format!("messages.{user}.{device} must be an object")));
            }
        }
        if user_id.server_name() != services.server_name {
            remote.entry(user_id.server_name().to_owned()).or_default().insert(user, devices);
            continue;
        }
        for (device, content) in devices {
            targets.push((user_id.clone(), device, content.to_string()));
        }
    }

    let sender = session.user_id.to_string();
    let sender_device = session.device_id.clone();
    let event_type_owned = event_type.to_owned();
    let txn_id = txn_id.to_owned();
    let recipients = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                if !storage::e2ee::claim_to_device_txn(&mut txn.conn, &sender, &sender_device, &txn_id, now_ms())
                    .await?
                {
                    return Ok(None);
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
                            &event_type_owned,
                            &content,
                        )
                        .await?;
                    }
                    recipients.push(user_id);
                }
                Ok(Some(recipients))
            })
        })
        .await?;
    let Some(recipients) = recipients else {
        return Ok(());
    };
    services.notifier.wake(recipients.iter().map(|u| &**u));
    for (server, messages) in remote {
        let edu = json!({
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": session.user_id,
                "type": event_type,
                "message_id": crate::rooms::random_localpart(24),
                "messages": messages,
            },
        });
        // NOTE: the EDU is queued after the messages' transaction committed, so
        // a crash in between loses the messages for other servers.
        if let Err(err) = services.sender.queue_edu(&server, &edu).await {
            tracing::warn!(error = %err, destination = %server, "could not queue a to-device EDU");
        }
    }
    Ok(())
}

/// Takes in an `m.direct_to_device` EDU from `origin`: each message goes to
/// the to-device inbox of the local device it names (`*`: every device of
/// the user), once per `message_id`. The sender must be a user of the origin.
pub async fn receive(services: &Services, origin: &ServerName, content: &Value) -> Result<()> {
    let sender = content["sender"]
        .as_str()
        .and_then(|id| UserId::parse(id).ok())
        .ok_or_else(|| Error::bad_json("sender is missing or invalid"))?;
    if sender.server_name() != origin {
        return Err(Error::forbidden(format!("{sender} does not belong to {origin}")));
    }
    let event_type =
        content["type"].as_str().ok_or_else(|| Error::bad_json("type is missing or not a string"))?.to_owned();
    let message_id = content["message_id"]
        .as_str()
        .ok_or_else(|| Error::bad_json("message_id is missing or not a string"))?
        .to_owned();
    let messages = content["messages"].as_object().ok_or_else(|| Error::bad_json("messages is not an object"))?;
    let mut targets: Vec<(OwnedUserId, String, String)> = Vec::new();
    for (user, devices) in messages {
        let Ok(user_id) = UserId::parse(user) else { continue };
        if user_id.server_name() != services.server_name {
            continue;
        }
        let Some(devices) = devices.as_object() else { continue };
        for (device, message) in devices {
            if message.is_object() {
                targets.push((user_id.clone(), device.clone(), message.to_string()));
            }
        }
    }
    let origin = origin.to_string();
    let sender = sender.to_string();
    let recipients = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                if !storage::e2ee_federation::claim_inbound_message(&mut txn.conn, &origin, &message_id, now_ms())
                    .await?
                {
                    return Ok(Vec::new());
                }
                let mut recipients = Vec::new();
                for (user_id, device, message) in targets {
                    let devices = if device == "*" {
                        storage::e2ee::device_ids(&mut txn.conn, user_id.as_str()).await?
                    } else if storage::e2ee::device_ids(&mut txn.conn, user_id.as_str()).await?.contains(&device) {
                        vec![device]
                    } else {
                        Vec::new()
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
                            &message,
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
