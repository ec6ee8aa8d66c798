//! Email addresses of accounts (spec: Client-Server API, "Adding Account
//! Administrative Contact Information"), the verification link that
//! `requestToken` emails, and the unsubscribe link of notification emails.
//!
//! The homeserver verifies addresses itself; identity servers, phone numbers
//! (`msisdn`) and `/account/3pid/bind` are not supported.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::uiaa;
use crate::{
    Services,
    api::{Auth, JsonBody, Query},
    error::{Error, ErrorKind, Result},
    push::email::{base_url, escape},
    storage::{self, threepid::Validation},
};

/// Longest `client_secret` the spec allows.
const MAX_CLIENT_SECRET_LEN: usize = 255;
/// Maximum length of an email address (the path limit of RFC 5321).
const MAX_EMAIL_LEN: usize = 254;

fn custom_error(errcode: &str, status: StatusCode, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Custom { errcode: errcode.to_owned(), status, extra: Map::new() }, message)
}

fn check_client_secret(secret: &str) -> Result<()> {
    let valid = !secret.is_empty()
        && secret.len() <= MAX_CLIENT_SECRET_LEN
        && secret.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '=' | '_' | '-'));
    if !valid {
        return Err(Error::invalid_param("client_secret is invalid: use 1 to 255 characters from [0-9a-zA-Z.=_-]"));
    }
    Ok(())
}

/// Returns the address in its stored form: trimmed, with a lower-case domain.
fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim();
    let invalid = || Error::invalid_param(format!("email {email:?} is not a valid email address"));
    if email.len() > MAX_EMAIL_LEN || email.parse::<lettre::Address>().is_err() {
        return Err(invalid());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

#[derive(Deserialize)]
pub struct RequestTokenBody {
    client_secret: String,
    email: String,
    send_attempt: i64,
    next_link: Option<String>,
    id_server: Option<String>,
}

/// POST /_matrix/client/v3/account/3pid/email/requestToken
pub async fn request_token(
    State(services): State<Arc<Services>>,
    JsonBody(body): JsonBody<RequestTokenBody>,
) -> Result<Json<Value>> {
    check_client_secret(&body.client_secret)?;
    let address = normalize_email(&body.email)?;
    if body.id_server.is_some() {
        // Identity servers are not used: the homeserver sends the email itself.
        tracing::debug!("ignoring id_server in requestToken");
    }
    if let Some(link) = &body.next_link {
        let parsed =
            url::Url::parse(link).map_err(|e| Error::invalid_param(format!("next_link is not a valid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param("next_link must be an http or https URL"));
        }
    }
    if !services.mailer.is_enabled() {
        return Err(custom_error(
            "M_THREEPID_DENIED",
            StatusCode::FORBIDDEN,
            "this server does not send email, so email addresses cannot be added",
        ));
    }
    if storage::threepid::owner(&services.db.pool, "email", &address).await?.is_some() {
        return Err(Error::new(ErrorKind::ThreepidInUse, "this email address is already in use by an account"));
    }

    // The same client secret, address and send attempt return the same session
    // without another email, as the spec requires.
    let existing = storage::threepid::validation_for(&services.db.pool, &body.client_secret, "email", &address).await?;
    if let Some(session) = &existing
        && body.send_attempt <= session.send_attempt
    {
        return Ok(Json(json!({ "sid": session.sid })));
    }
    let session = Validation {
        sid: existing.map(|s| s.sid).unwrap_or_else(|| crate::rooms::random_localpart(24)),
        client_secret: body.client_secret,
        medium: "email".into(),
        address: address.clone(),
        token: crate::rooms::random_localpart(32),
        send_attempt: body.send_attempt,
        created_ts: storage::now_ms(),
        validated_ts: None,
    };
    let stored = session.clone();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                storage::threepid::insert_validation(&mut txn.conn, &stored).await?;
                Ok(())
            })
        })
        .await?;

    let mut link = url::Url::parse(&format!("{}/_lattice/email/validate", base_url(&services.config)))
        .map_err(|e| Error::internal("building a verification link", e))?;
    link.query_pairs_mut()
        .append_pair("sid", &session.sid)
        .append_pair("client_secret", &session.client_secret)
        .append_pair("token", &session.token);
    if let Some(next) = &body.next_link {
        link.query_pairs_mut().append_pair("next_link", next);
    }
    let app = &services.config.email.app_name;
    let text = format!(
        "Someone asked to add this email address to a {app} account.\n\nTo confirm, open this link:\n{link}\n\n\
         If it was not you, ignore this email.\n"
    );
    let html = format!(
        "<p>Someone asked to add this email address to a {} account.</p>\n<p><a href=\"{}\">Confirm this address</a></p>\n\
         <p>If it was not you, ignore this email.</p>\n",
        escape(app),
        escape(link.as_str())
    );
    services.mailer.send_later(
        &address,
        &format!("[{app}] Confirm your email address"),
        text,
        html,
        None,
        "verification",
    );
    Ok(Json(json!({ "sid": session.sid })))
}

#[derive(Deserialize)]
pub struct ValidateQuery {
    sid: String,
    client_secret: String,
    token: String,
    next_link: Option<String>,
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title></head>\
         <body><h1>{0}</h1><p>{1}</p></body></html>\n",
        escape(title),
        escape(message)
    );
    (status, Html(body)).into_response()
}

/// GET /_lattice/email/validate: the link of a verification email.
pub async fn validate(State(services): State<Arc<Services>>, Query(query): Query<ValidateQuery>) -> Result<Response> {
    let session = storage::threepid::validation(&services.db.pool, &query.sid).await?;
    let lifetime_ms = (services.config.email.token_lifetime_secs as i64) * 1000;
    let Some(session) = session.filter(|s| s.client_secret == query.client_secret && s.token == query.token) else {
        return Ok(page(StatusCode::BAD_REQUEST, "Invalid link", "This verification link is not valid."));
    };
    if session.validated_ts.is_none() && storage::now_ms() - session.created_ts > lifetime_ms {
        return Ok(page(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This verification link has expired. Ask for a new one.",
        ));
    }
    if session.validated_ts.is_none() {
        let sid = session.sid.clone();
        services
            .db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    storage::threepid::mark_validated(&mut txn.conn, &sid, storage::now_ms()).await?;
                    Ok(())
                })
            })
            .await?;
    }
    if let Some(next) = query.next_link.as_deref().and_then(|l| url::Url::parse(l).ok())
        && matches!(next.scheme(), "http" | "https")
    {
        return Ok((StatusCode::FOUND, [(axum::http::header::LOCATION, next.to_string())]).into_response());
    }
    Ok(page(
        StatusCode::OK,
        "Email address confirmed",
        "Your email address has been confirmed. You can return to your app.",
    ))
}

#[derive(Deserialize)]
pub struct AddBody {
    auth: Option<Value>,
    client_secret: String,
    sid: String,
}

/// POST /_matrix/client/v3/account/3pid/add
pub async fn add(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Json<Value>> {
    check_client_secret(&body.client_secret)?;
    services.uiaa.check(&services, body.auth.as_ref(), &[vec![uiaa::PASSWORD]], Some(&session.user_id)).await?;
    let validation = storage::threepid::validation(&services.db.pool, &body.sid)
        .await?
        .filter(|v| v.client_secret == body.client_secret);
    let Some(validation) = validation else {
        return Err(custom_error(
            "M_THREEPID_AUTH_FAILED",
            StatusCode::BAD_REQUEST,
            "no verification session with this sid and client_secret",
        ));
    };
    let Some(validated_ts) = validation.validated_ts else {
        return Err(custom_error(
            "M_THREEPID_AUTH_FAILED",
            StatusCode::BAD_REQUEST,
            "the email address has not been verified yet: open the link in the email first",
        ));
    };
    if storage::threepid::owner(&services.db.pool, &validation.medium, &validation.address).await?.is_some() {
        return Err(Error::new(ErrorKind::ThreepidInUse, "this email address is already in use by an account"));
    }
    let user = session.user_id.to_string();
    services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move {
                storage::threepid::add(
                    &mut txn.conn,
                    &user,
                    &validation.medium,
                    &validation.address,
                    validated_ts,
                    storage::now_ms(),
                )
                .await?;
                storage::threepid::delete_validation(&mut txn.conn, &validation.sid).await?;
                Ok(())
            })
        })
        .await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/account/3pid
pub async fn list(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let rows = storage::threepid::of_user(&services.db.pool, session.user_id.as_str()).await?;
    let threepids: Vec<Value> = rows
        .into_iter()
        .map(|(medium, address, validated_at, added_at)| {
            json!({ "medium": medium, "address": address, "validated_at": validated_at, "added_at": added_at })
        })
        .collect();
    Ok(Json(json!({ "threepids": threepids })))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    medium: String,
    address: String,
}

/// POST /_matrix/client/v3/account/3pid/delete
pub async fn delete(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<DeleteBody>,
) -> Result<Json<Value>> {
    if body.medium != "email" && body.medium != "msisdn" {
        return Err(Error::invalid_param(format!(
            "medium {:?} is invalid: expected \"email\" or \"msisdn\"",
            body.medium
        )));
    }
    let address = if body.medium == "email" { normalize_email(&body.address)? } else { body.address };
    let (user, medium) = (session.user_id.to_string(), body.medium);
    let removed = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move { Ok(storage::threepid::remove(&mut txn.conn, &user, &medium, &address).await?) })
        })
        .await?;
    if !removed {
        return Err(Error::not_found("this address is not associated with your account"));
    }
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}

#[derive(Deserialize)]
pub struct UnsubscribeQuery {
    token: String,
}

/// GET /_lattice/email/unsubscribe: a page with a button, so that a mail
/// client that opens links ahead of time does not unsubscribe anyone.
pub async fn unsubscribe_page(Query(query): Query<UnsubscribeQuery>) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head><body>\
         <h1>Stop notification emails?</h1><form method=\"post\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button type=\"submit\">Unsubscribe</button></form></body></html>\n",
        escape(&query.token)
    );
    Html(body).into_response()
}

/// POST /_lattice/email/unsubscribe: removes the email pusher of the link,
/// without logging in (the token is the proof). Accepts the form of the
/// page and RFC 8058 one-click requests, whose token is in the query.
pub async fn unsubscribe(
    State(services): State<Arc<Services>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    form: String,
) -> Result<Response> {
    let from_form = serde_urlencoded::from_str::<UnsubscribeQuery>(&form).ok();
    let from_query = query.and_then(|q| serde_urlencoded::from_str::<UnsubscribeQuery>(&q).ok());
    let Some(token) = from_form.or(from_query).map(|q| q.token).filter(|t| !t.is_empty()) else {
        return Ok(page(StatusCode::BAD_REQUEST, "Invalid link", "This unsubscribe link is not valid."));
    };
    let removed = services
        .db
        .writer
        .write(move |txn| {
            Box::pin(async move { Ok(storage::push::delete_by_unsubscribe_token(&mut txn.conn, &token).await?) })
        })
        .await?;
    match removed {
        Some((user_id, _)) => {
            tracing::info!(user_id = %user_id, "email notifications unsubscribed");
            Ok(page(StatusCode::OK, "Unsubscribed", "You will no longer receive notification emails at this address."))
        }
        None => Ok(page(StatusCode::OK, "Already unsubscribed", "This address receives no notification emails.")),
    }
}
