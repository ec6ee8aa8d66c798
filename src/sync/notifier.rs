//! Wakes the long-polling `/sync` requests of the users a change concerns.
//!
//! Each waiting user has one [`Notify`]; a writer wakes exactly the users its
//! change concerns, so an event reaches a waiting `/sync` without polling.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Notifier {
    waiters: Mutex<HashMap<OwnedUserId, Weak<Notify>>>,
    /// Woken on every change, for the consumers of the whole stream (application service senders).
    changes: Notify,
}

impl Notifier {
    /// The wake-up handle of a user. Hold it, and create its `notified()` future,
    /// before checking for new data, so that no wake-up is lost in between.
    pub fn listen(&self, user_id: &UserId) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = waiters.get(user_id).and_then(Weak::upgrade) {
            return existing;
        }
        let notify = Arc::new(Notify::new());
        waiters.insert(user_id.to_owned(), Arc::downgrade(&notify));
        if waiters.len() > 1024 && waiters.len().is_power_of_two() {
            waiters.retain(|_, weak| weak.strong_count() > 0);
        }
        notify
    }

    /// The wake-up handle of every change, with the same rule as [`Notifier::listen`]:
    /// create and enable its `notified()` future before checking for new data.
    pub fn changes(&self) -> &Notify {
        &self.changes
    }

    pub fn wake<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) {
        self.changes.notify_waiters();
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for user in users {
            if let Some(notify) = waiters.get(user).and_then(Weak::upgrade) {
                notify.notify_waiters();
            }
        }
    }
}
