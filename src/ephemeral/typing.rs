//! Typing notifications, kept in memory with an expiry per user. Every change
//! bumps a serial number that sync tokens carry.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

/// The longest a client may ask to be shown as typing.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    serial: AtomicI64,
}

#[derive(Default)]
struct RoomTyping {
    users: HashMap<OwnedUserId, Instant>,
    /// Serial of the last change in this room.
    changed: i64,
}

impl Typing {
    pub fn current_serial(&self) -> i64 {
        self.serial.load(Ordering::Acquire)
    }

    /// Sets or clears a user's typing state. Returns whether anything changed.
    pub fn set(&self, room_id: &RoomId, user_id: &UserId, typing: bool, timeout: Duration) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(room_id.to_owned()).or_default();
        let was_typing = room.users.contains_key(user_id);
        if typing {
            room.users.insert(user_id.to_owned(), Instant::now() + timeout.min(MAX_TIMEOUT));
        } else {
            room.users.remove(user_id);
        }
        let changed = typing != was_typing;
        if changed {
            room.changed = self.serial.fetch_add(1, Ordering::AcqRel) + 1;
        }
        changed
    }

    /// Drops expired entries and returns the rooms whose typing lists changed.
    pub fn expire(&self) -> Vec<OwnedRoomId> {
        let now = Instant::now();
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        for (room_id, room) in rooms.iter_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                room.changed = self.serial.fetch_add(1, Ordering::AcqRel) + 1;
                changed.push(room_id.clone());
            }
        }
        rooms.retain(|_, room| !room.users.is_empty() || room.changed > 0);
        changed
    }

    /// Every room whose typing list changed after serial `since`, with the users typing now.
    pub fn changed_rooms_since(&self, since: i64) -> Vec<(OwnedRoomId, Vec<OwnedUserId>)> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut changed: Vec<(OwnedRoomId, Vec<OwnedUserId>)> = rooms
            .iter()
            .filter(|(_, room)| room.changed > since)
            .map(|(room_id, room)| {
                let mut users: Vec<OwnedUserId> =
                    room.users.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect();
                users.sort();
                (room_id.clone(), users)
            })
            .collect();
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        changed
    }

    /// The users typing in a room, if its list changed after serial `since`.
    pub fn changed_since(&self, room_id: &RoomId, since: i64) -> Option<Vec<OwnedUserId>> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.get(room_id)?;
        if room.changed <= since {
            return None;
        }
        let now = Instant::now();
        let mut users: Vec<OwnedUserId> =
            room.users.iter().filter(|(_, until)| **until > now).map(|(u, _)| u.clone()).collect();
        users.sort();
        Some(users)
    }
}
