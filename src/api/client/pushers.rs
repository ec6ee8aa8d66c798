//! Pushers and the notification list (spec: Client-Server API, "Push
//! Notifications", "Client behaviour").

use std::{collections::HashMap, sync::Arc};

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Query},
    error::{Error, Result},
    rooms::serialize::client_events,
    storage::{self, push::PusherRow},
};

/// Longest `app_id` the spec allows.
const MAX_APP_ID_LEN: usize = 64;
/// Longest `pushkey` the spec allows.
const MAX_PUSHKEY_LEN: usize = 512;

fn pusher_json(row: &PusherRow) -> Value {
    let data: Value = serde_json::from_str(&row.data).unwrap_or_else(|_| json!({}));
    let mut pusher = json!({
        "app_id": row.app_id,
        "pushkey": row.pushkey,
        "kind": row.kind,
        "app_display_name": row.app_display_name,
        "device_display_name": row.device_display_name,
        "lang": row.lang,
        "data": data,
    });
    if let Some(tag) = &row.profile_tag {
        pusher["profile_tag"] = json!(tag);
    }
    pusher
}

/// GET /_matrix/client/v3/pushers
pub async fn list(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let rows = storage::push::pushers_of(&services.db.pool, session.user_id.as_str()).await?;
    Ok(Json(json!({ "pushers": rows.iter().map(pusher_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
pub struct SetPusherBody {
    app_id: String,
    pushkey: String,
    /// `null` deletes the pusher.
    kind: Option<String>,
    app_display_name: Option<String>,
    device_display_name: Option<String>,
    profile_tag: Option<String>,
    lang: Option<String>,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    append: bool,
}

fn required(value: Option<String>, field: &str) -> Result<String> {
    value.ok_or_else(|| Error::bad_json(format!("{field}: missing field, required unless kind is null")))
}

/// POST /_matrix/client/v3/pushers/set
pub async fn set(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<SetPusherBody>,
) -> Result<Json<Value>> {
    if body.app_id.is_empty() || body.app_id.len() > MAX_APP_ID_LEN {
        return Err(Error::bad_json(format!("app_id: must be 1 to {MAX_APP_ID_LEN} characters long")));
    }
    if body.pushkey.is_empty() || body.pushkey.len() > MAX_PUSHKEY_LEN {
        return Err(Error::bad_json(format!("pushkey: must be 1 to {MAX_PUSHKEY_LEN} bytes long")));
    }
    let user = session.user_id.to_string();
    let Some(kind) = body.kind else {
        let (app_id, pushkey) = (body.app_id, body.pushkey);
        services
            .db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    storage::push::delete_pusher(&mut txn.conn, &user, &app_id, &pushkey).await?;
                    Ok(())
                })
            })
            .await?;
        return Ok(Json(json!({})));
    };

    let data = body.data.ok_or_else(|| Error::bad_json("data: missing field, required unless kind is null"))?;
    match kind.as_str() {
        "http" => {
            let url = data
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid_param("data.url: missing, required for http pushers"))?;
            let parsed = url::Url::parse(url)
                .map_err(|e| Error::invalid_param(format!("data.url {url:?} is not a valid URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/_matrix/push/v1/notify" {
                return Err(Error::invalid_param(format!(
                    "data.url {url:?} is invalid: it must be an http(s) URL whose path is /_matrix/push/v1/notify"
                )));
            }
            if let Some(format) = data.get("format")
                && format.as_str() != Some("event_id_only")
            {
                return Err(Error::invalid_param(
                    "data.format is invalid: the only supported format is \"event_id_only\"",
                ));
            }
        }
        "email" => {
            let owned = storage::threepid::owner(&services.db.pool, "email", &body.pushkey).await?;
            if owned.as_deref() != Some(session.user_id.as_str()) {
                return Err(Error::invalid_param(format!(
                    "pushkey {:?} is not a verified email address of this account: add it with /account/3pid/add first",
                    body.pushkey
                )));
            }
        }
        other => {
            return Err(Error::invalid_param(format!(
                "kind {other:?} is not supported: use \"http\", \"email\" or null"
            )));
        }
    }
    let kind_is_email = kind == "email";
    let row = PusherRow {
        user_id: user,
        app_id: body.app_id,
        pushkey: body.pushkey,
        kind,
        app_display_name: required(body.app_display_name, "app_display_name")?,
        device_display_name: required(body.device_display_name, "device_display_name")?,
        profile_tag: body.profile_tag,
        lang: required(body.lang, "lang")?,
        data: Value::Object(data).to_string(),
        created_ts: storage::now_ms(),
        unsubscribe_token: (kind_is_email).then(|| crate::rooms::random_localpart(32)),
    };
    let append = body.append;
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                storage::push::set_pusher(&mut txn.conn, &row, append).await?;
                Ok(())
            })
        })
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

/// Default and maximum page sizes of `GET /notifications`.
const DEFAULT_NOTIFICATIONS: i64 = 20;
const MAX_NOTIFICATIONS: i64 = 100;

/// GET /_matrix/client/v3/notifications
pub async fn notifications(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<NotificationsQuery>,
) -> Result<Json<Value>> {
    let before = match query.from.as_deref() {
        None | Some("") => i64::MAX,
        Some(token) => token.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::invalid_param(format!("from {token:?} is invalid: use a next_token of an earlier response"))
        })?,
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_NOTIFICATIONS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Error::invalid_param(format!("limit {text:?} is invalid: expected a positive integer")))?
            .min(MAX_NOTIFICATIONS),
    };
    let only_highlight = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "only {other:?} is invalid: the only supported value is \"highlight\""
            )));
        }
    };

    let pool = &services.db.pool;
    let user = session.user_id.as_str();
    let rows = storage::push::notifications(pool, user, before, limit + 1, only_highlight).await?;
    let has_more = rows.len() as i64 > limit;
    let rows = &rows[..rows.len().min(limit as usize)];

    let ids: Vec<String> = rows.iter().map(|r| r.action.event_id.clone()).collect();
    let stored: HashMap<String, storage::events::StoredEvent> =
        storage::events::get_many(pool, &ids).await?.into_iter().map(|e| (e.pdu.event_id.to_string(), e)).collect();
    let pushers = storage::push::pushers_of(pool, user).await?;
    let profile_tag = pushers.iter().find_map(|p| p.profile_tag.clone());

    let mut notifications = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(event) = stored.get(&row.action.event_id) else {
            continue;
        };
        let mut client = client_events(pool, std::slice::from_ref(event), None, true).await?;
        let Some(event_json) = client.pop() else {
            continue;
        };
        let actions: Value = serde_json::from_str(&row.action.actions).unwrap_or_else(|_| json!([]));
        let mut notification = json!({
            "actions": actions,
            "event": event_json,
            "read": row.read,
            "room_id": row.action.room_id,
            "ts": row.action.ts,
        });
        if let Some(tag) = &profile_tag {
            notification["profile_tag"] = json!(tag);
        }
        notifications.push(notification);
    }
    let mut body = json!({ "notifications": notifications });
    if has_more && let Some(last) = rows.last() {
        body["next_token"] = json!(last.action.stream_ordering.to_string());
    }
    Ok(Json(body))
}
