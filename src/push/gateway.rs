//! Delivery of notifications to push gateways (spec: Push Gateway API,
//! `POST /_matrix/push/v1/notify`).
//!
//! A background task follows the stored push actions in stream order after
//! they commit, so sending a message never waits for a gateway. Each `http`
//! pusher has its own queue and worker, which retries a failed delivery with
//! exponential backoff; a gateway that rejects a pushkey loses that pusher.

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{RoomId, events::StateEventType};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, watch};

use crate::{
    Services,
    config::PushConfig,
    storage::{
        self,
        push::{PushAction, PusherRow},
        writer::Stream,
    },
};

/// Stream positions read per query: the rows of at most this many events.
const WINDOW: i64 = 200;
/// The sender's name in `push_sender_positions`.
const POSITION_NAME: &str = "gateway";
/// The shortest interval between two writes of the sender's position.
const POSITION_STORE_INTERVAL: Duration = Duration::from_secs(1);
/// Notifications waiting per pusher; further ones are dropped while a gateway is down.
const QUEUE_PER_PUSHER: usize = 1_000;

/// One notification for one pusher.
struct Delivery {
    user_id: String,
    event_id: String,
    body: Value,
}

/// Identifies a pusher's queue: user, app id and pushkey.
type PusherKey = (String, String, String);

/// Starts the sender. It ends when `stop` turns true.
pub fn spawn(services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(services.config.push.gateway_timeout_secs))
            .build()
        {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "could not create the push gateway client; push gateways get no notifications");
                return;
            }
        };
        let mut position = match start_position(&services).await {
            Ok(position) => position,
            Err(err) => {
                tracing::error!(error = %err, "could not read the push gateway sender's position; push gateways get no notifications");
                return;
            }
        };
        let mut stored = position;
        let mut stored_at = tokio::time::Instant::now();
        let mut queues: HashMap<PusherKey, mpsc::Sender<Delivery>> = HashMap::new();
        let new_actions = services.push.new_actions.clone();
        let max_age_ms = (services.config.push.max_delivery_age_secs as i64).saturating_mul(1000);
        loop {
            let current = services.db.writer.positions().current(Stream::Events);
            if current > position {
                let upto = current.min(position + WINDOW);
                match storage::push::actions_for_pushers(&services.db.pool, position, upto).await {
                    Ok(actions) => {
                        let oldest = storage::now_ms().saturating_sub(max_age_ms);
                        for action in actions.iter().filter(|a| a.ts >= oldest) {
                            dispatch(&services, &client, &mut queues, action).await;
                        }
                        position = upto;
                        if upto < current {
                            continue;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not read push actions; retrying in a second")
                    }
                }
            }
            // The position is stored at most once per interval, so a busy room
            // costs no extra write per message; after a crash the notifications
            // of that last interval may be pushed twice, never lost.
            if position != stored && stored_at.elapsed() >= POSITION_STORE_INTERVAL {
                match store_position(&services, position).await {
                    Ok(()) => {
                        stored = position;
                        stored_at = tokio::time::Instant::now();
                    }
                    Err(err) => tracing::warn!(error = %err, "could not store the push gateway sender's position"),
                }
            }
            tokio::select! {
                _ = new_actions.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {
                    if position != stored && let Err(err) = store_position(&services, position).await {
                        tracing::warn!(error = %err, "could not store the push gateway sender's position");
                    }
                    break;
                }
            }
        }
    });
}

/// Returns where the sender starts: its stored position, or the newest
/// event on its first start.
async fn start_position(services: &Services) -> crate::error::Result<i64> {
    let stored = storage::push::sender_position(&services.db.pool, POSITION_NAME).await?;
    match stored {
        Some(position) => Ok(position),
        None => {
            let position = services.db.writer.positions().current(Stream::Events);
            store_position(services, position).await?;
            Ok(position)
        }
    }
}

async fn store_position(services: &Services, position: i64) -> crate::error::Result<()> {
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                storage::push::set_sender_position(&mut txn.conn, POSITION_NAME, position).await?;
                Ok(())
            })
        })
        .await
}

/// Queues the notification of one push action for each of the user's `http` pushers.
async fn dispatch(
    services: &Arc<Services>,
    client: &reqwest::Client,
    queues: &mut HashMap<PusherKey, mpsc::Sender<Delivery>>,
    action: &PushAction,
) {
    let pushers = match storage::push::pushers_of(&services.db.pool, &action.user_id).await {
        Ok(pushers) => pushers,
        Err(err) => {
            tracing::warn!(error = %err, user_id = %action.user_id, "could not read pushers; notification not pushed");
            return;
        }
    };
    let pushers: Vec<PusherRow> = pushers.into_iter().filter(|p| p.kind == "http").collect();
    if pushers.is_empty() {
        return;
    }
    let details = match EventDetails::load(services, action).await {
        Ok(details) => details,
        Err(err) => {
            tracing::warn!(error = %err, event_id = %action.event_id, "could not read an event to push");
            return;
        }
    };
    for pusher in pushers {
        let key = (pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone());
        let delivery = Delivery {
            user_id: action.user_id.clone(),
            event_id: action.event_id.clone(),
            body: details.body(&pusher, action),
        };
        let queue = queues.entry(key.clone()).or_insert_with(|| start_worker(services.clone(), client.clone(), pusher));
        match queue.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(user_id = %key.0, app_id = %key.1, "push queue full; notification dropped");
            }
            Err(mpsc::error::TrySendError::Closed(delivery)) => {
                // The worker ended because the pusher was removed; a pusher set
                // up again later gets a new worker.
                queues.remove(&key);
                let Ok(Some(pusher)) = find_pusher(services, &key).await else {
                    continue;
                };
                let queue = start_worker(services.clone(), client.clone(), pusher);
                let _ = queue.try_send(delivery);
                queues.insert(key, queue);
            }
        }
    }
}

async fn find_pusher(services: &Services, key: &PusherKey) -> Result<Option<PusherRow>, sqlx::Error> {
    let pushers = storage::push::pushers_of(&services.db.pool, &key.0).await?;
    Ok(pushers.into_iter().find(|p| p.app_id == key.1 && p.pushkey == key.2 && p.kind == "http"))
}

/// The fields of an event that a notification shows, read once for all pushers.
struct EventDetails {
    kind: String,
    sender: String,
    sender_display_name: Option<String>,
    room_name: Option<String>,
    room_alias: Option<String>,
    content: Value,
    user_is_target: bool,
    unread: i64,
}

impl EventDetails {
    async fn load(services: &Services, action: &PushAction) -> crate::error::Result<Self> {
        let event = storage::events::get(&services.db.pool, &action.event_id)
            .await?
            .ok_or_else(|| crate::error::Error::not_found("event of a push action"))?;
        let pdu = &event.pdu;
        let room_id = RoomId::parse(action.room_id.as_str()).map_err(|e| crate::error::Error::internal("push", e))?;
        let room = services.rooms.state(&room_id).await?;
        let sender_display_name =
            room.get(&StateEventType::RoomMember, pdu.sender.as_str()).and_then(|m| m.content_str("displayname"));
        let room_name = room.get(&StateEventType::RoomName, "").and_then(|e| e.content_str("name"));
        let room_alias = room.get(&StateEventType::RoomCanonicalAlias, "").and_then(|e| e.content_str("alias"));
        let unread = storage::push::unread_counts(&services.db.pool, &action.user_id, None)
            .await?
            .iter()
            .map(|(_, _, notifications, _)| notifications)
            .sum();
        Ok(Self {
            kind: pdu.kind.to_string(),
            sender: pdu.sender.to_string(),
            sender_display_name,
            room_name,
            room_alias,
            content: pdu.content_value(),
            user_is_target: pdu.state_key.as_deref() == Some(action.user_id.as_str()),
            unread,
        })
    }

    /// Builds the request body for one pusher, in its `data.format`.
    fn body(&self, pusher: &PusherRow, action: &PushAction) -> Value {
        let actions: Vec<Value> = serde_json::from_str(&action.actions).unwrap_or_default();
        let tweaks = tweaks(&actions);
        let prio =
            if tweaks.contains_key("sound") || tweaks.get("highlight") == Some(&json!(true)) { "high" } else { "low" };
        let mut data: Map<String, Value> = serde_json::from_str(&pusher.data).unwrap_or_default();
        data.remove("url");
        let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
        let device = json!({
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "pushkey_ts": pusher.created_ts / 1000,
            "data": data,
            "tweaks": tweaks,
        });
        let mut notification = json!({
            "event_id": action.event_id,
            "room_id": action.room_id,
            "counts": { "unread": self.unread },
            "prio": prio,
            "devices": [device],
        });
        if !event_id_only {
            let full = notification.as_object_mut().expect("notification is an object");
            full.insert("type".into(), json!(self.kind));
            full.insert("sender".into(), json!(self.sender));
            full.insert("content".into(), self.content.clone());
            if let Some(name) = &self.sender_display_name {
                full.insert("sender_display_name".into(), json!(name));
            }
            if let Some(name) = &self.room_name {
                full.insert("room_name".into(), json!(name));
            }
            if let Some(alias) = &self.room_alias {
                full.insert("room_alias".into(), json!(alias));
            }
            if self.user_is_target {
                full.insert("user_is_target".into(), json!(true));
            }
        }
        json!({ "notification": notification })
    }
}

/// Collects the `set_tweak` actions into the `tweaks` object of a device. A highlight
/// tweak without a value means `true`.
fn tweaks(actions: &[Value]) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions {
        let Some(name) = action.get("set_tweak").and_then(Value::as_str) else {
            continue;
        };
        let value = action.get("value").cloned().unwrap_or(if name == "highlight" { json!(true) } else { Value::Null });
        tweaks.insert(name.to_owned(), value);
    }
    tweaks
}

/// Starts the worker that delivers one pusher's notifications in order. It
/// ends when the pusher is removed.
fn start_worker(services: Arc<Services>, client: reqwest::Client, pusher: PusherRow) -> mpsc::Sender<Delivery> {
    let (sender, mut receiver) = mpsc::channel::<Delivery>(QUEUE_PER_PUSHER);
    let key: PusherKey = (pusher.user_id, pusher.app_id, pusher.pushkey);
    tokio::spawn(async move {
        let config = services.config.push.clone();
        while let Some(delivery) = receiver.recv().await {
            // The pusher is read again, so a change of its URL or its removal applies at once.
            let pusher = match find_pusher(&services, &key).await {
                Ok(Some(pusher)) => pusher,
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, user_id = %key.0, "could not read a pusher; notification not pushed");
                    continue;
                }
            };
            // A notification read before it could be pushed is skipped.
            if storage::push::is_read(&services.db.pool, &delivery.user_id, &delivery.event_id).await.unwrap_or(false) {
                continue;
            }
            let url = serde_json::from_str::<Value>(&pusher.data)
                .ok()
                .and_then(|data| data.get("url").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            if let Outcome::Rejected = deliver(&client, &url, &delivery, &config, &pusher).await {
                remove_pusher(&services, &pusher).await;
                break;
            }
        }
    });
    sender
}

enum Outcome {
    Delivered,
    /// The gateway rejected this pusher's pushkey.
    Rejected,
    Failed,
}

/// Posts one notification, retrying with exponential backoff.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    delivery: &Delivery,
    config: &PushConfig,
    pusher: &PusherRow,
) -> Outcome {
    let mut delay = Duration::from_millis(config.retry_initial_ms);
    let max_delay = Duration::from_millis(config.retry_max_ms);
    for attempt in 1..=config.max_attempts.max(1) {
        let failure = match client.post(url).json(&delivery.body).send().await {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let rejected =
                    body["rejected"].as_array().is_some_and(|keys| keys.iter().any(|k| k == &json!(pusher.pushkey)));
                return if rejected { Outcome::Rejected } else { Outcome::Delivered };
            }
            Ok(response) if response.status().is_client_error() && response.status().as_u16() != 429 => {
                tracing::warn!(
                    status = response.status().as_u16(),
                    user_id = %delivery.user_id,
                    app_id = %pusher.app_id,
                    event_id = %delivery.event_id,
                    "push gateway refused a notification; not retrying"
                );
                return Outcome::Failed;
            }
            Ok(response) => format!("status {}", response.status().as_u16()),
            Err(err) => err.to_string(),
        };
        if attempt == config.max_attempts.max(1) {
            tracing::warn!(
                error = %failure,
                attempts = attempt,
                user_id = %delivery.user_id,
                app_id = %pusher.app_id,
                event_id = %delivery.event_id,
                "push gateway unreachable; notification dropped"
            );
            break;
        }
        tracing::info!(
            error = %failure,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            user_id = %delivery.user_id,
            app_id = %pusher.app_id,
            "push gateway delivery failed; retrying"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max_delay);
    }
    Outcome::Failed
}

async fn remove_pusher(services: &Services, pusher: &PusherRow) {
    let (user, app_id, pushkey) = (pusher.user_id.clone(), pusher.app_id.clone(), pusher.pushkey.clone());
    let result = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                storage::push::delete_pusher(&mut txn.conn, &user, &app_id, &pushkey).await?;
                Ok(())
            })
        })
        .await;
    match result {
        Ok(()) => {
            tracing::info!(user_id = %pusher.user_id, app_id = %pusher.app_id, "push gateway rejected the pushkey; pusher removed")
        }
        Err(err) => {
            tracing::warn!(error = %err, user_id = %pusher.user_id, "could not remove a rejected pusher")
        }
    }
}
