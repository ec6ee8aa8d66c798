//! Room policies: the product rules that the room service consults before a
//! room is created, an invite is sent or received, a user joins, or a message
//! is sent. `open` is plain Matrix. Embedding applications can supply their own
//! implementation of [`RoomPolicy`].

use futures::future::BoxFuture;
use ruma::{OwnedUserId, RoomId, UserId};

use crate::{error::Result, rooms::state::RoomState};

pub mod connections;
mod professional;

pub use self::professional::{MAX_NOTE_CHARS, ProfessionalPolicy, check_note};

/// What a `createRoom` request asks for, as far as a policy needs to know.
#[derive(Debug, Clone)]
pub struct RoomCreation<'a> {
    pub creator: &'a UserId,
    pub invites: &'a [ruma::OwnedUserId],
    pub is_direct: bool,
    pub preset: &'a str,
}

/// An invite about to be sent by a local user.
#[derive(Debug, Clone)]
pub struct Invite<'a> {
    /// The room's state before the invite; during `createRoom`, the state built so far.
    pub room: &'a RoomState,
    pub sender: &'a UserId,
    pub invitee: &'a UserId,
    pub is_direct: bool,
    /// The `reason` of the member event.
    pub reason: Option<&'a str>,
}

/// Every hook returns `Ok(())` to allow the action, or the error the client gets.
/// A hook runs before anything is written, so a rejection leaves no trace.
pub trait RoomPolicy: Send + Sync {
    fn name(&self) -> &'static str;

    fn check_create_room<'a>(&'a self, _request: RoomCreation<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn check_invite<'a>(&'a self, _invite: Invite<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// An invite from another server to one of this server's users.
    fn check_inbound_invite<'a>(
        &'a self,
        _room_id: &'a RoomId,
        _sender: &'a UserId,
        _invitee: &'a UserId,
        _is_direct: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn check_join<'a>(&'a self, _room: &'a RoomState, _user: &'a UserId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn check_send<'a>(
        &'a self,
        _room: &'a RoomState,
        _sender: &'a UserId,
        _event_type: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Returns the invitees whose pending invites to `room_id` end because
    /// `user` left the room. Runs after the leave committed. The room service
    /// rejects each returned invite of a local user on that user's behalf.
    fn invites_retracted_by_leave<'a>(
        &'a self,
        _room_id: &'a RoomId,
        _user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<OwnedUserId>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Orders user directory results for `searcher`. The default keeps the order.
    fn rank_directory_results<'a>(
        &'a self,
        _searcher: &'a UserId,
        results: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move { Ok(results) })
    }
}

/// Plain Matrix: every hook allows.
pub struct OpenPolicy;

impl RoomPolicy for OpenPolicy {
    fn name(&self) -> &'static str {
        "open"
    }
}
