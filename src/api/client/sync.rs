//! GET /_matrix/client/v3/sync (spec: Client-Server API, "Syncing").

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State};
use serde::Deserialize;

use crate::{
    Services,
    api::{Auth, Query},
    error::{Error, Result},
    sync::{
        assemble::{assemble, current_token},
        response::SyncResponse,
        token::SyncToken,
    },
};

/// Longest a client may keep a `/sync` open.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    full_state: bool,
    set_presence: Option<String>,
    filter: Option<String>,
}

/// GET /_matrix/client/v3/sync
pub async fn sync(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Query(query): Query<SyncQuery>,
) -> Result<Json<SyncResponse>> {
    let since = query.since.as_deref().map(|t| SyncToken::parse(t, "since")).transpose()?;
    let filter = super::filter::resolve(&services, session.user_id.as_str(), query.filter.as_deref()).await?;
    if let Some(presence) = &query.set_presence {
        match presence.as_str() {
            "online" | "unavailable" => {
                super::presence::update(&services, &session.user_id, presence, None, true).await?;
            }
            "offline" => {}
            other => {
                return Err(Error::invalid_param(format!("set_presence {other:?} is invalid")));
            }
        }
    }
    let timeout = Duration::from_millis(query.timeout.unwrap_or(0)).min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;

    loop {
        let notify = services.notifier.listen(&session.user_id);
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let upto = current_token(&services);
        let nothing_moved = since.is_some_and(|s| s == upto);
        let timed_out = tokio::time::Instant::now() >= deadline;
        if !nothing_moved || timed_out || query.full_state {
            let assembled = assemble(&services, &session, since, upto, query.full_state, &filter).await?;
            if since.is_none() || query.full_state || assembled.has_changes || timed_out {
                return Ok(Json(assembled.body));
            }
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}
