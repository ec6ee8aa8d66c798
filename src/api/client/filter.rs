//! Filters (spec: Client-Server API, "Filtering").

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path},
    error::{Error, Result},
    storage,
    sync::filter::Filter,
};

fn check_own(session: &crate::users::Session, user_id: &str) -> Result<()> {
    if session.user_id.as_str() != user_id {
        return Err(Error::forbidden("you can only manage your own filters"));
    }
    Ok(())
}

/// POST /_matrix/client/v3/user/{userId}/filter
pub async fn create(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path(user_id): Path<String>,
    JsonBody(filter): JsonBody<Filter>,
) -> Result<Json<Value>> {
    check_own(&session, &user_id)?;
    let definition = serde_json::to_string(&filter).map_err(|e| Error::internal("storing a filter", e))?;
    let id = storage::users::insert_filter(&services.db.pool, &user_id, &definition).await?;
    Ok(Json(json!({ "filter_id": id.to_string() })))
}

/// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
pub async fn get(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((user_id, filter_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    check_own(&session, &user_id)?;
    let not_found = || Error::not_found(format!("filter {filter_id} not found"));
    let id: i64 = filter_id.parse().map_err(|_| not_found())?;
    let definition = storage::users::get_filter(&services.db.pool, &user_id, id).await?.ok_or_else(not_found)?;
    let value: Value = serde_json::from_str(&definition).map_err(|e| Error::internal("reading a filter", e))?;
    Ok(Json(value))
}

/// Loads the filter named by a `/sync` or `/messages` parameter: inline JSON or a filter id.
pub async fn resolve(services: &Services, user_id: &str, param: Option<&str>) -> Result<Filter> {
    let Some(param) = param else {
        return Ok(Filter::default());
    };
    if param.trim_start().starts_with('{') {
        return serde_json::from_str(param).map_err(|e| Error::bad_json(format!("filter is invalid: {e}")));
    }
    let not_found = || Error::not_found(format!("filter {param} not found"));
    let id: i64 = param.parse().map_err(|_| not_found())?;
    let definition = storage::users::get_filter(&services.db.pool, user_id, id).await?.ok_or_else(not_found)?;
    serde_json::from_str(&definition).map_err(|e| Error::internal("reading a filter", e))
}
