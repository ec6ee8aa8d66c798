//! Accounts and sessions: registration, login, logout, password changes and
//! deactivation (spec: Client-Server API, "Client authentication" and
//! "Account registration and management").

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::uiaa;
use crate::{
    Services,
    api::{Auth, ClientIp, JsonBody, OptionalToken, Query},
    appservice::Registration,
    error::{Error, ErrorKind, Result},
};

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

/// The login and registration type of application services.
const APPSERVICE_LOGIN: &str = "m.login.application_service";

#[derive(Deserialize)]
pub struct RegisterBody {
    /// `m.login.application_service` when an application service registers a user.
    #[serde(rename = "type")]
    kind: Option<String>,
    auth: Option<Value>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
}

fn registration_flows(services: &Services) -> Vec<Vec<&'static str>> {
    if services.config.registration.tokens.is_empty() {
        vec![vec![uiaa::DUMMY]]
    } else {
        vec![vec![uiaa::REGISTRATION_TOKEN]]
    }
}

/// Returns the application service whose `as_token` the request carries, for the
/// `m.login.application_service` type of `/register` and `/login`.
fn appservice_from_token(services: &Services, token: Option<&str>) -> Result<Arc<Registration>> {
    let token = token.ok_or_else(|| {
        Error::new(ErrorKind::MissingToken, "m.login.application_service needs the application service's as_token")
    })?;
    services.appservices.by_as_token(token).cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::UnknownToken { soft_logout: false },
            "the access token is not an application service's as_token",
        )
    })
}

/// Rejects a user id in another application service's exclusive namespace
/// (`M_EXCLUSIVE`), or outside the namespaces of `appservice` when given.
fn check_user_namespace(services: &Services, user_id: &ruma::UserId, appservice: Option<&Registration>) -> Result<()> {
    match appservice {
        Some(registration) if !registration.covers_user(user_id) => Err(Error::new(
            ErrorKind::Exclusive,
            format!("{user_id} is outside the user namespaces of application service {:?}", registration.id),
        )),
        Some(_) => Ok(()),
        None => match services.appservices.exclusive_user_owner(user_id) {
            Some(owner) => Err(Error::new(
                ErrorKind::Exclusive,
                format!("{user_id} is reserved by application service {:?}", owner.id),
            )),
            None => Ok(()),
        },
    }
}

/// POST /_matrix/client/v3/register
pub async fn register(
    State(services): State<Arc<Services>>,
    ClientIp(ip): ClientIp,
    OptionalToken(token): OptionalToken,
    Query(query): Query<RegisterQuery>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Json<Value>> {
    let auth_type = body.auth.as_ref().and_then(|auth| auth.get("type")).and_then(Value::as_str);
    if body.kind.as_deref() == Some(APPSERVICE_LOGIN) || auth_type == Some(APPSERVICE_LOGIN) {
        let registration = appservice_from_token(&services, token.as_deref())?;
        return register_appservice_user(&services, &registration, body).await;
    }
    if query.kind.as_deref() == Some("guest") {
        return Err(Error::new(ErrorKind::GuestAccessForbidden, "guest accounts are not supported by this server"));
    }
    if let Some(kind) = query.kind.as_deref()
        && kind != "user"
    {
        return Err(Error::invalid_param(format!("kind {kind:?} is invalid: expected \"user\" or \"guest\"")));
    }
    if !services.config.registration.enabled {
        return Err(Error::forbidden("registration is disabled on this server"));
    }
    services.rate_limiter.check(&format!("register:{}", ip.map(|i| i.to_string()).unwrap_or_default()))?;

    let localpart = match &body.username {
        Some(name) => name.to_lowercase(),
        None => crate::rooms::random_localpart(12).to_lowercase(),
    };
    let user_id = services.users.validate_new_localpart(&localpart)?;
    check_user_namespace(&services, &user_id, None)?;
    if !services.users.is_available(&user_id).await? {
        return Err(Error::new(ErrorKind::UserInUse, format!("user id {user_id} is already taken")));
    }
    if let Some(password) = &body.password
        && password.len() > 512
    {
        return Err(Error::bad_json("password is longer than 512 bytes"));
    }

    services.uiaa.check(&services, body.auth.as_ref(), &registration_flows(&services), None).await?;

    services.users.create(&user_id, body.password.as_deref(), false).await?;
    if body.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    let login = services.users.login(&user_id, body.device_id, body.initial_device_display_name).await?;
    Ok(Json(json!({
        "user_id": login.user_id,
        "access_token": login.access_token,
        "device_id": login.device_id,
        "home_server": services.server_name,
    })))
}

/// Registers a user in an application service's namespace: no password, no
/// user-interactive authentication, and no rate limit.
async fn register_appservice_user(
    services: &Services,
    registration: &Registration,
    body: RegisterBody,
) -> Result<Json<Value>> {
    let localpart = body.username.as_deref().ok_or_else(|| Error::bad_json("username is missing"))?;
    // An application service may name the user by its full id, as some bridges do.
    let user_id = if localpart.starts_with('@') {
        services.users.parse_local_user(localpart)?
    } else {
        services.users.validate_new_localpart(&localpart.to_lowercase())?
    };
    if user_id.server_name() != services.server_name {
        return Err(Error::invalid_param(format!("{user_id} does not belong to this server")));
    }
    check_user_namespace(services, &user_id, Some(registration))?;
    if !services.users.is_available(&user_id).await? {
        return Err(Error::new(ErrorKind::UserInUse, format!("user id {user_id} is already taken")));
    }
    services.users.create(&user_id, None, false).await?;
    tracing::info!(appservice = %registration.id, %user_id, "application service registered a user");
    if body.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    let login = services.users.login(&user_id, body.device_id, body.initial_device_display_name).await?;
    Ok(Json(json!({
        "user_id": login.user_id,
        "access_token": login.access_token,
        "device_id": login.device_id,
        "home_server": services.server_name,
    })))
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

/// GET /_matrix/client/v3/register/available
pub async fn available(
    State(services): State<Arc<Services>>,
    Query(query): Query<AvailableQuery>,
) -> Result<Json<Value>> {
    let user_id = services.users.validate_new_localpart(&query.username.to_lowercase())?;
    check_user_namespace(&services, &user_id, None)?;
    if !services.users.is_available(&user_id).await? {
        return Err(Error::new(ErrorKind::UserInUse, format!("user id {user_id} is already taken")));
    }
    Ok(Json(json!({ "available": true })))
}

/// GET /_matrix/client/v3/login
pub async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }, { "type": APPSERVICE_LOGIN }] }))
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Value>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

/// POST /_matrix/client/v3/login
pub async fn login(
    State(services): State<Arc<Services>>,
    ClientIp(ip): ClientIp,
    OptionalToken(token): OptionalToken,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>> {
    if body.kind == APPSERVICE_LOGIN {
        let registration = appservice_from_token(&services, token.as_deref())?;
        return login_appservice_user(&services, &registration, body).await;
    }
    if body.kind != "m.login.password" {
        return Err(Error::new(ErrorKind::Unknown, format!("login type {} is not supported", body.kind))
            .with_status(axum::http::StatusCode::BAD_REQUEST));
    }
    services.rate_limiter.check(&format!("login:{}", ip.map(|i| i.to_string()).unwrap_or_default()))?;

    let user = login_user_field(&body)?;
    let password = body.password.as_deref().ok_or_else(|| Error::bad_json("password is missing"))?;
    let user_id =
        services.users.parse_local_user(&user).map_err(|_| Error::forbidden("invalid username or password"))?;
    if user_id.server_name() != services.server_name {
        return Err(Error::forbidden("invalid username or password"));
    }
    // Users register in lowercase only, so a full user id matches whatever its case, as a localpart does.
    let user_id = ruma::UserId::parse_with_server_name(user_id.localpart().to_lowercase(), &services.server_name)
        .map_err(|_| Error::forbidden("invalid username or password"))?;
    services.users.check_password(&user_id, password).await?;
    let login = services.users.login(&user_id, body.device_id, body.initial_device_display_name).await?;
    tracing::info!(user_id = %login.user_id, device_id = %login.device_id, "logged in");
    Ok(Json(json!({
        "user_id": login.user_id,
        "access_token": login.access_token,
        "device_id": login.device_id,
        "home_server": services.server_name,
    })))
}

/// Logs in a user of an application service's namespace without a password.
async fn login_appservice_user(
    services: &Services,
    registration: &Registration,
    body: LoginBody,
) -> Result<Json<Value>> {
    let user = login_user_field(&body)?;
    let user_id = services.users.parse_local_user(&user)?;
    check_user_namespace(services, &user_id, Some(registration))?;
    if services.users.is_available(&user_id).await? {
        return Err(Error::forbidden(format!("{user_id} is not registered; register it first")));
    }
    let login = services.users.login(&user_id, body.device_id, body.initial_device_display_name).await?;
    tracing::info!(appservice = %registration.id, user_id = %login.user_id, device_id = %login.device_id, "application service logged in a user");
    Ok(Json(json!({
        "user_id": login.user_id,
        "access_token": login.access_token,
        "device_id": login.device_id,
        "home_server": services.server_name,
    })))
}

/// Returns the user of a login request: `identifier.user` (`m.id.user`) or the deprecated `user`.
fn login_user_field(body: &LoginBody) -> Result<String> {
    match &body.identifier {
        Some(identifier) => {
            let kind = identifier.get("type").and_then(Value::as_str).unwrap_or_default();
            if kind != "m.id.user" {
                return Err(Error::new(ErrorKind::Unknown, format!("identifier type {kind:?} is not supported"))
                    .with_status(axum::http::StatusCode::BAD_REQUEST));
            }
            identifier
                .get("user")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::bad_json("identifier.user is missing"))
        }
        None => body.user.clone().ok_or_else(|| Error::bad_json("identifier is missing")),
    }
}

/// GET /_matrix/client/v3/account/whoami
pub async fn whoami(Auth(session): Auth) -> Json<Value> {
    let mut body = json!({ "user_id": session.user_id, "is_guest": false });
    // An application service acting without a device has none to report.
    if !session.device_id.is_empty() {
        body["device_id"] = json!(session.device_id);
    }
    Json(body)
}

/// POST /_matrix/client/v3/logout
pub async fn logout(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let devices = std::slice::from_ref(&session.device_id);
    services.users.delete_devices(&session.user_id, devices).await?;
    crate::e2ee::devices_deleted(&services, &session.user_id, devices).await?;
    Ok(Json(json!({})))
}

/// POST /_matrix/client/v3/logout/all
pub async fn logout_all(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let devices = services.users.delete_all_devices(&session.user_id, None).await?;
    crate::e2ee::devices_deleted(&services, &session.user_id, &devices).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    auth: Option<Value>,
    new_password: String,
    #[serde(default = "default_true")]
    logout_devices: bool,
}

fn default_true() -> bool {
    true
}

/// POST /_matrix/client/v3/account/password
pub async fn change_password(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<Json<Value>> {
    if body.new_password.is_empty() || body.new_password.len() > 512 {
        return Err(Error::bad_json("new_password must be between 1 and 512 bytes"));
    }
    services.uiaa.check(&services, body.auth.as_ref(), &[vec![uiaa::PASSWORD]], Some(&session.user_id)).await?;
    services.users.change_password(&session.user_id, &body.new_password).await?;
    if body.logout_devices {
        let devices = services.users.delete_all_devices(&session.user_id, Some(&session.device_id)).await?;
        crate::e2ee::devices_deleted(&services, &session.user_id, &devices).await?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeactivateBody {
    auth: Option<Value>,
}

/// POST /_matrix/client/v3/account/deactivate
pub async fn deactivate(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    JsonBody(body): JsonBody<DeactivateBody>,
) -> Result<Json<Value>> {
    services.uiaa.check(&services, body.auth.as_ref(), &[vec![uiaa::PASSWORD]], Some(&session.user_id)).await?;
    // Leave every room first, so that other members see the account go.
    let rooms = crate::storage::rooms::user_memberships(&services.db.pool, session.user_id.as_str()).await?;
    for membership in rooms.iter().filter(|m| m.membership == "join" || m.membership == "invite") {
        let Ok(room_id) = ruma::OwnedRoomId::try_from(membership.room_id.clone()) else {
            continue;
        };
        if membership.membership == "invite"
            && matches!(services.rooms.remote_inviter_server(&room_id, &session.user_id).await, Ok(Some(_)))
        {
            if let Err(err) = services.rooms.reject_remote_invite(&room_id, &session.user_id, None).await {
                tracing::warn!(%room_id, user_id = %session.user_id, error = %err, "could not reject an invite while deactivating");
            }
            continue;
        }
        if let Err(err) = services
            .rooms
            .change_membership(
                &room_id,
                &session.user_id,
                &session.user_id,
                crate::rooms::membership::MembershipChange::Leave,
                None,
            )
            .await
        {
            tracing::warn!(%room_id, user_id = %session.user_id, error = %err, "could not leave a room while deactivating");
        }
    }
    services.users.deactivate(&session.user_id).await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
