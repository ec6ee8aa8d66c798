//! Send-to-device messaging (spec: Client-Server API, "Send-to-Device messaging").

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    e2ee::to_device,
    error::Result,
};

#[derive(Deserialize)]
pub struct SendBody {
    messages: BTreeMap<String, Map<String, Value>>,
}

/// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
pub async fn send(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((event_type, txn_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<Json<Value>> {
    to_device::send(&services, &session, &event_type, &txn_id, body.messages).await?;
    Ok(Json(json!({})))
}
