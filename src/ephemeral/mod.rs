//! Ephemeral room data: typing notifications (in memory) and read receipts
//! (persisted, because clients rely on them across restarts).

pub mod receipts;
pub mod typing;
