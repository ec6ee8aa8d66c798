//! OpenID tokens (spec: Client-Server API, "OpenID"): short-lived tokens that
//! let a third party, such as a widget's server, confirm a user's identity
//! through `/_matrix/federation/v1/openid/userinfo`. They are kept in memory
//! only, so a restart invalidates them, and clients then ask for new ones.

use std::{collections::HashMap, sync::Mutex};

use rand::{Rng, distributions::Alphanumeric};
use ruma::{OwnedUserId, UserId};

use crate::storage::now_ms;

/// How long a token stays valid, in seconds.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

#[derive(Default)]
pub struct OpenIdTokens {
    /// Token to its user and expiry in milliseconds since the epoch.
    tokens: Mutex<HashMap<String, (OwnedUserId, i64)>>,
}

impl OpenIdTokens {
    /// Issues a new token for `user`, dropping tokens that have expired.
    pub fn issue(&self, user: &UserId) -> String {
        let token: String = rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
        let now = now_ms();
        let mut tokens = self.tokens.lock().expect("OpenID tokens lock");
        tokens.retain(|_, (_, expires)| *expires > now);
        tokens.insert(token.clone(), (user.to_owned(), now + TOKEN_LIFETIME_SECS * 1000));
        token
    }

    /// Returns the user of a token that has not expired.
    pub fn user_of(&self, token: &str) -> Option<OwnedUserId> {
        let tokens = self.tokens.lock().expect("OpenID tokens lock");
        tokens.get(token).filter(|(_, expires)| *expires > now_ms()).map(|(user, _)| user.clone())
    }
}
