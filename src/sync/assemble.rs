//! Assembling one `/sync` response: the rooms a user joined, was invited to or
//! left, with their timelines, state, ephemeral events and account data,
//! followed by global account data, presence, to-device messages, device-list
//! changes and the device's one-time key counts.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::StreamExt;

use ruma::{OwnedRoomId, RoomId, events::StateEventType};
use serde_json::{Value, json};

use super::{
    filter::{Filter, RoomEventFilter},
    response::{self, Events, SyncResponse, Timeline},
    token::{SyncToken, pagination_token},
};
use crate::{
    Services, e2ee,
    ephemeral::receipts::receipt_content,
    error::Result,
    rooms::{
        serialize::{Viewer, client_events, client_events_bundled, stripped},
        state::RoomState,
        visibility::Visibility,
    },
    storage::{self, events::StoredEvent},
    users::Session,
};

/// Timeline length when the filter sets none.
const DEFAULT_TIMELINE_LIMIT: u64 = 10;
/// Largest timeline a filter may ask for.
const MAX_TIMELINE_LIMIT: u64 = 100;
/// Joined rooms assembled at the same time.
const ROOM_CONCURRENCY: usize = 8;
/// From this many joined rooms in one response on, their timelines and unread
/// counts are read in batches.
const BATCH_FROM_ROOMS: usize = 8;

/// What the caller already knows about a joined room.
struct JoinedRoom {
    /// Stream position of the user's join.
    join_stream: i64,
    changed_membership: bool,
    typing: Option<Vec<ruma::OwnedUserId>>,
    account: Option<Vec<Value>>,
    receipts: Option<Vec<storage::receipts::ReceiptRow>>,
    /// The room's newest events, read together with other rooms' (newest first).
    newest: Option<Vec<StoredEvent>>,
    /// Unread counts per thread, read together with other rooms'.
    unread: Option<Vec<ThreadCount>>,
}

pub struct Assembled {
    pub body: SyncResponse,
    pub has_changes: bool,
}

/// The token for "now": every stream's committed position.
pub fn current_token(services: &Services) -> SyncToken {
    let positions = services.db.writer.positions();
    use storage::writer::Stream;
    SyncToken {
        events: positions.current(Stream::Events),
        receipts: positions.current(Stream::Receipts),
        account_data: positions.current(Stream::AccountData),
        presence: positions.current(Stream::Presence),
        typing: services.typing.current_serial(),
        to_device: positions.current(Stream::ToDevice),
        device_lists: positions.current(Stream::DeviceLists),
    }
}

struct Ctx<'a> {
    services: &'a Services,
    session: &'a Session,
    since: Option<SyncToken>,
    upto: SyncToken,
    full_state: bool,
    filter: &'a Filter,
    timeline_filter: RoomEventFilter,
    state_filter: RoomEventFilter,
    /// The users whose room events, other than state, this user does not see.
    ignored: Arc<HashSet<String>>,
}

pub async fn assemble(
    services: &Services,
    session: &Session,
    since: Option<SyncToken>,
    upto: SyncToken,
    full_state: bool,
    filter: &Filter,
) -> Result<Assembled> {
    let room_filter = filter.room.clone().unwrap_or_default();
    let ctx = Ctx {
        services,
        session,
        since,
        upto,
        full_state,
        filter,
        timeline_filter: room_filter.timeline.clone().unwrap_or_default(),
        state_filter: room_filter.state.clone().unwrap_or_default(),
        ignored: services.users.ignored.of(&session.user_id).await?,
    };
    let pool = &services.db.pool;
    let user = session.user_id.as_str();

    let event_rooms: Option<HashSet<String>> = match since {
        Some(s) if s.events < upto.events => Some(
            storage::events::rooms_with_events_between(pool, user, s.events, upto.events).await?.into_iter().collect(),
        ),
        Some(_) => Some(HashSet::new()),
        None => None,
    };
    let receipts_since = since.map_or(0, |s| s.receipts);
    let mut receipts: HashMap<String, Vec<storage::receipts::ReceiptRow>> = HashMap::new();
    if receipts_since < upto.receipts {
        for row in storage::receipts::joined_rooms_since(pool, user, receipts_since, upto.receipts).await? {
            receipts.entry(row.room_id.clone()).or_default().push(row);
        }
    }
    let account_data_since = since.map_or(0, |s| s.account_data);
    let account_data = if account_data_since < upto.account_data {
        storage::account_data::changed_since(pool, user, account_data_since, upto.account_data).await?
    } else {
        Vec::new()
    };
    let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
    let mut global_account_data = Vec::new();
    let account_filter = filter.account_data.clone().unwrap_or_default();
    for (room_id, data_type, content) in &account_data {
        let content: Value = serde_json::from_str(content).unwrap_or(Value::Null);
        let event = json!({ "type": data_type, "content": content });
        if room_id.is_empty() {
            if account_filter.allows_type(data_type) {
                global_account_data.push(event);
            }
        } else {
            room_account_data.entry(room_id.clone()).or_default().push(event);
        }
    }

    // Clients read their push rules from account data; a user who never changed
    // them has no stored rules, so a fresh sync includes the server defaults.
    let has_push_rules =
        account_data.iter().any(|(room, kind, _)| room.is_empty() && kind == crate::push::PUSH_RULES_TYPE);
    if since.is_none() && !has_push_rules && account_filter.allows_type(crate::push::PUSH_RULES_TYPE) {
        let content = services.push.account_data_content(&session.user_id).await?;
        global_account_data.push(json!({ "type": crate::push::PUSH_RULES_TYPE, "content": content }));
    }

    let mut join = std::collections::BTreeMap::new();
    let mut invite = std::collections::BTreeMap::new();
    let mut knock = std::collections::BTreeMap::new();
    let mut leave = std::collections::BTreeMap::new();
    let include_leave = room_filter.include_leave.unwrap_or(false);

    let memberships = storage::rooms::user_memberships(pool, user).await?;
    let mut joined_rooms = Vec::new();
    for membership in &memberships {
        if !room_filter.allows_room(&membership.room_id) {
            continue;
        }
        let Ok(room_id) = OwnedRoomId::try_from(membership.room_id.clone()) else {
            continue;
        };
        let changed_membership = since.is_none_or(|s| membership.stream > s.events);
        match membership.membership.as_str() {
            "join" => {
                let typing_since = since.map_or(-1, |s| s.typing);
                let typing = services.typing.changed_since(&room_id, typing_since);
                let has_events = event_rooms.as_ref().is_none_or(|rooms| rooms.contains(room_id.as_str()));
                let account = room_account_data.remove(room_id.as_str());
                let room_receipts = receipts.remove(room_id.as_str());
                if !(since.is_none()
                    || full_state
                    || changed_membership
                    || has_events
                    || typing.is_some()
                    || room_receipts.is_some()
                    || account.is_some())
                {
                    continue;
                }
                let joined = JoinedRoom {
                    join_stream: membership.stream,
                    changed_membership,
                    typing,
                    account,
                    receipts: room_receipts,
                    newest: None,
                    unread: None,
                };
                joined_rooms.push((room_id, joined));
            }
            "invite" if changed_membership || full_state => {
                if let Some(section) = ctx.invited_room(&room_id).await? {
                    invite.insert(room_id.to_string(), section);
                }
            }
            "knock" if changed_membership || full_state => {
                knock.insert(room_id.to_string(), ctx.knocked_room(&room_id).await?);
            }
            "leave" | "ban" if (since.is_some() && changed_membership) || (since.is_none() && include_leave) => {
                leave.insert(room_id.to_string(), ctx.left_room(&room_id, membership.stream).await?);
            }
            _ => {}
        }
    }

    // Many rooms at once (an initial sync): read their newest events and unread
    // counts in a few statements instead of two per room.
    if joined_rooms.len() >= BATCH_FROM_ROOMS {
        let fresh: Vec<String> = joined_rooms
            .iter()
            .filter(|(_, j)| j.changed_membership || since.is_none() || full_state)
            .map(|(id, _)| id.to_string())
            .collect();
        let limit = ctx.timeline_limit() as i64 + 1;
        let mut newest: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for event in storage::events::latest_in_rooms(pool, &fresh, upto.events, limit).await? {
            newest.entry(event.pdu.room_id.to_string()).or_default().push(event);
        }
        let mut unread: HashMap<String, Vec<ThreadCount>> = HashMap::new();
        for (room, thread, n, h) in storage::push::unread_counts(pool, user, None).await? {
            unread.entry(room).or_default().push((thread, n, h));
        }
        for (room_id, joined) in &mut joined_rooms {
            if fresh.iter().any(|f| f == room_id.as_str()) {
                let mut events = newest.remove(room_id.as_str()).unwrap_or_default();
                events.sort_by(|a, b| b.stream.cmp(&a.stream));
                joined.newest = Some(events);
            }
            joined.unread = Some(unread.remove(room_id.as_str()).unwrap_or_default());
        }
    }

    // Rooms are assembled a few at a time, so that their queries overlap.
    let ctx_ref = &ctx;
    let mut sections = futures::stream::iter(joined_rooms)
        .map(|(room_id, joined)| async move {
            let section = ctx_ref.joined_room(&room_id, joined).await;
            (room_id, section)
        })
        .buffer_unordered(ROOM_CONCURRENCY);
    while let Some((room_id, section)) = sections.next().await {
        join.insert(room_id.to_string(), section?);
    }
    drop(sections);

    let presence = ctx.presence().await?;
    let to_device = e2ee::to_device::for_sync(services, session, since.map(|s| s.to_device), upto.to_device).await?;
    let device_lists = match since {
        Some(since) => e2ee::device_lists::changes_between(services, user, &since, &upto).await?,
        None => Default::default(),
    };
    let (one_time_key_counts, unused_fallback_key_types) = e2ee::sync_key_state(services, session).await?;
    let has_changes = !join.is_empty()
        || !invite.is_empty()
        || !knock.is_empty()
        || !leave.is_empty()
        || !global_account_data.is_empty()
        || !presence.is_empty()
        || !to_device.events.is_empty()
        || !device_lists.is_empty();

    let next_batch = SyncToken { to_device: to_device.position, ..upto };
    let body = SyncResponse {
        next_batch: next_batch.to_string(),
        rooms: response::Rooms { join, invite, leave, knock },
        account_data: Events { events: global_account_data },
        presence: Events { events: presence },
        to_device: Events { events: to_device.events },
        device_lists: response::DeviceLists { changed: device_lists.changed, left: device_lists.left },
        device_one_time_keys_count: one_time_key_counts,
        device_unused_fallback_key_types: unused_fallback_key_types,
    };
    Ok(Assembled { body, has_changes })
}

impl Ctx<'_> {
    fn viewer(&self) -> Viewer<'_> {
        Viewer { user_id: &self.session.user_id, device_id: &self.session.device_id, ignored: &self.ignored }
    }

    /// The newest visible events of a room in `(from, to]` that pass the timeline
    /// filter, oldest first, and whether older ones were left out.
    ///
    /// Events from `visible_from` on need no history-visibility check: the user
    /// has been joined since then. Older events load the user's membership history.
    async fn timeline(
        &self,
        room_id: &RoomId,
        from: i64,
        to: i64,
        visible_from: i64,
    ) -> Result<(Vec<StoredEvent>, bool)> {
        let limit = self.timeline_limit();
        let pool = &self.services.db.pool;
        let mut visibility: Option<Visibility> = None;
        let mut picked = Vec::new();
        let mut limited = false;
        let mut upper = to;
        let chunk = limit as i64 + 1;
        let mut scanned = 0usize;
        'scan: loop {
            let rows = storage::events::room_range(pool, room_id, from, upper, chunk, true).await?;
            if rows.is_empty() {
                break;
            }
            for event in rows {
                upper = event.stream - 1;
                scanned += 1;
                let visible = if event.stream >= visible_from {
                    true
                } else {
                    if visibility.is_none() {
                        visibility = Some(Visibility::load(pool, room_id, &self.session.user_id).await?);
                    }
                    visibility.as_ref().is_some_and(|v| v.can_see(event.stream))
                };
                if !visible || !self.shows(&event.pdu) {
                    continue;
                }
                if picked.len() == limit {
                    limited = true;
                    break 'scan;
                }
                picked.push(event);
            }
            if scanned > limit * 20 + 200 {
                limited = true;
                break;
            }
        }
        picked.reverse();
        Ok((picked, limited))
    }

    /// Returns whether an event belongs in the timeline: it passes the
    /// filter, and it is not a non-state event of an ignored user.
    fn shows(&self, pdu: &crate::rooms::pdu::Pdu) -> bool {
        let ignored = pdu.state_key.is_none() && self.ignored.contains(pdu.sender.as_str());
        !ignored && self.timeline_filter.allows(pdu)
    }

    fn timeline_limit(&self) -> usize {
        self.timeline_filter.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT).clamp(1, MAX_TIMELINE_LIMIT) as usize
    }

    /// The timeline from prefetched newest events, when every one of them is
    /// visible and passes the filter; otherwise the caller reads the database.
    fn timeline_from_newest(&self, newest: Vec<StoredEvent>, visible_from: i64) -> Option<(Vec<StoredEvent>, bool)> {
        let limit = self.timeline_limit();
        let usable = newest.iter().all(|e| e.stream >= visible_from && self.shows(&e.pdu));
        if !usable {
            return None;
        }
        let limited = newest.len() > limit;
        let mut picked: Vec<StoredEvent> = newest.into_iter().take(limit).collect();
        picked.reverse();
        Some((picked, limited))
    }

    /// The state map after the newest event at or before `stream` (empty before the room began).
    async fn state_at(&self, room_id: &RoomId, stream: i64) -> Result<HashMap<(String, String), String>> {
        let pool = &self.services.db.pool;
        match storage::events::room_range(pool, room_id, i64::MIN, stream, 1, true).await?.pop() {
            Some(event) => Ok(storage::state::load_group(pool, event.state_group).await?),
            None => Ok(HashMap::new()),
        }
    }

    /// The state just before `timeline`, when the timeline ends at the room's
    /// newest event: the in-memory current state with the timeline's own state
    /// changes taken back. `None` when the room has moved on past the timeline
    /// (or has events queued but not yet committed).
    fn state_before_timeline(
        &self,
        room: &RoomState,
        timeline: &[StoredEvent],
    ) -> Option<HashMap<(String, String), String>> {
        let newest = &timeline.last()?.pdu.event_id;
        if room.extremities.as_slice() != std::slice::from_ref(newest) {
            return None;
        }
        let mut state: HashMap<(String, String), String> = room
            .state
            .iter()
            .map(|((kind, key), pdu)| ((kind.to_string(), key.clone()), pdu.event_id.to_string()))
            .collect();
        for event in timeline.iter().rev() {
            let Some(key) = &event.pdu.state_key else {
                continue;
            };
            let entry = (event.pdu.kind.to_string(), key.clone());
            match &event.replaces_state {
                Some(previous) => state.insert(entry, previous.clone()),
                None => state.remove(&entry),
            };
        }
        Some(state)
    }

    async fn joined_room(&self, room_id: &RoomId, joined: JoinedRoom) -> Result<response::JoinedRoom> {
        let services = self.services;
        let pool = &services.db.pool;
        let room = services.rooms.state(room_id).await?;
        let fresh = self.since.is_none() || self.full_state || joined.changed_membership;
        let from = if fresh { 0 } else { self.since.map_or(0, |s| s.events) };
        let prefetched = match joined.newest {
            Some(newest) if fresh => self.timeline_from_newest(newest, joined.join_stream),
            _ => None,
        };
        let (timeline, limited) = match prefetched {
            Some(found) => found,
            None => self.timeline(room_id, from, self.upto.events, joined.join_stream).await?,
        };
        let timeline_start = timeline.first().map_or(self.upto.events, |e| e.stream - 1);

        // State between the client's view and the start of the timeline.
        let mut state_ids: HashMap<(String, String), String> = if fresh {
            match self.state_before_timeline(&room, &timeline) {
                Some(state) => state,
                None => self.state_at(room_id, timeline_start).await?,
            }
        } else if limited {
            let at_start = self.state_at(room_id, timeline_start).await?;
            let at_since = self.state_at(room_id, self.since.map_or(0, |s| s.events)).await?;
            at_start.into_iter().filter(|(key, id)| at_since.get(key) != Some(id)).collect()
        } else {
            HashMap::new()
        };

        if self.state_filter.lazy_load() {
            let senders: HashSet<String> = timeline.iter().map(|e| e.pdu.sender.to_string()).collect();
            let own = self.session.user_id.to_string();
            state_ids.retain(|(kind, key), _| kind != "m.room.member" || senders.contains(key) || *key == own);
            if !fresh {
                // Members who speak in this timeline but whose member event the client may lack.
                for sender in &senders {
                    if let Some(member) = room.get(&StateEventType::RoomMember, sender) {
                        state_ids.insert(("m.room.member".into(), sender.clone()), member.event_id.to_string());
                    }
                }
            }
        }
        let in_timeline: HashSet<String> = timeline.iter().map(|e| e.pdu.event_id.to_string()).collect();
        state_ids.retain(|_, id| !in_timeline.contains(id));
        let mut state_events = self.state_events(&room, state_ids).await?;
        state_events.retain(|e| self.state_filter.allows(&e.pdu));

        let mut ephemeral = Vec::new();
        if let Some(users) = joined.typing {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
        }
        let receipt_rows = match joined.receipts {
            Some(rows) if !fresh => rows,
            // A fresh view of the room gets every receipt, not only the changed ones.
            _ if fresh && self.upto.receipts > 0 => {
                storage::receipts::room_since(pool, room_id.as_str(), 0, self.upto.receipts).await?
            }
            _ => Vec::new(),
        };
        if let Some(content) = receipt_content(&receipt_rows, self.session.user_id.as_str()) {
            ephemeral.push(json!({ "type": "m.receipt", "content": content }));
        }

        let joined_count = room.count_membership("join");
        let invited_count = room.count_membership("invite");
        let heroes: Vec<String> = room
            .state
            .iter()
            .filter(|((kind, key), pdu)| {
                *kind == StateEventType::RoomMember
                    && *key != self.session.user_id.as_str()
                    && matches!(pdu.membership().as_deref(), Some("join" | "invite"))
            })
            .map(|((_, key), _)| key.clone())
            .take(5)
            .collect();

        let counts = match joined.unread {
            Some(counts) => counts,
            None => unread_counts(services, room_id, &self.session.user_id).await?,
        };
        let (unread_notifications, unread_thread_notifications) =
            split_counts(counts, self.timeline_filter.unread_thread_notifications.unwrap_or(false));

        let prev_batch = timeline.first().map_or_else(|| self.upto.to_string(), |e| pagination_token(e.stream - 1));
        Ok(response::JoinedRoom {
            timeline: Timeline {
                // The spec requires bundled aggregations in limited timelines
                // only, because a client that receives every new event can aggregate them itself.
                events: if limited {
                    client_events_bundled(pool, &timeline, self.viewer(), false).await?
                } else {
                    client_events(pool, &timeline, Some(self.viewer()), false).await?
                },
                limited,
                prev_batch,
            },
            state: Events { events: client_events(pool, &state_events, Some(self.viewer()), false).await? },
            ephemeral: Events { events: ephemeral },
            account_data: Events { events: joined.account.unwrap_or_default() },
            summary: response::Summary {
                heroes,
                joined_member_count: joined_count,
                invited_member_count: invited_count,
            },
            unread_notifications,
            unread_thread_notifications,
        })
    }

    /// The events of a state map, from the room's in-memory state where they
    /// are current and from the database otherwise, oldest first.
    async fn state_events(&self, room: &RoomState, ids: HashMap<(String, String), String>) -> Result<Vec<StoredEvent>> {
        let mut events = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for ((kind, key), id) in ids {
            match room.get(&StateEventType::from(kind.as_str()), &key).filter(|pdu| pdu.event_id.as_str() == id) {
                Some(pdu) => events.push(StoredEvent {
                    pdu: pdu.clone(),
                    stream: 0,
                    state_group: 0,
                    redacted_by: None,
                    replaces_state: None,
                    txn: None,
                }),
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            events.extend(storage::events::get_many(&self.services.db.pool, &missing).await?);
        }
        events.sort_by_key(|e| (e.pdu.depth, e.stream));
        Ok(events)
    }

    /// Builds the stripped state of a room the user is invited to, or `None`
    /// when the inviter is a user they ignore.
    async fn invited_room(&self, room_id: &RoomId) -> Result<Option<Value>> {
        let rooms = &self.services.rooms;
        let user = self.session.user_id.as_str();
        // An invite to a room this server is not in comes with the state the inviting server sent.
        if let Some(invite) = storage::invites::get(&self.services.db.pool, room_id.as_str(), user).await?
            && !rooms.is_resident(room_id).await?
        {
            if self.ignored.contains(&invite.sender) {
                return Ok(None);
            }
            let events: Value = serde_json::from_str(&invite.invite_state).unwrap_or_else(|_| json!([]));
            return Ok(Some(json!({ "invite_state": { "events": events } })));
        }
        let room = rooms.state(room_id).await?;
        let invite = room.get(&StateEventType::RoomMember, user);
        if invite.is_some_and(|invite| self.ignored.contains(invite.sender.as_str())) {
            return Ok(None);
        }
        let mut events = Vec::new();
        for kind in [
            StateEventType::RoomCreate,
            StateEventType::RoomJoinRules,
            StateEventType::RoomName,
            StateEventType::RoomAvatar,
            StateEventType::RoomCanonicalAlias,
            StateEventType::RoomEncryption,
            StateEventType::RoomTopic,
        ] {
            if let Some(pdu) = room.get(&kind, "") {
                events.push(stripped(pdu));
            }
        }
        if let Some(invite) = room.get(&StateEventType::RoomMember, self.session.user_id.as_str()) {
            if let Some(inviter) = room.get(&StateEventType::RoomMember, invite.sender.as_str()) {
                events.push(stripped(inviter));
            }
            events.push(stripped(invite));
        }
        Ok(Some(json!({ "invite_state": { "events": events } })))
    }

    /// The stripped state of a room the user knocked on, with the knock.
    async fn knocked_room(&self, room_id: &RoomId) -> Result<Value> {
        let rooms = &self.services.rooms;
        let user = self.session.user_id.as_str();
        if let Some(knock) = storage::knocks::get(&self.services.db.pool, room_id.as_str(), user).await?
            && !rooms.is_resident(room_id).await?
        {
            let events: Value = serde_json::from_str(&knock.knock_state).unwrap_or_else(|_| json!([]));
            return Ok(json!({ "knock_state": { "events": events } }));
        }
        let room = rooms.state(room_id).await?;
        let mut events = crate::rooms::invite::room_summary(&room);
        if let Some(own) = room.get(&StateEventType::RoomMember, user) {
            events.push(stripped(own));
        }
        Ok(json!({ "knock_state": { "events": events } }))
    }

    async fn left_room(&self, room_id: &RoomId, left_at: i64) -> Result<response::LeftRoom> {
        let pool = &self.services.db.pool;
        let from = self.since.map_or(0, |s| s.events);
        let (timeline, limited) = self.timeline(room_id, from, left_at, i64::MAX).await?;
        let prev_batch = timeline.first().map_or_else(|| pagination_token(left_at), |e| pagination_token(e.stream - 1));
        Ok(response::LeftRoom {
            timeline: Timeline {
                events: client_events(pool, &timeline, Some(self.viewer()), false).await?,
                limited,
                prev_batch,
            },
            state: Events::default(),
            account_data: Events::default(),
        })
    }

    async fn presence(&self) -> Result<Vec<Value>> {
        let Some(since) = self.since.map(|s| s.presence).or(Some(0)) else {
            return Ok(Vec::new());
        };
        if since >= self.upto.presence {
            return Ok(Vec::new());
        }
        let presence_filter = self.filter.presence.clone().unwrap_or_default();
        if !presence_filter.allows_type("m.presence") {
            return Ok(Vec::new());
        }
        let rows = storage::users::presence_since(
            &self.services.db.pool,
            self.session.user_id.as_str(),
            since,
            self.upto.presence,
        )
        .await?;
        let now = storage::now_ms();
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut content = json!({
                    "presence": row.state,
                    "last_active_ago": (now - row.last_active_ts).max(0),
                    "currently_active": row.state == "online",
                });
                if let Some(msg) = row.status_msg {
                    content["status_msg"] = json!(msg);
                }
                json!({ "type": "m.presence", "sender": row.user_id, "content": content })
            })
            .collect())
    }
}

/// Unread notifications and highlights of one thread: `(thread id, notifications, highlights)`,
/// where the thread id is `main` for the main timeline.
pub type ThreadCount = (String, i64, i64);

/// The user's unread counts in a room per thread, from the push actions stored
/// for events after the user's read receipts.
pub async fn unread_counts(services: &Services, room_id: &RoomId, user_id: &ruma::UserId) -> Result<Vec<ThreadCount>> {
    let rows = storage::push::unread_counts(&services.db.pool, user_id.as_str(), Some(room_id.as_str())).await?;
    Ok(rows.into_iter().map(|(_, thread, n, h)| (thread, n, h)).collect())
}

/// The room's `unread_notifications` and `unread_thread_notifications`: one
/// total unless the filter asks for counts per thread, in which case the room
/// count covers the main timeline only.
fn split_counts(
    counts: Vec<ThreadCount>,
    by_thread: bool,
) -> (response::UnreadNotifications, std::collections::BTreeMap<String, response::UnreadNotifications>) {
    let mut room = response::UnreadNotifications { notification_count: 0, highlight_count: 0 };
    let mut threads = std::collections::BTreeMap::new();
    for (thread, notifications, highlights) in counts {
        if by_thread && thread != "main" {
            threads.insert(
                thread,
                response::UnreadNotifications { notification_count: notifications, highlight_count: highlights },
            );
        } else {
            room.notification_count += notifications;
            room.highlight_count += highlights;
        }
    }
    (room, threads)
}
