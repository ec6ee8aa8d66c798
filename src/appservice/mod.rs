//! Application services (bridges): their registrations and namespaces, the
//! transactions that push events to them, and the queries the server makes.
//!
//! The registrations are fixed at start. Request authentication consults
//! [`AppServices`] for `as_token`s; the [`sender`] tasks read the event
//! stream and never run in a request's path.

pub mod client;
pub mod namespace;
pub mod query;
pub mod registration;
pub mod sender;

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use ruma::{ServerName, UserId};

use self::namespace::{Namespace, any_match, exclusive_match};
pub use self::registration::{Registration, RegistrationError};

/// Every registered application service.
#[derive(Debug, Default)]
pub struct AppServices {
    list: Vec<Arc<Registration>>,
}

impl AppServices {
    /// Loads the registration files at `paths` and checks them against each other.
    pub fn load(paths: &[PathBuf], server_name: &ServerName) -> Result<Self, RegistrationError> {
        let mut list = Vec::with_capacity(paths.len());
        for path in paths {
            list.push(Registration::load(path, server_name)?);
        }
        Self::new(list)
    }

    /// Checks that ids and `as_token`s are unique and that no two registrations
    /// claim the same exclusive namespace.
    ///
    /// NOTE: two different regular expressions can still overlap, such as
    /// `@_a_.*` and `@_a_b.*`. The check catches identical patterns and a
    /// sender that falls in another registration's exclusive user namespace.
    pub fn new(list: Vec<Registration>) -> Result<Self, RegistrationError> {
        let mut ids = HashSet::new();
        let mut tokens = HashSet::new();
        for registration in &list {
            let error = |message: String| RegistrationError { path: registration.path.clone(), message };
            if !ids.insert(registration.id.as_str()) {
                return Err(error(format!("field id: {:?} is used by another registration", registration.id)));
            }
            if !tokens.insert(registration.as_token.as_str()) {
                return Err(error("field as_token: is used by another registration".into()));
            }
        }
        for (index, a) in list.iter().enumerate() {
            for b in &list[index + 1..] {
                check_exclusive_conflicts(a, b)?;
                check_exclusive_conflicts(b, a)?;
            }
        }
        Ok(Self { list: list.into_iter().map(Arc::new).collect() })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.list.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Registration>> {
        self.list.iter().find(|registration| registration.id == id)
    }

    /// Returns the application service whose `as_token` this is.
    pub fn by_as_token(&self, token: &str) -> Option<&Arc<Registration>> {
        self.list.iter().find(|registration| constant_time_eq(registration.as_token.as_bytes(), token.as_bytes()))
    }

    /// Returns the application service that claims `user_id` exclusively, or whose sender it is.
    pub fn exclusive_user_owner(&self, user_id: &UserId) -> Option<&Arc<Registration>> {
        self.list.iter().find(|registration| {
            registration.sender == user_id
                || (registration.is_local(user_id) && exclusive_match(&registration.users, user_id.as_str()))
        })
    }

    /// Returns the application service that claims the room alias `alias` exclusively.
    pub fn exclusive_alias_owner(&self, alias: &str) -> Option<&Arc<Registration>> {
        self.list.iter().find(|registration| exclusive_match(&registration.aliases, alias))
    }

    /// Returns the application services with a user namespace that covers `user_id`, in
    /// registration order, excluding their senders (which always exist).
    pub fn user_namespace_owners<'a>(&'a self, user_id: &'a UserId) -> impl Iterator<Item = &'a Arc<Registration>> {
        self.list.iter().filter(move |registration| {
            registration.is_local(user_id) && any_match(&registration.users, user_id.as_str())
        })
    }

    /// Returns the application services with an alias namespace that covers `alias`.
    pub fn alias_namespace_owners<'a>(&'a self, alias: &'a str) -> impl Iterator<Item = &'a Arc<Registration>> {
        self.list.iter().filter(move |registration| any_match(&registration.aliases, alias))
    }

    /// Returns whether `user_id` is an application service user exempt from rate limits:
    /// a sender, or a user in the namespace of a registration with `rate_limited: false`.
    pub fn is_exempt_from_limits(&self, user_id: &UserId) -> bool {
        self.list.iter().any(|registration| registration.is_exempt_from_limits(user_id))
    }
}

impl Registration {
    /// Returns whether `user_id` belongs to this server, because a user namespace covers only local users.
    fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.sender.server_name()
    }

    /// Returns whether the application service may act as `user_id`: its sender or a
    /// local user in one of its user namespaces.
    pub fn covers_user(&self, user_id: &UserId) -> bool {
        self.sender == user_id || (self.is_local(user_id) && any_match(&self.users, user_id.as_str()))
    }

    pub fn covers_alias(&self, alias: &str) -> bool {
        any_match(&self.aliases, alias)
    }

    pub fn covers_room(&self, room_id: &str) -> bool {
        any_match(&self.rooms, room_id)
    }

    pub fn is_exempt_from_limits(&self, user_id: &UserId) -> bool {
        self.sender == user_id || (!self.rate_limited && self.covers_user(user_id))
    }
}

fn check_exclusive_conflicts(a: &Registration, b: &Registration) -> Result<(), RegistrationError> {
    let error = |message: String| RegistrationError { path: a.path.clone(), message };
    for (kind, mine, theirs) in
        [("users", &a.users, &b.users), ("aliases", &a.aliases, &b.aliases), ("rooms", &a.rooms, &b.rooms)]
    {
        for (index, namespace) in mine.iter().enumerate().filter(|(_, n)| n.exclusive) {
            if theirs.iter().any(|other: &Namespace| other.exclusive && other.pattern() == namespace.pattern()) {
                return Err(error(format!(
                    "field namespaces.{kind}[{index}].regex: {:?} is claimed exclusively by registration {:?} ({}) too",
                    namespace.pattern(),
                    b.id,
                    b.path
                )));
            }
        }
    }
    if a.is_local(&b.sender) && exclusive_match(&a.users, b.sender.as_str()) {
        return Err(error(format!(
            "field namespaces.users: an exclusive namespace covers {}, the sender of registration {:?} ({})",
            b.sender, b.id, b.path
        )));
    }
    Ok(())
}

/// Compares two secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
