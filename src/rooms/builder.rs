//! Building new local events: choosing `prev_events` and `auth_events`,
//! hashing and signing, deriving the event id, and checking the authorization
//! rules against the state before the event.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, ServerName, UserId,
    events::{StateEventType, TimelineEventType},
    signatures::hash_and_sign_event,
    state_res,
};
use serde_json::value::{RawValue, to_raw_value};

use super::{
    pdu::Pdu,
    state::{MAX_STATE_CHAIN, RoomState},
};
use crate::{
    error::{Error, Result},
    signing_key::SigningKey,
    storage::writer::{Stream, StreamPositions},
};

/// What a client asks to add to a room.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: serde_json::Value,
    pub redacts: Option<OwnedEventId>,
    /// `origin_server_ts` set by an application service (`ts` query parameter);
    /// `None` means now. It does not change the event's place in the room.
    pub timestamp: Option<MilliSecondsSinceUnixEpoch>,
}

impl EventDraft {
    pub fn state(kind: impl Into<TimelineEventType>, state_key: impl Into<String>, content: serde_json::Value) -> Self {
        Self { kind: kind.into(), state_key: Some(state_key.into()), content, redacts: None, timestamp: None }
    }

    pub fn message(kind: impl Into<TimelineEventType>, content: serde_json::Value) -> Self {
        Self { kind: kind.into(), state_key: None, content, redacts: None, timestamp: None }
    }
}

/// How a new event changes the stored state groups.
#[derive(Debug, Clone)]
pub enum StateChange {
    /// Not a state event: the state group stays.
    None,
    /// A new group of one entry on top of the previous group `prev`.
    Delta { group: i64, prev: i64 },
    /// A new group holding a full snapshot of the state after the event.
    Snapshot { group: i64, entries: Vec<((String, String), String)> },
}

/// A signed, authorized event ready to persist.
#[derive(Debug, Clone)]
pub struct BuiltEvent {
    pub pdu: Arc<Pdu>,
    pub state_change: StateChange,
    /// The redacted form of the event this one redacts, when it applies.
    pub redaction: Option<(OwnedEventId, String)>,
    /// Deltas between this event's state group and the last snapshot.
    pub chain_length: i64,
    /// The state group of the state after this event.
    pub state_group: i64,
    /// The state event this one replaces.
    pub replaces_state: Option<OwnedEventId>,
}

fn not_canonical(field: &str) -> Error {
    Error::bad_json(format!("{field} is not valid canonical JSON: numbers must be integers within ±(2^53-1)"))
}

/// Builds, signs and authorizes an event on top of `room`, and applies it to `room`.
pub fn build(
    room: &mut RoomState,
    server_name: &ServerName,
    key: &SigningKey,
    sender: &UserId,
    draft: EventDraft,
    positions: &StreamPositions,
) -> Result<BuiltEvent> {
    let rules = room.rules.clone();
    let is_create = draft.kind == TimelineEventType::RoomCreate;

    let content_raw: Box<RawValue> =
        to_raw_value(&draft.content).map_err(|e| Error::bad_json(format!("invalid content: {e}")))?;
    if !draft.content.is_object() {
        return Err(Error::bad_json("content must be a JSON object"));
    }

    let auth_types = state_res::auth_types_for_event(
        &draft.kind,
        sender,
        draft.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("invalid event content: {e}")))?;
    let mut auth_events: Vec<String> =
        auth_types.iter().filter_map(|(kind, key)| room.get(kind, key).map(|pdu| pdu.event_id.to_string())).collect();
    auth_events.sort();

    let prev_events: Vec<String> = room.extremities.iter().map(|id| id.to_string()).collect();
    let depth = room.depth + 1;

    let mut object = CanonicalJsonObject::new();
    object.insert(
        "auth_events".into(),
        CanonicalJsonValue::Array(auth_events.into_iter().map(CanonicalJsonValue::String).collect()),
    );
    let content = CanonicalJsonValue::try_from(draft.content.clone()).map_err(|_| not_canonical("content"))?;
    object.insert("content".into(), content);
    object.insert("depth".into(), CanonicalJsonValue::Integer(depth.try_into().map_err(|_| not_canonical("depth"))?));
    let now = draft.timestamp.unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(now.get().into()));
    object.insert(
        "prev_events".into(),
        CanonicalJsonValue::Array(prev_events.into_iter().map(CanonicalJsonValue::String).collect()),
    );
    if !(is_create && rules.authorization.room_create_event_id_as_room_id) {
        object.insert("room_id".into(), CanonicalJsonValue::String(room.room_id.to_string()));
    }
    object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
    object.insert("type".into(), CanonicalJsonValue::String(draft.kind.to_string()));
    if let Some(state_key) = &draft.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    if let Some(redacts) = &draft.redacts
        && !rules.redaction.content_field_redacts
    {
        object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
    }

    hash_and_sign_event(server_name.as_str(), &key.pair, &mut object, &rules.redaction).map_err(|e| match e {
        ruma::signatures::JsonError::PduTooLarge => {
            Error::new(crate::error::ErrorKind::TooLarge, "event is larger than 65536 bytes")
        }
        other => Error::internal("signing an event", other),
    })?;
    let hash = ruma::signatures::reference_hash(&object, &rules)
        .map_err(|e| Error::new(crate::error::ErrorKind::TooLarge, format!("event rejected: {e}")))?;
    let event_id =
        OwnedEventId::try_from(format!("${hash}")).map_err(|e| Error::internal("deriving an event id", e))?;

    if is_create && rules.authorization.room_create_event_id_as_room_id {
        room.room_id =
            OwnedRoomId::try_from(format!("!{hash}")).map_err(|e| Error::internal("deriving a room id", e))?;
    }

    let json = serde_json::to_string(&object).map_err(|e| Error::internal("serializing an event", e))?;
    let pdu =
        Pdu::from_json(event_id, &json, &room.room_id).map_err(|e| Error::internal("parsing a built event", e))?;

    authorize(room, &pdu)?;

    let pdu = Arc::new(pdu);
    let replaces_state = pdu
        .state_key
        .as_ref()
        .and_then(|key| room.get(&StateEventType::from(pdu.kind.to_string()), key).map(|prev| prev.event_id.clone()));
    let state_change = apply(room, &pdu, positions);
    Ok(BuiltEvent {
        pdu,
        state_change,
        redaction: None,
        chain_length: room.chain_length,
        state_group: room.state_group,
        replaces_state,
    })
}

/// Checks the authorization rules for a new event against the room's current state.
fn authorize(room: &RoomState, pdu: &Pdu) -> Result<()> {
    let rules = &room.rules.authorization;
    let fetch_event = |id: &ruma::EventId| room.find_event(id).map(|p| &**p);
    state_res::check_state_independent_auth_rules(rules, pdu, fetch_event)
        .map_err(|reason| Error::forbidden(format!("event not allowed: {reason}")))?;
    let fetch_state = |kind: &StateEventType, key: &str| room.get(kind, key).map(|p| &**p);
    state_res::check_state_dependent_auth_rules(rules, pdu, fetch_state)
        .map_err(|reason| Error::forbidden(format!("event not allowed: {reason}")))?;
    Ok(())
}

/// Moves the room onto the new event and returns how its state groups change.
/// A state event gets its state group id now, so that the room's next event
/// can be built before this one has committed.
pub(super) fn apply(room: &mut RoomState, pdu: &Arc<Pdu>, positions: &StreamPositions) -> StateChange {
    room.extremities = vec![pdu.event_id.clone()];
    room.depth = pdu.depth;
    let Some(state_key) = &pdu.state_key else {
        return StateChange::None;
    };
    let kind = StateEventType::from(pdu.kind.to_string());
    room.state.insert((kind, state_key.clone()), pdu.clone());
    let group = positions.reserve(Stream::StateGroups);
    let prev = room.state_group;
    room.state_group = group;
    if prev == 0 || room.chain_length + 1 >= MAX_STATE_CHAIN {
        room.chain_length = 0;
        let entries = room
            .state
            .iter()
            .map(|((kind, key), pdu)| ((kind.to_string(), key.clone()), pdu.event_id.to_string()))
            .collect();
        StateChange::Snapshot { group, entries }
    } else {
        room.chain_length += 1;
        StateChange::Delta { group, prev }
    }
}
