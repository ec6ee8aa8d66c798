//! Receiving PDUs from other servers (spec: Server-Server API, "Checks
//! performed on receipt of a PDU"): format, signatures, content hash, auth
//! against the event's `auth_events`, auth against the state before the event,
//! and the soft-fail check against the room's current state. Accepted events
//! are persisted like local ones and wake the room's local members.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId,
    events::StateEventType,
    signatures::{PublicKeyMap, Verified},
    state_res,
};

use super::{
    Rooms, audience,
    builder::{self, BuiltEvent},
    pdu::Pdu,
    persist::{self, Batch},
    state::RoomState,
};
use crate::{
    error::{Error, Result},
    storage,
};

/// The outcome for a received PDU that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Persisted and shown to local members.
    Accepted,
    /// Passed the auth checks but fails against the current state: not shown
    /// to clients and not built upon.
    SoftFailed,
    /// Already known.
    Duplicate,
}

/// A PDU that failed a check, with the reason given back to its sender.
#[derive(Debug)]
pub struct Rejected(pub String);

pub(super) type StateMap = HashMap<(StateEventType, String), Arc<Pdu>>;

impl Rooms {
    /// Runs the checks on receipt of one PDU of `room_id` and persists it when
    /// it passes. `keys` holds the public keys of the servers that signed it.
    pub async fn receive_pdu(
        &self,
        room_id: &RoomId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> std::result::Result<(OwnedEventId, Received), Rejected> {
        let internal = |e: Error| Rejected(format!("internal error: {}", e.message));
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(Arc::new(self.load(room_id).await.map_err(internal)?));
        }
        let current = guard.as_ref().cloned().expect("room state was just loaded");
        let rules = current.rules.clone();

        // Format: the event id is the reference hash in room versions 3 and later.
        let hash = ruma::signatures::reference_hash(&object, &rules)
            .map_err(|e| Rejected(format!("the PDU is malformed: {e}")))?;
        let event_id = OwnedEventId::try_from(format!("${hash}"))
            .map_err(|e| Rejected(format!("the PDU has no valid event id: {e}")))?;
        if storage::events::get(&self.db.pool, event_id.as_str()).await.map_err(|e| internal(e.into()))?.is_some() {
            return Ok((event_id, Received::Duplicate));
        }
        match object.get("room_id") {
            Some(CanonicalJsonValue::String(id)) if id == room_id.as_str() => {}
            _ => return Err(Rejected(format!("the PDU's room_id is not {room_id}"))),
        }

        // Signatures, then the content hash: a PDU whose hash does not match
        // is kept in its redacted form.
        let object = match ruma::signatures::verify_event(keys, &object, &rules) {
            Ok(Verified::All) => object,
            Ok(Verified::Signatures) => {
                tracing::info!(%event_id, "content hash mismatch; keeping the redacted event");
                ruma::canonical_json::redact(object, &rules.redaction, None)
                    .map_err(|e| Rejected(format!("the PDU cannot be redacted: {e}")))?
            }
            Err(err) => return Err(Rejected(format!("signature check failed: {err}"))),
        };
        let json = serde_json::to_string(&object).map_err(|e| Rejected(format!("the PDU is malformed: {e}")))?;
        let pdu = Pdu::from_json(event_id.clone(), &json, room_id)
            .map_err(|e| Rejected(format!("the PDU is malformed: {e}")))?;
        if pdu.kind == ruma::events::TimelineEventType::RoomCreate {
            return Err(Rejected("a room's create event cannot arrive in a transaction".into()));
        }

        // Auth against the event's own auth events.
        let auth_events = self.load_events(&pdu.auth_events).await.map_err(internal)?;
        if auth_events.len() != pdu.auth_events.len() {
            return Err(Rejected("some of the PDU's auth_events are unknown to this server".into()));
        }
        let mut auth_state: StateMap = auth_events
            .values()
            .filter_map(|e| e.state_key.clone().map(|key| ((StateEventType::from(e.kind.to_string()), key), e.clone())))
            .collect();
        // Where the room id stands for the create event, it is not listed but still applies.
        if rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = current.create_event()
        {
            auth_state.entry((StateEventType::RoomCreate, String::new())).or_insert_with(|| create.clone());
        }
        let fetch_event =
            |id: &EventId| auth_events.get(id).map(|p| &**p).or_else(|| current.find_event(id).map(|p| &**p));
        state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch_event)
            .map_err(|reason| Rejected(format!("not allowed by its auth events: {reason}")))?;
        check_against(&rules, &pdu, &auth_state)
            .map_err(|r| Rejected(format!("not allowed by its auth events: {r}")))?;

        // Auth against the state before the event. Fetching unknown previous
        // events (`/get_missing_events`) is not built: such a PDU is rejected.
        let prev = self.load_events(&pdu.prev_events).await.map_err(internal)?;
        if prev.len() != pdu.prev_events.len() {
            return Err(Rejected("some of the PDU's prev_events are unknown to this server".into()));
        }
        let before = self.state_before(&current, &pdu).await.map_err(internal)?;
        check_against(&rules, &pdu, &before)
            .map_err(|r| Rejected(format!("not allowed by the state before the event: {r}")))?;

        // Soft fail against the current state.
        if let Err(reason) = check_against(&rules, &pdu, &current.state) {
            tracing::info!(%event_id, %reason, "soft-failing a received event");
            return Ok((event_id, Received::SoftFailed));
        }

        let mut next = RoomState::clone(&current);
        let pdu = Arc::new(pdu);
        let replaces_state = pdu
            .state_key
            .as_ref()
            .and_then(|key| next.get(&StateEventType::from(pdu.kind.to_string()), key).map(|p| p.event_id.clone()));
        let old_extremities = next.extremities.clone();
        let old_depth = next.depth;
        let state_change = builder::apply(&mut next, &pdu, self.db.writer.positions());
        next.depth = old_depth.max(pdu.depth);
        let mut extremities: Vec<OwnedEventId> =
            old_extremities.into_iter().filter(|id| !pdu.prev_events.contains(id)).collect();
        extremities.push(pdu.event_id.clone());
        next.extremities = extremities;

        let wake_target = pdu.state_key.as_deref().and_then(|key| ruma::UserId::parse(key).ok());
        let built = BuiltEvent {
            pdu: pdu.clone(),
            state_change,
            redaction: None,
            chain_length: next.chain_length,
            state_group: next.state_group,
            replaces_state,
        };
        // Local members get notifications for received events just as for local ones.
        let push_actions = vec![self.push.evaluate(&next, &built.pdu).await.map_err(internal)?];
        let notifies = push_actions.iter().any(|actions| !actions.is_empty());
        let batch = Batch {
            room_id: room_id.to_string(),
            new_room: None,
            events: vec![built],
            push_actions,
            txn: None,
            extremities: Some(next.extremities.iter().map(|id| id.to_string()).collect()),
            require_prev: true,
        };
        let outcome = self.db.writer.write(move |w| Box::pin(persist::persist(w, batch))).await;
        if let Err(err) = outcome {
            *guard = None;
            return Err(internal(err));
        }
        let members = audience(&next, &self.server_name, wake_target.filter(|_| pdu.membership().is_some()));
        *guard = Some(Arc::new(next));
        drop(guard);
        self.notifier.wake(members.iter().map(|u| &**u));
        if notifies {
            self.push.new_actions.notify_one();
        }
        Ok((event_id, Received::Accepted))
    }

    async fn load_events(&self, ids: &[OwnedEventId]) -> Result<HashMap<OwnedEventId, Arc<Pdu>>> {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let events = storage::events::get_many(&self.db.pool, &ids).await?;
        Ok(events.into_iter().map(|e| (e.pdu.event_id.clone(), e.pdu)).collect())
    }

    /// The state before `pdu`: the current state when it extends the room's
    /// forward extremities, else the state after its single previous event.
    /// With several previous events that are not the extremities, the
    /// current state stands in, as state resolution is not built.
    async fn state_before(&self, current: &RoomState, pdu: &Pdu) -> Result<StateMap> {
        let prev: HashSet<&OwnedEventId> = pdu.prev_events.iter().collect();
        let extremities: HashSet<&OwnedEventId> = current.extremities.iter().collect();
        if prev == extremities || pdu.prev_events.len() != 1 {
            return Ok(current.state.clone());
        }
        let Some(stored) = storage::events::get(&self.db.pool, pdu.prev_events[0].as_str()).await? else {
            return Ok(current.state.clone());
        };
        let entries = storage::state::load_group(&self.db.pool, stored.state_group).await?;
        let ids: Vec<String> = entries.values().cloned().collect();
        let events = storage::events::get_many(&self.db.pool, &ids).await?;
        Ok(events
            .into_iter()
            .filter_map(|e| {
                let key = e.pdu.state_key.clone()?;
                Some(((StateEventType::from(e.pdu.kind.to_string()), key), e.pdu))
            })
            .collect())
    }
}

pub(super) fn check_against(
    rules: &ruma::room_version_rules::RoomVersionRules,
    pdu: &Pdu,
    state: &StateMap,
) -> std::result::Result<(), String> {
    let fetch_state = |kind: &StateEventType, key: &str| state.get(&(kind.clone(), key.to_owned())).map(|p| &**p);
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state).map_err(|e| e.to_string())
}

/// What a resident server answers to `send_join`.
pub struct JoinAnswer {
    /// The state before the join event.
    pub state: Vec<Arc<Pdu>>,
    /// The auth chain of that state and of the join event.
    pub auth_chain: Vec<Arc<Pdu>>,
}

impl Rooms {
    /// The `make_join` template for `user` (spec: Server-Server API,
    /// "Joining Rooms"): an unsigned join event on top of the current state,
    /// after checking the room policy and the authorization rules.
    pub async fn make_join(&self, room_id: &RoomId, user: &ruma::UserId) -> Result<(String, serde_json::Value)> {
        let room = self.state(room_id).await?;
        self.policy.check_join(&room, user).await?;
        self.make_membership(room_id, user, "join").await
    }

    /// The `make_leave` template for `user` (spec: Server-Server API,
    /// "Leaving Rooms (Rejecting Invites)").
    pub async fn make_leave(&self, room_id: &RoomId, user: &ruma::UserId) -> Result<(String, serde_json::Value)> {
        self.make_membership(room_id, user, "leave").await
    }

    /// An unsigned `membership` event of `user` on top of the current state,
    /// checked against the authorization rules.
    async fn make_membership(
        &self,
        room_id: &RoomId,
        user: &ruma::UserId,
        membership: &str,
    ) -> Result<(String, serde_json::Value)> {
        let room = self.state(room_id).await?;
        let content = serde_json::json!({ "membership": membership });
        let raw = serde_json::value::to_raw_value(&content).map_err(|e| Error::internal("a join template", e))?;
        let kind = ruma::events::TimelineEventType::RoomMember;
        let auth_types =
            state_res::auth_types_for_event(&kind, user, Some(user.as_str()), &raw, &room.rules.authorization)
                .map_err(|e| Error::internal("a join template", e))?;
        let mut auth_events: Vec<String> =
            auth_types.iter().filter_map(|(kind, key)| room.get(kind, key).map(|p| p.event_id.to_string())).collect();
        auth_events.sort();
        let template = serde_json::json!({
            "auth_events": auth_events,
            "content": content,
            "depth": room.depth + 1,
            "origin_server_ts": storage::now_ms(),
            "prev_events": room.extremities,
            "room_id": room_id,
            "sender": user,
            "state_key": user,
            "type": "m.room.member",
        });
        // The template must pass the rules, so the joining server learns now that it may not join.
        let probe = Pdu::from_json(
            OwnedEventId::try_from("$template").map_err(|e| Error::internal("a join template", e))?,
            &template.to_string(),
            room_id,
        )
        .map_err(|e| Error::internal("a join template", e))?;
        check_against(&room.rules, &probe, &room.state)
            .map_err(|reason| Error::forbidden(format!("{user} may not {membership} {room_id}: {reason}")))?;
        Ok((room.version.to_string(), template))
    }

    /// Takes a signed join event from `origin` as the resident server: the
    /// checks on receipt, the room policy, persisting it, and sending it to
    /// the other servers in the room. Returns the state before the join and
    /// the auth chain.
    pub async fn send_join(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<JoinAnswer> {
        let sender = own_member_event(origin, &object, "join")?;
        let before = self.state(room_id).await?;
        self.policy.check_join(&before, &sender).await?;
        let servers_before = before.servers();
        let (id, _) =
            self.receive_pdu(room_id, object, keys).await.map_err(|Rejected(reason)| Error::forbidden(reason))?;
        if id != event_id {
            return Err(Error::bad_json(format!("the event id is {id}, not {event_id}")));
        }
        let after = self.state(room_id).await?;
        let Some(join) = after.find_event(&id).cloned() else {
            return Err(Error::forbidden("the join event was soft-failed"));
        };
        let servers: Vec<_> = servers_before.into_iter().filter(|s| s != origin).collect();
        let mut others = RoomState::clone(&after);
        others.state.retain(|(kind, key), _| {
            *kind != StateEventType::RoomMember
                || ruma::UserId::parse(key.as_str()).map(|u| u.server_name() != origin).unwrap_or(true)
        });
        self.send_out(&servers, &others, std::slice::from_ref(&join)).await;

        // The state before the join holds the joining user's earlier member event, such as an invite.
        let mut state: Vec<Arc<Pdu>> = after.state.values().filter(|p| p.event_id != id).cloned().collect();
        if let Some(earlier) = before.get(&StateEventType::RoomMember, sender.as_str()) {
            state.push(earlier.clone());
        }
        let mut chain: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut pending: Vec<OwnedEventId> =
            state.iter().chain(std::iter::once(&join)).flat_map(|p| p.auth_events.clone()).collect();
        if after.rules.authorization.room_create_event_id_as_room_id
            && let Some(create) = after.create_event()
        {
            pending.push(create.event_id.clone());
        }
        while !pending.is_empty() {
            pending.retain(|id| !chain.contains_key(id));
            let found = self.load_events(&pending).await?;
            pending = found.values().flat_map(|p| p.auth_events.clone()).collect();
            chain.extend(found);
        }
        Ok(JoinAnswer { state, auth_chain: chain.into_values().collect() })
    }

    /// Takes a signed leave event from `origin` as the resident server (spec:
    /// Server-Server API, `send_leave`): the checks on receipt, persisting
    /// it, and sending it to the other servers in the room.
    pub async fn send_leave(
        &self,
        origin: &ruma::ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<()> {
        own_member_event(origin, &object, "leave")?;
        let before = self.state(room_id).await?;
        let servers_before = before.servers();
        let (id, _) =
            self.receive_pdu(room_id, object, keys).await.map_err(|Rejected(reason)| Error::forbidden(reason))?;
        if id != event_id {
            return Err(Error::bad_json(format!("the event id is {id}, not {event_id}")));
        }
        let after = self.state(room_id).await?;
        let Some(leave) = after.find_event(&id).cloned() else {
            return Err(Error::forbidden("the leave event was soft-failed"));
        };
        let servers: Vec<_> = servers_before.into_iter().filter(|s| s != origin).collect();
        let mut others = RoomState::clone(&after);
        others.state.retain(|(kind, key), _| {
            *kind != StateEventType::RoomMember
                || ruma::UserId::parse(key.as_str()).map(|u| u.server_name() != origin).unwrap_or(true)
        });
        self.send_out(&servers, &others, std::slice::from_ref(&leave)).await;
        Ok(())
    }
}

/// Checks that `object` is the `membership` event of a user of `origin`
/// about themselves, and returns that user.
fn own_member_event(
    origin: &ruma::ServerName,
    object: &CanonicalJsonObject,
    membership: &str,
) -> Result<ruma::OwnedUserId> {
    let field = |name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let sender = field("sender").and_then(|s| ruma::UserId::parse(s).ok());
    let Some(sender) = sender.filter(|s| s.server_name() == origin) else {
        return Err(Error::bad_json(format!("the {membership} event's sender must be a user of {origin}")));
    };
    if field("type").as_deref() != Some("m.room.member") || field("state_key").as_deref() != Some(sender.as_str()) {
        return Err(Error::bad_json("the event must be the sender's own m.room.member event"));
    }
    let actual = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => content.get("membership").and_then(|v| v.as_str()),
        _ => None,
    };
    if actual != Some(membership) {
        return Err(Error::bad_json(format!("content.membership must be {membership}")));
    }
    Ok(sender)
}
