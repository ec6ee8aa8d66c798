//! A persistent data unit: a room event in its room version's federation format,
//! hashed and signed, together with the fields the server reads often.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UserId, events::TimelineEventType,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A parsed PDU. `json` is the exact signed form that is stored and federated.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: i64,
    pub json: Arc<str>,
    /// False for a room version 12 create event, whose room id is derived from its event id.
    pub has_room_id: bool,
    /// `content.membership` of an `m.room.member` event, read once at parse time.
    membership: Option<String>,
}

#[derive(Deserialize)]
struct PduFields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: i64,
}

#[derive(Deserialize)]
struct MembershipContent {
    membership: Option<String>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a stored or freshly signed PDU. `room_id` fills in the room of a
    /// room version 12 create event, whose PDU has no `room_id`.
    pub fn from_json(event_id: OwnedEventId, json: &str, room_id: &RoomId) -> Result<Self, serde_json::Error> {
        let fields: PduFields = serde_json::from_str(json)?;
        let redacts = match fields.redacts {
            Some(id) => Some(id),
            None if fields.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(fields.content.get()).ok().and_then(|c| c.redacts)
            }
            None => None,
        };
        let has_room_id = fields.room_id.is_some();
        let membership = if fields.kind == TimelineEventType::RoomMember {
            serde_json::from_str::<MembershipContent>(fields.content.get()).ok().and_then(|c| c.membership)
        } else {
            None
        };
        Ok(Self {
            event_id,
            has_room_id,
            membership,
            room_id: fields.room_id.unwrap_or_else(|| room_id.to_owned()),
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts,
            depth: fields.depth,
            json: Arc::from(json),
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The content as a JSON value, for reading fields.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    /// A string field of the content, if present.
    pub fn content_str(&self, field: &str) -> Option<String> {
        match self.content_value().get(field) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// `membership` of an `m.room.member` event.
    pub fn membership(&self) -> Option<String> {
        self.membership.clone()
    }

    /// `membership` of an `m.room.member` event, without a copy.
    pub fn membership_str(&self) -> Option<&str> {
        self.membership.as_deref()
    }

    /// The canonical JSON object of the signed PDU.
    pub fn canonical_object(&self) -> Option<CanonicalJsonObject> {
        match serde_json::from_str::<CanonicalJsonValue>(&self.json) {
            Ok(CanonicalJsonValue::Object(object)) => Some(object),
            _ => None,
        }
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.has_room_id.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}

/// The `unsigned` object of an event as a client sees it.
#[derive(Debug, Default, Serialize)]
pub struct Unsigned {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_content: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<String>,
    /// The bundled aggregations of child events.
    #[serde(rename = "m.relations", skip_serializing_if = "Option::is_none")]
    pub relations: Option<Box<RawValue>>,
}

/// An event in the client format of the Client-Server API.
#[derive(Debug, Serialize)]
pub struct ClientEvent<'a> {
    pub content: &'a RawValue,
    pub event_id: &'a str,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_id: Option<&'a str>,
    pub sender: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_key: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacts: Option<&'a str>,
    pub unsigned: Unsigned,
}

impl Pdu {
    /// The client form of this event. `with_room_id` is false inside `/sync`.
    pub fn to_client(&self, with_room_id: bool, unsigned: Unsigned) -> ClientEvent<'_> {
        ClientEvent {
            content: &self.content,
            event_id: self.event_id.as_str(),
            origin_server_ts: self.origin_server_ts,
            room_id: with_room_id.then(|| self.room_id.as_str()),
            sender: self.sender.as_str(),
            state_key: self.state_key.as_deref(),
            kind: self.kind.to_string(),
            redacts: self.redacts.as_ref().map(|id| id.as_str()),
            unsigned,
        }
    }
}
