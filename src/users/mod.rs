//! Accounts: registration, passwords (argon2), devices and access tokens
//! (stored as SHA-256 hashes), display names and avatars.

pub mod ignored;
pub mod openid;
pub mod password;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{Rng, RngCore, distributions::Alphanumeric};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use crate::{
    appservice::Registration,
    error::{Error, ErrorKind, Result},
    storage::{self, Db, now_ms},
};

/// The user and device behind an access token.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    /// Empty when an application service acts without naming a device.
    pub device_id: String,
    /// The application service whose `as_token` authenticated the request.
    pub appservice: Option<Arc<Registration>>,
}

/// A fresh login: the token is shown to the client once and stored only as a hash.
#[derive(Debug, Clone)]
pub struct Login {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub access_token: String,
}

pub struct Users {
    db: Db,
    server_name: OwnedServerName,
    /// Access-token hash to session, so that authenticating a request costs no query.
    sessions: Mutex<HashMap<String, Session>>,
    /// The users each user ignores.
    pub ignored: Arc<ignored::IgnoredUsers>,
    pub openid: openid::OpenIdTokens,
}

pub fn hash_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn random_string(length: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(length).map(char::from).collect()
}

impl Users {
    pub fn new(db: Db, server_name: OwnedServerName, ignored: Arc<ignored::IgnoredUsers>) -> Self {
        Self { db, server_name, sessions: Mutex::new(HashMap::new()), ignored, openid: Default::default() }
    }

    /// Parses a user id or a bare localpart into a user id of this server.
    pub fn parse_local_user(&self, input: &str) -> Result<OwnedUserId> {
        let user_id = if input.starts_with('@') {
            UserId::parse(input).map_err(|e| Error::invalid_param(format!("user id {input:?} is invalid: {e}")))?
        } else {
            UserId::parse_with_server_name(input.to_lowercase(), &self.server_name)
                .map_err(|e| Error::invalid_param(format!("user id {input:?} is invalid: {e}")))?
        };
        Ok(user_id)
    }

    /// Checks that a localpart can be registered: the spec's historical character set is not
    /// accepted for new users, only `a-z 0-9 . _ = - /` and `+`.
    pub fn validate_new_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'));
        if !valid {
            return Err(Error::new(
                ErrorKind::InvalidUsername,
                format!("username {localpart:?} is invalid: use only a-z, 0-9 and . _ = - / +"),
            ));
        }
        let user_id = UserId::parse_with_server_name(localpart, &self.server_name)
            .map_err(|e| Error::new(ErrorKind::InvalidUsername, format!("username {localpart:?} is invalid: {e}")))?;
        if user_id.as_str().len() > 255 {
            return Err(Error::new(ErrorKind::InvalidUsername, "user id is longer than 255 bytes"));
        }
        Ok(user_id)
    }

    pub async fn is_available(&self, user_id: &UserId) -> Result<bool> {
        Ok(storage::users::get(&self.db.pool, user_id.as_str()).await?.is_none())
    }

    /// Creates an account. `password` of `None` makes an account without password login.
    pub async fn create(&self, user_id: &UserId, password: Option<&str>, is_admin: bool) -> Result<()> {
        let hash = match password {
            Some(password) => Some(password::hash(password).await?),
            None => None,
        };
        let created = storage::users::insert(
            &self.db.pool,
            user_id.as_str(),
            hash.as_deref(),
            is_admin,
            user_id.localpart(),
            now_ms(),
        )
        .await?;
        if !created {
            return Err(Error::new(ErrorKind::UserInUse, format!("user id {user_id} is already taken")));
        }
        tracing::info!(%user_id, is_admin, "created user");
        Ok(())
    }

    /// Logs a device in, creating the device when it is new.
    pub async fn login(
        &self,
        user_id: &UserId,
        device_id: Option<String>,
        display_name: Option<String>,
    ) -> Result<Login> {
        let device_id = device_id.unwrap_or_else(|| random_string(10).to_uppercase());
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let access_token = format!("lat_{}", URL_SAFE_NO_PAD.encode(bytes));
        let token_hash = hash_token(&access_token);

        // Logging in again with a known device replaces its old token.
        self.forget_device_sessions(user_id, &device_id);
        storage::users::insert_device_with_token(
            &self.db.pool,
            user_id.as_str(),
            &device_id,
            display_name.as_deref(),
            &token_hash,
            now_ms(),
        )
        .await?;
        Ok(Login { user_id: user_id.to_owned(), device_id, access_token })
    }

    /// Checks a user's password. Errors never tell whether the user exists.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let forbidden = || Error::forbidden("invalid username or password");
        let Some(user) = storage::users::get(&self.db.pool, user_id.as_str()).await? else {
            return Err(forbidden());
        };
        if user.deactivated {
            return Err(Error::new(ErrorKind::UserDeactivated, "this account has been deactivated"));
        }
        let Some(hash) = user.password_hash else {
            return Err(forbidden());
        };
        if password::verify(password, &hash).await? { Ok(()) } else { Err(forbidden()) }
    }

    /// Resolves an access token to its session.
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let token_hash = hash_token(token);
        if let Some(session) = self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&token_hash) {
            return Ok(session.clone());
        }
        let Some((user_id, device_id)) = storage::users::token_owner(&self.db.pool, &token_hash).await? else {
            return Err(Error::new(ErrorKind::UnknownToken { soft_logout: false }, "unknown or expired access token"));
        };
        let user_id = OwnedUserId::try_from(user_id).map_err(|e| Error::internal("reading a session", e))?;
        let session = Session { user_id, device_id, appservice: None };
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(token_hash, session.clone());
        Ok(session)
    }

    fn forget_device_sessions(&self, user_id: &UserId, device_id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| !(s.user_id == user_id && s.device_id == device_id));
    }

    fn forget_user_sessions(&self, user_id: &UserId) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, s| s.user_id != user_id);
    }

    /// Removes devices and their tokens.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        storage::users::delete_devices(&self.db.pool, user_id.as_str(), device_ids).await?;
        for device_id in device_ids {
            self.forget_device_sessions(user_id, device_id);
        }
        Ok(())
    }

    /// Removes every device of a user, optionally keeping one, and returns the removed ids.
    pub async fn delete_all_devices(&self, user_id: &UserId, keep: Option<&str>) -> Result<Vec<String>> {
        let devices: Vec<String> = storage::users::devices(&self.db.pool, user_id.as_str())
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| Some(d.as_str()) != keep)
            .collect();
        self.delete_devices(user_id, &devices).await?;
        Ok(devices)
    }

    pub async fn change_password(&self, user_id: &UserId, new_password: &str) -> Result<()> {
        let hash = password::hash(new_password).await?;
        storage::users::set_password(&self.db.pool, user_id.as_str(), &hash).await?;
        Ok(())
    }

    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        storage::users::deactivate(&self.db.pool, user_id.as_str()).await?;
        self.forget_user_sessions(user_id);
        tracing::info!(%user_id, "deactivated user");
        Ok(())
    }

    pub async fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(storage::users::get(&self.db.pool, user_id.as_str()).await?.is_some_and(|u| u.is_admin))
    }
}
