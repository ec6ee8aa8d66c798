//! Invites across servers (spec: Server-Server API, "Inviting to a room",
//! `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`). A local user's
//! invite of another server's user is countersigned by that server before it
//! is stored. An invite of a local user from another server is checked,
//! countersigned and kept until the user joins or rejects it.

use http::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, RoomVersionId, ServerName, UserId,
    events::StateEventType, signatures::Verified,
};
use serde_json::{Value, json};

use super::{Rooms, pdu::Pdu, state::RoomState, version};
use crate::{
    error::{Error, ErrorKind, Result},
    federation::FederationError,
    storage::{self, connections::MemberEvent, invites::RemoteInvite, writer::Stream},
};

/// The state events that go with an invite so that the invitee's client can
/// show the room (spec: Client-Server API, "Stripped state").
const STRIPPED_STATE: &[StateEventType] = &[
    StateEventType::RoomCreate,
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomCanonicalAlias,
    StateEventType::RoomEncryption,
    StateEventType::RoomTopic,
];

/// Returns the stripped form of an event: type, state key, sender and content.
pub fn stripped(pdu: &Pdu) -> Value {
    json!({
        "type": pdu.kind.to_string(),
        "state_key": pdu.state_key,
        "sender": pdu.sender,
        "content": pdu.content_value(),
    })
}

/// Returns the stripped state events that describe `room`.
pub fn room_summary(room: &RoomState) -> Vec<Value> {
    STRIPPED_STATE.iter().filter_map(|kind| room.get(kind, "")).map(|pdu| stripped(pdu)).collect()
}

/// Returns the state that goes with an invite of `room` sent by `inviter` to
/// another server: the events that describe the room and the inviter's own
/// member event, as full PDUs formatted for the room version (spec v1.16,
/// `invite_room_state`).
pub fn invite_state(room: &RoomState, inviter: &UserId) -> Vec<Value> {
    let member = room.get(&StateEventType::RoomMember, inviter.as_str());
    STRIPPED_STATE
        .iter()
        .filter_map(|kind| room.get(kind, ""))
        .chain(member)
        .filter_map(|pdu| serde_json::from_str(&pdu.json).ok())
        .collect()
}

/// Returns the stripped form of an event of another server's
/// `invite_room_state`, which may be a full PDU or already stripped.
fn strip_received(event: &Value) -> Option<Value> {
    let object = event.as_object()?;
    Some(json!({
        "type": object.get("type")?,
        "state_key": object.get("state_key")?,
        "sender": object.get("sender")?,
        "content": object.get("content")?,
    }))
}

/// Percent-encodes one path segment of a federation request.
pub(super) fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Converts the failure of a request to another server about `what` into the
/// error a client gets. The message names the server.
pub(super) fn remote_error(server: &ServerName, what: &str, err: FederationError) -> Error {
    match err {
        FederationError::Status { status, errcode, message, .. } if status.is_client_error() => {
            let kind = match errcode.as_str() {
                "M_FORBIDDEN" => ErrorKind::Forbidden,
                "M_NOT_FOUND" => ErrorKind::NotFound,
                "M_INCOMPATIBLE_ROOM_VERSION" => ErrorKind::IncompatibleRoomVersion,
                "M_UNABLE_TO_AUTHORISE_JOIN" => ErrorKind::UnableToAuthoriseJoin,
                "M_UNABLE_TO_GRANT_JOIN" => ErrorKind::UnableToGrantJoin,
                _ => ErrorKind::Unknown,
            };
            Error::new(kind, format!("{server} rejected {what}: {errcode} {message}")).with_status(status)
        }
        other => Error::new(ErrorKind::Unknown, format!("could not reach {server} for {what}: {other}"))
            .with_status(http::StatusCode::BAD_GATEWAY),
    }
}

/// An invite of a local user that another server sent.
pub struct InboundInvite {
    pub room_id: ruma::OwnedRoomId,
    pub event_id: OwnedEventId,
    pub room_version: String,
    pub event: CanonicalJsonObject,
    pub invite_room_state: Vec<Value>,
}

impl Rooms {
    /// Has the invite `pdu` of `invitee`, a user of another server,
    /// countersigned by that server (`room` is the state before the invite)
    /// and returns the event with both signatures.
    pub(super) async fn countersign_invite(&self, room: &RoomState, pdu: &Pdu, invitee: &UserId) -> Result<Pdu> {
        let federation = self.federation()?;
        let server = invitee.server_name();
        let event: Value = serde_json::from_str(&pdu.json).map_err(|e| Error::internal("sending an invite", e))?;
        let body = json!({
            "room_version": room.version.to_string(),
            "event": event,
            "invite_room_state": invite_state(room, &pdu.sender),
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            segment(room.room_id.as_str()),
            segment(pdu.event_id.as_str())
        );
        let answer = federation
            .send_json(server, Method::PUT, &path, Some(&body), true)
            .await
            .map_err(|e| remote_error(server, "the invite", e))?;
        let bad = |reason: &str| {
            Error::new(ErrorKind::Unknown, format!("{server} returned an invalid response to the invite: {reason}"))
                .with_status(http::StatusCode::BAD_GATEWAY)
        };
        let signature = answer["event"]["signatures"][server.as_str()].clone();
        let Ok(CanonicalJsonValue::Object(signature)) = CanonicalJsonValue::try_from(signature) else {
            return Err(bad("the returned event carries no signature of the invitee's server"));
        };
        let mut object = pdu.canonical_object().ok_or_else(|| bad("the invite is not an object"))?;
        if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
            signatures.insert(server.to_string(), CanonicalJsonValue::Object(signature));
        }
        let keys = federation.signing_keys(&object).await;
        match ruma::signatures::verify_event(&keys, &object, &room.rules) {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => return Err(bad("the content hash no longer matches")),
            Err(err) => return Err(bad(&format!("the countersignature does not verify: {err}"))),
        }
        let json = serde_json::to_string(&object).map_err(|e| Error::internal("countersigning an invite", e))?;
        Pdu::from_json(pdu.event_id.clone(), &json, &room.room_id).map_err(|e| Error::internal("an invite", e))
    }

    /// Takes an invite of a local user from `origin` (the inviting server).
    /// Checks it, consults the room policy, countersigns it and stores it for
    /// the invitee's `/sync`. Returns the countersigned event.
    #[tracing::instrument(skip_all, fields(%origin, room_id = %invite.room_id, event_id = %invite.event_id))]
    pub async fn receive_invite(&self, origin: &ServerName, invite: InboundInvite) -> Result<CanonicalJsonObject> {
        let InboundInvite { room_id, event_id, room_version, event: mut object, invite_room_state } = invite;
        let version =
            RoomVersionId::try_from(room_version.as_str()).ok().filter(version::is_supported).ok_or_else(|| {
                let mut error = Error::new(
                    ErrorKind::IncompatibleRoomVersion,
                    format!("room version {room_version:?} is not supported by this server"),
                );
                error.body = json!({ "room_version": room_version }).as_object().cloned();
                error.with_status(http::StatusCode::BAD_REQUEST)
            })?;
        let rules = version::rules(&version).ok_or_else(|| Error::internal("an invite", "no rules"))?;

        let field = |name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        if field("type").as_deref() != Some("m.room.member") {
            return Err(Error::bad_json("event.type must be m.room.member"));
        }
        if field("room_id").as_deref() != Some(room_id.as_str()) {
            return Err(Error::bad_json(format!("event.room_id must be {room_id}")));
        }
        let sender = field("sender")
            .and_then(|s| ruma::UserId::parse(s).ok())
            .ok_or_else(|| Error::bad_json("event.sender is missing or invalid"))?;
        if sender.server_name() != origin {
            return Err(Error::forbidden(format!("the invite's sender {sender} is not a user of {origin}")));
        }
        let invitee = field("state_key")
            .and_then(|s| ruma::UserId::parse(s).ok())
            .ok_or_else(|| Error::bad_json("event.state_key is missing or not a user id"))?;
        if invitee.server_name() != self.server_name {
            return Err(Error::bad_json(format!(
                "event.state_key {invitee} is not a user of this server, {}",
                self.server_name
            )));
        }
        if storage::users::get(&self.db.pool, invitee.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("user {invitee} does not exist")));
        }
        let content = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content.clone(),
            _ => return Err(Error::bad_json("event.content must be an object")),
        };
        if content.get("membership").and_then(|v| v.as_str()) != Some("invite") {
            return Err(Error::bad_json("event.content.membership must be invite"));
        }
        let is_direct = matches!(content.get("is_direct"), Some(CanonicalJsonValue::Bool(true)));

        let hash = ruma::signatures::reference_hash(&object, &rules)
            .map_err(|e| Error::bad_json(format!("the event cannot be hashed: {e}")))?;
        if format!("${hash}") != event_id.as_str() {
            return Err(Error::bad_json(format!("the event's id is ${hash}, not {event_id}")));
        }
        let federation = self.federation()?;
        let keys = federation.signing_keys(&object).await;
        match ruma::signatures::verify_event(&keys, &object, &rules) {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => return Err(Error::forbidden("the invite's content hash does not match")),
            Err(err) => return Err(Error::forbidden(format!("the invite's signature does not verify: {err}"))),
        }

        self.policy.check_inbound_invite(&room_id, &sender, &invitee, is_direct).await?;

        ruma::signatures::sign_json(self.server_name.as_str(), &self.key.pair, &mut object)
            .map_err(|e| Error::internal("countersigning an invite", e))?;

        // When a local member is joined, the invite also arrives in the room
        // itself (a transaction from the inviting server) and is stored there.
        let in_room = self.exists(&room_id).await? && self.state(&room_id).await?.servers().contains(&self.server_name);
        if !in_room {
            let mut stripped_state: Vec<Value> = invite_room_state.iter().filter_map(strip_received).collect();
            let own = json!({
                "type": "m.room.member",
                "state_key": invitee,
                "sender": sender,
                "content": Value::from(CanonicalJsonValue::Object(content.clone())),
            });
            stripped_state.retain(|e| !(e["type"] == "m.room.member" && e["state_key"] == invitee.as_str()));
            stripped_state.push(own);
            let reason = content.get("reason").and_then(|v| v.as_str()).map(str::to_owned);
            let origin_server_ts = match object.get("origin_server_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
                _ => storage::now_ms(),
            };
            let row = RemoteInvite {
                room_id: room_id.to_string(),
                user_id: invitee.to_string(),
                event_id: event_id.to_string(),
                room_version: version.to_string(),
                sender: sender.to_string(),
                event: serde_json::to_string(&object).map_err(|e| Error::internal("storing an invite", e))?,
                invite_state: Value::Array(stripped_state).to_string(),
            };
            self.db
                .writer
                .write(move |w| {
                    Box::pin(async move {
                        let stream = w.next_position(Stream::Events);
                        storage::invites::insert(&mut w.conn, &row, storage::now_ms()).await?;
                        // An invite ends a pending knock.
                        storage::knocks::delete(&mut w.conn, &row.room_id, &row.user_id).await?;
                        storage::rooms::set_membership(
                            &mut w.conn,
                            &row.room_id,
                            &row.user_id,
                            "invite",
                            &row.event_id,
                            stream,
                        )
                        .await?;
                        // A direct invite is a connection request in the connections index.
                        let event = MemberEvent {
                            sender: &row.sender,
                            target: &row.user_id,
                            membership: "invite",
                            is_direct,
                            reason: reason.as_deref(),
                            origin_server_ts,
                        };
                        storage::connections::apply_remote_member_event(&mut w.conn, &row.room_id, &row.sender, &event)
                            .await?;
                        Ok(())
                    })
                })
                .await?;
            self.notifier.wake([&*invitee]);
        }
        tracing::info!(%sender, %invitee, "accepted an invite from another server");
        Ok(object)
    }

    /// Rejects the invite of `user` to a room this server is not in: a leave
    /// through the inviting server (`make_leave`, `send_leave`), and in any
    /// case the invite ends here, as the inviting server may be unreachable.
    pub async fn reject_remote_invite(&self, room_id: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
        let Some(invite) = storage::invites::get(&self.db.pool, room_id.as_str(), user.as_str()).await? else {
            return Err(Error::forbidden(format!("you have no invite to room {room_id}")));
        };
        let mut servers = Vec::new();
        if let Ok(sender) = UserId::parse(invite.sender.as_str()) {
            servers.push(sender.server_name().to_owned());
        }
        let mut extra = serde_json::Map::new();
        if let Some(reason) = reason {
            extra.insert("reason".into(), json!(reason));
        }
        let leave_id = match self.remote_membership(room_id, user, "leave", &servers, extra).await {
            Ok(done) => done.event_id.to_string(),
            Err(err) => {
                tracing::info!(%room_id, user_id = %user, error = %err.message, "rejecting an invite locally only");
                invite.event_id.clone()
            }
        };
        let (room, who, inviter) = (room_id.to_string(), user.to_string(), invite.sender.clone());
        self.db
            .writer
            .write(move |w| {
                Box::pin(async move {
                    let stream = w.next_position(Stream::Events);
                    storage::invites::delete(&mut w.conn, &room, &who).await?;
                    storage::rooms::set_membership(&mut w.conn, &room, &who, "leave", &leave_id, stream).await?;
                    let event = MemberEvent {
                        sender: &who,
                        target: &who,
                        membership: "leave",
                        is_direct: false,
                        reason: None,
                        origin_server_ts: storage::now_ms(),
                    };
                    storage::connections::apply_remote_member_event(&mut w.conn, &room, &inviter, &event).await?;
                    Ok(())
                })
            })
            .await?;
        self.notifier.wake([user]);
        Ok(())
    }
}
