//! Ignoring users (spec: Client-Server API, "Ignoring Users"): the users in
//! each user's `m.ignored_user_list` account data, cached in memory, so that
//! `/sync` and `/messages` can leave out their events at no query's cost.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use ruma::UserId;
use serde_json::Value;

use crate::{
    error::{Error, Result},
    storage::{self, Db},
};

/// The account data type that lists the users someone ignores.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

pub struct IgnoredUsers {
    db: Db,
    /// User id to the ids that user ignores, filled on first use.
    lists: Mutex<HashMap<String, Arc<HashSet<String>>>>,
}

impl IgnoredUsers {
    pub fn new(db: Db) -> Self {
        Self { db, lists: Mutex::new(HashMap::new()) }
    }

    /// Returns the users that `user` ignores.
    pub async fn of(&self, user: &UserId) -> Result<Arc<HashSet<String>>> {
        if let Some(list) = self.lists.lock().expect("ignored users lock").get(user.as_str()) {
            return Ok(list.clone());
        }
        let stored = storage::account_data::get(&self.db.pool, user.as_str(), "", IGNORED_USER_LIST).await?;
        let list = stored
            .and_then(|json| serde_json::from_str::<Value>(&json).ok())
            .map(|content| ignored_ids(&content))
            .unwrap_or_default();
        let list = Arc::new(list);
        self.lists.lock().expect("ignored users lock").insert(user.to_string(), list.clone());
        Ok(list)
    }

    /// Drops the cached list of `user`, after their account data changed.
    pub fn forget(&self, user: &UserId) {
        self.lists.lock().expect("ignored users lock").remove(user.as_str());
    }
}

/// Checks the content of an `m.ignored_user_list` before it is stored:
/// `ignored_users` must be an object keyed by valid user ids.
pub fn check_content(content: &Value) -> Result<()> {
    let Some(users) = content.get("ignored_users") else {
        return Err(Error::bad_json("ignored_users is missing: expected an object keyed by user id"));
    };
    let Some(users) = users.as_object() else {
        return Err(Error::bad_json("ignored_users is invalid: expected an object keyed by user id"));
    };
    for user in users.keys() {
        UserId::parse(user)
            .map_err(|e| Error::bad_json(format!("ignored_users key {user:?} is not a user id: {e}")))?;
    }
    Ok(())
}

fn ignored_ids(content: &Value) -> HashSet<String> {
    content
        .get("ignored_users")
        .and_then(Value::as_object)
        .map(|users| users.keys().cloned().collect())
        .unwrap_or_default()
}
