//! Membership changes through another server, for rooms this server is not
//! in (spec: Server-Server API, "Joining Rooms" and "Leaving Rooms"): the
//! `make_*` template from a resident server, filled and signed here, then
//! `send_*`. A join also takes the room's state from the `send_join`
//! response, checks it like received PDUs and stores it. The room then works
//! like any room this server is in.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use http::Method;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, UserId,
    events::StateEventType, room_version_rules::RoomVersionRules, signatures::Verified, state_res,
};
use serde_json::{Map, Value, json};

use super::{
    Rooms, audience,
    builder::{BuiltEvent, StateChange},
    invite::{remote_error, segment},
    pdu::Pdu,
    persist::{self, Batch, NewRoom},
    remote::check_against,
    resolve::StateMap,
    state::RoomState,
    version,
};
use crate::{
    error::{Error, ErrorKind, Result},
    storage::{
        self,
        backfill::{GAP_SPAN, Gap},
        writer::Stream,
    },
};

/// A membership event that a resident server accepted through `send_*`.
pub struct RemoteMembership {
    pub server: OwnedServerName,
    pub event_id: OwnedEventId,
    pub rules: RoomVersionRules,
    pub version: RoomVersionId,
    /// The event as this server signed it.
    pub event: CanonicalJsonObject,
    /// The resident server's response to `send_*`.
    pub answer: Value,
}

fn invalid_response(server: &ruma::ServerName, reason: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unknown, format!("{server} returned an invalid response: {reason}"))
        .with_status(http::StatusCode::BAD_GATEWAY)
}

impl Rooms {
    /// Sends the `membership` event of `user` through the first of `servers`
    /// that accepts it. `extra` goes into the event's content.
    pub(super) async fn remote_membership(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
        servers: &[OwnedServerName],
        extra: Map<String, Value>,
    ) -> Result<RemoteMembership> {
        let mut last_error = None;
        for server in servers.iter().filter(|s| **s != self.server_name) {
            match self.remote_membership_via(room_id, user, membership, server, extra.clone()).await {
                Ok(done) => return Ok(done),
                Err(err) => {
                    tracing::info!(%room_id, %server, membership, error = %err.message, "a resident server failed");
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::not_found(format!("room {room_id} is not known to this server and no server to reach it was given"))
        }))
    }

    async fn remote_membership_via(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: &str,
        server: &ruma::ServerName,
        extra: Map<String, Value>,
    ) -> Result<RemoteMembership> {
        let federation = self.federation()?;
        let what = format!("the {membership} of {user}");
        let mut path = format!(
            "/_matrix/federation/v1/make_{membership}/{}/{}",
            segment(room_id.as_str()),
            segment(user.as_str())
        );
        if membership != "leave" {
            let versions: Vec<String> = version::SUPPORTED.iter().map(|v| format!("ver={v}")).collect();
            path = format!("{path}?{}", versions.join("&"));
        }
        let template = federation
            .send_json(server, Method::GET, &path, None, true)
            .await
            .map_err(|e| remote_error(server, &what, e))?;
        let version_text = template["room_version"].as_str().unwrap_or("1");
        let version = RoomVersionId::try_from(version_text).ok().filter(version::is_supported).ok_or_else(|| {
            Error::new(
                ErrorKind::IncompatibleRoomVersion,
                format!("room {room_id} has version {version_text}, which this server does not support"),
            )
            .with_status(http::StatusCode::BAD_REQUEST)
        })?;
        let rules = version::rules(&version).ok_or_else(|| Error::internal("a remote membership", "no rules"))?;

        let mut event = template["event"].clone();
        let Some(fields) = event.as_object_mut() else {
            return Err(invalid_response(server, "the template has no event"));
        };
        let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
        if text("type").as_deref() != Some("m.room.member")
            || text("sender").as_deref() != Some(user.as_str())
            || text("state_key").as_deref() != Some(user.as_str())
            || text("room_id").as_deref() != Some(room_id.as_str())
            || fields.get("content").and_then(|c| c["membership"].as_str()) != Some(membership)
        {
            return Err(invalid_response(
                server,
                format!("the template is not the {membership} of {user} in {room_id}"),
            ));
        }
        for name in ["signatures", "hashes", "unsigned", "event_id"] {
            fields.remove(name);
        }
        fields.insert("origin_server_ts".into(), json!(storage::now_ms()));
        if let Some(content) = fields.get_mut("content").and_then(Value::as_object_mut) {
            content.extend(extra);
        }
        let mut object: CanonicalJsonObject = match CanonicalJsonValue::try_from(event) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            _ => return Err(invalid_response(server, "the template is not canonical JSON")),
        };
        ruma::signatures::hash_and_sign_event(self.server_name.as_str(), &self.key.pair, &mut object, &rules.redaction)
            .map_err(|e| Error::internal("signing a membership event", e))?;
        let hash = ruma::signatures::reference_hash(&object, &rules)
            .map_err(|e| Error::internal("hashing a membership event", e))?;
        let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|e| Error::internal("an event id", e))?;

        let version_path = if membership == "knock" { "v1" } else { "v2" };
        let path = format!(
            "/_matrix/federation/{version_path}/send_{membership}/{}/{}",
            segment(room_id.as_str()),
            segment(event_id.as_str())
        );
        let body = serde_json::to_value(&object).map_err(|e| Error::internal("a membership event", e))?;
        let answer = federation
            .send_json(server, Method::PUT, &path, Some(&body), true)
            .await
            .map_err(|e| remote_error(server, &what, e))?;
        tracing::info!(%room_id, %server, %event_id, membership, "a resident server accepted a membership event");
        Ok(RemoteMembership { server: server.to_owned(), event_id, rules, version, event: object, answer })
    }

    /// Joins `user` to a room this server is not in, through the first of
    /// `servers` that lets the user in, and stores the room's state.
    #[tracing::instrument(skip_all, fields(%room_id, user_id = %user))]
    pub async fn join_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        servers: &[OwnedServerName],
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        let mut content = json!({ "membership": "join" });
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        self.fill_profile(&mut content, user, None).await?;
        let mut extra = content.as_object().cloned().unwrap_or_default();
        extra.remove("membership");
        let mut last_error = None;
        for server in servers.iter().filter(|s| **s != self.server_name) {
            let outcome = match self
                .remote_membership(room_id, user, "join", std::slice::from_ref(server), extra.clone())
                .await
            {
                Ok(done) => self.complete_join(room_id, user, done).await,
                Err(err) => Err(err),
            };
            match outcome {
                Ok(event_id) => return Ok(event_id),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::not_found(format!(
                "room {room_id} is not known to this server and no server to join it through was given"
            ))
        }))
    }

    /// Checks the state and auth chain of a `send_join` response and stores
    /// the room's state with the join on top.
    async fn complete_join(&self, room_id: &RoomId, user: &UserId, done: RemoteMembership) -> Result<OwnedEventId> {
        let RemoteMembership { server, event_id, rules, version, event, answer } = done;
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut state_ids = Vec::new();
        for (name, is_state) in [("auth_chain", false), ("state", true)] {
            let Some(list) = answer[name].as_array() else {
                return Err(invalid_response(&server, format!("the send_join response has no {name}")));
            };
            for value in list {
                let pdu =
                    self.check_join_pdu(room_id, value, &rules).await.map_err(|r| invalid_response(&server, r))?;
                if is_state {
                    state_ids.push(pdu.event_id.clone());
                }
                events.insert(pdu.event_id.clone(), Arc::new(pdu));
            }
        }
        // A restricted join comes back signed by the server of the user in
        // `join_authorised_via_users_server` too, and only that form passes
        // the other servers' signature checks.
        let authorising_server = authorising_server(&event, &rules);
        let event = match answer.get("event").cloned().map(CanonicalJsonValue::try_from) {
            Some(Ok(CanonicalJsonValue::Object(signed)))
                if ruma::signatures::reference_hash(&signed, &rules).ok().as_deref()
                    == Some(&event_id.as_str()[1..]) =>
            {
                signed
            }
            _ if authorising_server.is_some() => {
                return Err(invalid_response(&server, "the send_join response has no signed join event"));
            }
            _ => event,
        };
        if let Some(authorising) = &authorising_server {
            let keys = self.federation()?.signing_keys(&event).await;
            ruma::signatures::verify_event(&keys, &event, &rules).map_err(|e| {
                invalid_response(&server, format!("the join's signature of {authorising} does not verify: {e}"))
            })?;
        }
        let json = serde_json::to_string(&event).map_err(|e| Error::internal("a join event", e))?;
        let join =
            Arc::new(Pdu::from_json(event_id.clone(), &json, room_id).map_err(|e| invalid_response(&server, e))?);

        // The create event, which for room version 12 is the room id's hash.
        let create = events
            .values()
            .find(|p| p.kind == ruma::events::TimelineEventType::RoomCreate)
            .cloned()
            .ok_or_else(|| invalid_response(&server, "the room's create event is missing"))?;
        if rules.authorization.room_create_event_id_as_room_id && create.event_id.as_str()[1..] != room_id.as_str()[1..]
        {
            return Err(invalid_response(&server, "the create event does not match the room id"));
        }

        // Every event passes the auth rules against its own auth events, oldest first.
        let mut ordered: Vec<Arc<Pdu>> = events.values().cloned().collect();
        ordered.sort_by(|a, b| a.depth.cmp(&b.depth).then_with(|| a.event_id.cmp(&b.event_id)));
        for pdu in &ordered {
            check_auth(&rules, pdu, &events, &create).map_err(|r| invalid_response(&server, r))?;
        }
        let state: StateMap = state_ids
            .iter()
            .filter_map(|id| events.get(id))
            .filter_map(|p| Some(((StateEventType::from(p.kind.to_string()), p.state_key.clone()?), p.clone())))
            .collect();
        if !state.contains_key(&(StateEventType::RoomCreate, String::new())) {
            return Err(invalid_response(&server, "the room's state has no create event"));
        }
        let fetch_event = |id: &EventId| events.get(id).map(|p| &**p);
        state_res::check_state_independent_auth_rules(&rules.authorization, &*join, fetch_event)
            .map_err(|r| invalid_response(&server, format!("the join is not allowed: {r}")))?;
        check_against(&rules, &join, &state)
            .map_err(|r| invalid_response(&server, format!("the join is not allowed: {r}")))?;

        // The auth chain events that do not stay in the state are kept as
        // outliers, so that state resolution can later walk the auth graph.
        // The joining user's own earlier member event (an invite, say) is one
        // of them: the join replaces it in the state.
        let replaced = state.get(&(StateEventType::RoomMember, user.to_string())).map(|p| p.event_id.clone());
        let kept: HashSet<&OwnedEventId> = state_ids.iter().filter(|id| Some(*id) != replaced.as_ref()).collect();
        let auth_only: Vec<Arc<Pdu>> = ordered.iter().filter(|p| !kept.contains(&p.event_id)).cloned().collect();
        self.store_auth_outliers(room_id, auth_only).await?;
        self.store_joined_room(room_id, user, version, rules, state, join, &create).await?;
        tracing::info!(%room_id, %server, "joined a room through another server");
        Ok(event_id)
    }

    /// Runs the checks on receipt on one PDU of a `send_join` response:
    /// format, room, signatures and content hash (a mismatch keeps the
    /// redacted form).
    async fn check_join_pdu(
        &self,
        room_id: &RoomId,
        value: &Value,
        rules: &RoomVersionRules,
    ) -> std::result::Result<Pdu, String> {
        let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(value.clone()) else {
            return Err("a PDU is not a canonical JSON object".into());
        };
        let hash = ruma::signatures::reference_hash(&object, rules).map_err(|e| format!("a PDU is malformed: {e}"))?;
        let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|e| format!("a PDU has no valid id: {e}"))?;
        match object.get("room_id") {
            Some(CanonicalJsonValue::String(id)) if id == room_id.as_str() => {}
            None if object.get("type").and_then(|t| t.as_str()) == Some("m.room.create")
                && rules.authorization.room_create_event_id_as_room_id => {}
            _ => return Err(format!("{event_id} is not an event of {room_id}")),
        }
        let federation = self.federation().map_err(|e| e.message)?;
        let keys = federation.signing_keys(&object).await;
        let object = match ruma::signatures::verify_event(&keys, &object, rules) {
            Ok(Verified::All) => object,
            Ok(Verified::Signatures) => ruma::canonical_json::redact(object, &rules.redaction, None)
                .map_err(|e| format!("{event_id} cannot be redacted: {e}"))?,
            Err(err) => return Err(format!("the signature of {event_id} does not verify: {err}")),
        };
        let json = serde_json::to_string(&object).map_err(|e| format!("{event_id} is malformed: {e}"))?;
        Pdu::from_json(event_id.clone(), &json, room_id).map_err(|e| format!("{event_id} is malformed: {e}"))
    }

    /// Stores auth chain events of a `send_join` answer that this server has
    /// neither in the timeline nor among the outliers, with no known state.
    async fn store_auth_outliers(&self, room_id: &RoomId, events: Vec<Arc<Pdu>>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = events.iter().map(|p| p.event_id.to_string()).collect();
        let stored: HashSet<OwnedEventId> =
            storage::events::get_many(&self.db.pool, &ids).await?.into_iter().map(|e| e.pdu.event_id.clone()).collect();
        let built: Vec<(BuiltEvent, bool)> = events
            .into_iter()
            .filter(|p| !stored.contains(&p.event_id))
            .map(|pdu| {
                let event = BuiltEvent {
                    pdu,
                    state_change: StateChange::None,
                    redaction: None,
                    chain_length: 0,
                    state_group: 0,
                    replaces_state: None,
                };
                (event, false)
            })
            .collect();
        let room = room_id.to_string();
        self.db.writer.write(move |w| Box::pin(persist::persist_outliers(w, room, built))).await
    }

    /// Stores the state of a room joined through another server and the
    /// join on top of it in one commit, and makes the room's state current.
    #[allow(clippy::too_many_arguments)]
    async fn store_joined_room(
        &self,
        room_id: &RoomId,
        user: &UserId,
        version: RoomVersionId,
        rules: RoomVersionRules,
        state: StateMap,
        join: Arc<Pdu>,
        create: &Pdu,
    ) -> Result<()> {
        let slot = self.slot(room_id);
        let mut guard = slot.lock().await;
        let exists = self.exists(room_id).await?;
        let mut room = RoomState::new(room_id.to_owned(), version.clone(), rules);
        room.state = state.clone();
        room.state.insert((StateEventType::RoomMember, user.to_string()), join.clone());
        room.depth = room.state.values().map(|p| p.depth).max().unwrap_or(join.depth);
        room.extremities = vec![join.event_id.clone()];
        let group = self.db.writer.positions().reserve(Stream::StateGroups);
        room.state_group = group;

        // In a room new to this server, the state before the join becomes the
        // room's edge state: stored, but shown in no timeline until backfill
        // finds each event's place in the history. The joining user's earlier
        // member event (an invite) is part of it, for history visibility.
        // A room this server was in before already has its older timeline,
        // so the state events it lacks go just before the join, as events
        // without a known place in the history.
        let first_join = !exists;
        let to_store = if first_join { &state } else { &room.state };
        let ids: Vec<String> = to_store.values().map(|p| p.event_id.to_string()).collect();
        let stored: HashSet<OwnedEventId> =
            storage::events::get_many(&self.db.pool, &ids).await?.into_iter().map(|e| e.pdu.event_id.clone()).collect();
        let mut new_state: Vec<Arc<Pdu>> = to_store
            .values()
            .filter(|p| p.event_id != join.event_id && !stored.contains(&p.event_id))
            .cloned()
            .collect();
        new_state.sort_by(|a, b| a.depth.cmp(&b.depth).then_with(|| a.event_id.cmp(&b.event_id)));
        let entries = |state: &StateMap| {
            state.iter().map(|((kind, key), pdu)| ((kind.to_string(), key.clone()), pdu.event_id.to_string())).collect()
        };
        let event = |pdu: Arc<Pdu>, state_change, state_group| BuiltEvent {
            pdu,
            state_change,
            redaction: None,
            chain_length: 0,
            state_group,
            replaces_state: None,
        };
        let rejoin_state: Vec<Arc<Pdu>> = if first_join { Vec::new() } else { new_state.clone() };
        let mut built: Vec<BuiltEvent> = if first_join {
            // The edge state carries the group of the state before the join.
            let before = self.db.writer.positions().reserve(Stream::StateGroups);
            let mut changes = std::iter::once(StateChange::Snapshot { group: before, entries: entries(&state) });
            new_state.into_iter().map(|p| event(p, changes.next().unwrap_or(StateChange::None), before)).collect()
        } else {
            new_state.into_iter().map(|p| event(p, StateChange::None, group)).collect()
        };
        built.push(event(join.clone(), StateChange::Snapshot { group, entries: entries(&room.state) }, group));
        let push_actions = Vec::new();
        let batch = Batch {
            room_id: room_id.to_string(),
            new_room: (!exists).then(|| NewRoom {
                version: version.to_string(),
                creator: create.sender.to_string(),
                is_public: false,
                alias: None,
            }),
            events: built,
            push_actions,
            txn: None,
            extremities: Some(vec![join.event_id.to_string()]),
            require_prev: false,
            resolved: None,
            edge_state: first_join,
            pending_redaction: None,
        };
        // Backfill starts from the join's previous events. In a room this
        // server left entirely, those it lacks open a gap below the join.
        let backward: Vec<String> = join.prev_events.iter().map(|id| id.to_string()).collect();
        let missing: Vec<String> = if first_join {
            Vec::new()
        } else {
            let stored = storage::events::stored_ids(&self.db.pool, &backward).await?;
            backward.iter().filter(|id| !stored.contains(*id)).cloned().collect()
        };
        let room_name = room_id.to_string();
        let outcome = self
            .db
            .writer
            .write(move |w| {
                Box::pin(async move {
                    let gap = if missing.is_empty() {
                        None
                    } else {
                        let ceiling = w.next_positions(Stream::Events, GAP_SPAN);
                        let gap = Gap { floor: ceiling - GAP_SPAN, ceiling };
                        storage::backfill::set_gap_extremities(&mut w.conn, &room_name, gap, &missing).await?;
                        Some(gap)
                    };
                    persist::persist(w, batch).await?;
                    // The state events that the rejoin's state adds were sent
                    // while this server was away, so they go to the top of the gap.
                    if let Some(gap) = gap {
                        let pdus: Vec<&Pdu> = rejoin_state.iter().map(|p| &**p).collect();
                        storage::backfill::place_gap_state(&mut w.conn, gap, &pdus).await?;
                    }
                    if first_join {
                        storage::backfill::set_extremities(&mut w.conn, &room_name, &backward).await?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(err) = outcome {
            *guard = None;
            return Err(err);
        }
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(room_id.to_owned());
        let members = audience(&room, &self.server_name, Some(user.to_owned()));
        *guard = Some(Arc::new(room));
        drop(guard);
        let (room, who) = (room_id.to_string(), user.to_string());
        if let Err(err) = self
            .db
            .writer
            .write(move |w| {
                Box::pin(async move {
                    storage::invites::delete(&mut w.conn, &room, &who).await?;
                    storage::knocks::delete(&mut w.conn, &room, &who).await?;
                    Ok(())
                })
            })
            .await
        {
            tracing::warn!(%room_id, error = %err.message, "could not drop the invite or knock of a joined room");
        }
        self.notifier.wake(members.iter().map(|u| &**u));
        Ok(())
    }
}

/// Returns the server of the user in `join_authorised_via_users_server` of a
/// join, in room versions with restricted join rules.
fn authorising_server(event: &CanonicalJsonObject, rules: &RoomVersionRules) -> Option<OwnedServerName> {
    if !rules.authorization.restricted_join_rule {
        return None;
    }
    let Some(CanonicalJsonValue::Object(content)) = event.get("content") else { return None };
    let user = content.get("join_authorised_via_users_server")?.as_str()?;
    UserId::parse(user).ok().map(|user| user.server_name().to_owned())
}

/// Checks `pdu` against its own auth events, all of which must be in `events`.
fn check_auth(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    events: &HashMap<OwnedEventId, Arc<Pdu>>,
    create: &Arc<Pdu>,
) -> std::result::Result<(), String> {
    let mut auth_state: StateMap = HashMap::new();
    for id in &pdu.auth_events {
        let auth = events.get(id).ok_or_else(|| format!("the auth event {id} of {} is missing", pdu.event_id))?;
        if let Some(key) = &auth.state_key {
            auth_state.insert((StateEventType::from(auth.kind.to_string()), key.clone()), auth.clone());
        }
    }
    if rules.authorization.room_create_event_id_as_room_id {
        auth_state.entry((StateEventType::RoomCreate, String::new())).or_insert_with(|| create.clone());
    }
    let fetch_event = |id: &EventId| events.get(id).map(|p| &**p);
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
        .map_err(|r| format!("{} is not allowed: {r}", pdu.event_id))?;
    if pdu.kind != ruma::events::TimelineEventType::RoomCreate {
        check_against(rules, pdu, &auth_state).map_err(|r| format!("{} is not allowed: {r}", pdu.event_id))?;
    }
    Ok(())
}

impl Rooms {
    /// Returns whether this server takes part in the room: the room is stored
    /// here and one of its users is joined.
    pub async fn is_resident(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.exists(room_id).await? && self.state(room_id).await?.servers().contains(&self.server_name))
    }

    /// Returns the server of the user who invited `user` to a room this
    /// server is not in, when there is such an invite.
    pub async fn remote_inviter_server(&self, room_id: &RoomId, user: &UserId) -> Result<Option<OwnedServerName>> {
        let Some(invite) = storage::invites::get(&self.db.pool, room_id.as_str(), user.as_str()).await? else {
            return Ok(None);
        };
        if self.is_resident(room_id).await? {
            return Ok(None);
        }
        Ok(UserId::parse(invite.sender.as_str()).ok().map(|sender| sender.server_name().to_owned()))
    }
}
