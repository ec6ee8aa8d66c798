//! Push notifications: each user's push rules, their evaluation for every new
//! event, and delivery of the results to push gateways (`gateway`).
//!
//! Evaluation runs while an event is appended, under the room's lock and
//! before the event is queued for the writer, so its outcome (rows of
//! `event_push_actions`) commits in the same transaction as the event. The
//! unread counts of `/sync` and `GET /notifications` read those rows.

pub mod email;
pub mod gateway;
pub mod prune;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    Int, OwnedServerName, OwnedUserId, ServerName, UInt, UserId,
    events::StateEventType,
    power_levels::NotificationPowerLevels,
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomPowerLevelsRules,
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    rooms::{pdu::Pdu, state::RoomState},
    storage::{
        self, Db,
        push::{PushAction, PushOutcome, SharedPushAction},
        writer::Stream,
    },
    users::ignored::IgnoredUsers,
};

/// The account data type under which clients read a user's push rules.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Relations followed to find an event's thread; the spec recommends at most 3 hops.
const MAX_THREAD_HOPS: usize = 3;

/// The push rule service.
pub struct Push {
    db: Db,
    /// This server's name: only its users have push rules here.
    server_name: OwnedServerName,
    /// `push.enabled`: whether [`Push::evaluate`] evaluates anything.
    enabled: bool,
    /// Each user's rules as stored, or `None` for a user who never changed the
    /// server defaults. Filled on first use.
    rules: Mutex<HashMap<OwnedUserId, Option<Arc<Ruleset>>>>,
    /// The users each user ignores, whose non-state events do not notify that user.
    ignored: Arc<IgnoredUsers>,
    /// Wakes the gateway sender after new push actions commit.
    pub(crate) new_actions: Arc<tokio::sync::Notify>,
}

impl Push {
    pub fn new(db: Db, server_name: OwnedServerName, enabled: bool, ignored: Arc<IgnoredUsers>) -> Self {
        Self {
            db,
            server_name,
            enabled,
            rules: Mutex::new(HashMap::new()),
            ignored,
            new_actions: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Returns the user's stored rules, or `None` when the user has the server defaults.
    async fn stored_rules(&self, user_id: &UserId) -> Result<Option<Arc<Ruleset>>> {
        if let Some(cached) = self.rules.lock().unwrap_or_else(|e| e.into_inner()).get(user_id) {
            return Ok(cached.clone());
        }
        let stored = storage::account_data::get(&self.db.pool, user_id.as_str(), "", PUSH_RULES_TYPE).await?;
        let rules = match stored {
            Some(json) => Some(Arc::new(parse_push_rules(&json)?)),
            None => None,
        };
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).insert(user_id.to_owned(), rules.clone());
        Ok(rules)
    }

    /// Returns the user's complete rule set: the stored one, or the server defaults.
    pub async fn ruleset(&self, user_id: &UserId) -> Result<Ruleset> {
        Ok(match self.stored_rules(user_id).await? {
            Some(rules) => Ruleset::clone(&rules),
            None => Ruleset::server_default(user_id),
        })
    }

    /// Returns the `m.push_rules` account data content for a user.
    pub async fn account_data_content(&self, user_id: &UserId) -> Result<Value> {
        Ok(json!({ "global": self.ruleset(user_id).await? }))
    }

    /// Stores a user's rule set as `m.push_rules` account data, so that the
    /// user's clients see the change in `/sync`.
    pub async fn save_ruleset(&self, user_id: &UserId, rules: Ruleset) -> Result<()> {
        let content = json!({ "global": rules }).to_string();
        let user = user_id.to_string();
        self.db
            .writer
            .write(move |txn| {
                Box::pin(async move {
                    let stream = txn.next_position(Stream::AccountData);
                    storage::account_data::put(&mut txn.conn, &user, "", PUSH_RULES_TYPE, &content, stream).await?;
                    Ok(())
                })
            })
            .await?;
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).insert(user_id.to_owned(), Some(Arc::new(rules)));
        Ok(())
    }

    /// Evaluates the push rules of the room's local members for a new event
    /// and returns what to store: one shared row for the members on the
    /// default outcome, and a row for each member whose outcome differs.
    /// `room` is the state with the event applied. Stream positions are
    /// filled in when the event is persisted.
    ///
    /// Members with the server's default rules share one evaluation: those
    /// rules differ between users only in the user's id (mentions in
    /// `m.mentions.user_ids`, invites by `state_key`); the legacy display
    /// name and user name rules are no longer among them. So every joined
    /// default member whom the event does not name gets the same outcome,
    /// and the shared row applies to all of them. A member with rules of
    /// their own (a keyword, a display name rule, a muted room) is evaluated
    /// alone and gets a row only where the outcome differs. A member who
    /// ignores the sender of a non-state event gets an empty outcome, stored
    /// as their own row when the shared row would notify them.
    pub async fn evaluate(&self, room: &RoomState, pdu: &Pdu) -> Result<PushOutcome> {
        if !self.enabled {
            return Ok(PushOutcome::default());
        }
        let thread_id = self.thread_id(pdu).await;
        let read_mark = (pdu.state_key.is_none() && pdu.sender.server_name() == self.server_name)
            .then(|| (pdu.sender.to_string(), room.room_id.to_string(), thread_id.clone()));
        let recipients = recipients(room, pdu, &self.server_name);
        if recipients.is_empty() {
            return Ok(PushOutcome { read_mark, ..PushOutcome::default() });
        }
        let event: Raw<Value> =
            Raw::from_json_string(pdu.json.to_string()).map_err(|e| Error::internal("evaluating push rules", e))?;
        let named = named_users(pdu);
        let member_count = UInt::try_from(room.count_membership("join") as u64).unwrap_or(UInt::MAX);
        let power_levels = power_levels_ctx(room);
        let display_name = |user_id: &UserId| {
            room.get(&StateEventType::RoomMember, user_id.as_str())
                .and_then(|member| member.content_str("displayname"))
                .unwrap_or_else(|| user_id.localpart().to_owned())
        };
        let context = |user_id: &UserId| {
            PushConditionRoomCtx::new(room.room_id.clone(), member_count, user_id.to_owned(), display_name(user_id))
                .with_power_levels(power_levels.clone())
        };

        // Members covered by the shared row: joined, default rules, not named.
        let mut shared_members = Vec::new();
        let mut alone = Vec::new();
        for user_id in recipients {
            let custom = self.stored_rules(&user_id).await?;
            let covered = room.is_joined(&user_id);
            let is_named = named.iter().any(|n| n == user_id.as_str());
            let ignores_sender =
                pdu.state_key.is_none() && self.ignored.of(&user_id).await?.contains(pdu.sender.as_str());
            let rules = if ignores_sender { Rules::Silent } else { custom.map_or(Rules::Default, Rules::Own) };
            if covered && matches!(rules, Rules::Default) && !is_named {
                shared_members.push(user_id);
            } else {
                alone.push((user_id, rules, covered));
            }
        }
        let ts = i64::from(pdu.origin_server_ts.get());
        let to_json =
            |actions: &[Action]| serde_json::to_string(actions).map_err(|e| Error::internal("storing push actions", e));
        let shared = match shared_members.first() {
            Some(first) => {
                let actions = Ruleset::server_default(first).get_actions(&event, &context(first)).await.to_vec();
                actions.iter().any(Action::should_notify).then_some(actions)
            }
            None => None,
        };
        let shared_json = shared.as_deref().map(to_json).transpose()?;

        let mut users = Vec::new();
        for (user_id, rules, covered) in alone {
            let actions = match &rules {
                Rules::Own(rules) => rules.get_actions(&event, &context(&user_id)).await.to_vec(),
                Rules::Default => {
                    Ruleset::server_default(&user_id).get_actions(&event, &context(&user_id)).await.to_vec()
                }
                Rules::Silent => Vec::new(),
            };
            let notify = actions.iter().any(Action::should_notify);
            let json = to_json(&actions)?;
            // A covered member needs a row only where the shared one is wrong for them.
            let needs_row = match (&shared_json, covered) {
                (Some(shared), true) => *shared != json,
                _ => notify,
            };
            if !needs_row {
                continue;
            }
            users.push(PushAction {
                user_id: user_id.to_string(),
                event_id: pdu.event_id.to_string(),
                room_id: room.room_id.to_string(),
                thread_id: thread_id.clone(),
                stream_ordering: 0,
                ts,
                highlight: notify && actions.iter().any(Action::is_highlight),
                actions: json,
                notify,
            });
        }
        let shared = match (shared, shared_json) {
            (Some(actions), Some(json)) => Some(SharedPushAction {
                event_id: pdu.event_id.to_string(),
                room_id: room.room_id.to_string(),
                thread_id: thread_id.clone(),
                sender: pdu.sender.to_string(),
                stream_ordering: 0,
                ts,
                highlight: actions.iter().any(Action::is_highlight),
                actions: json,
            }),
            _ => None,
        };
        Ok(PushOutcome { shared, users, read_mark })
    }

    /// Returns the thread of an event: `main`, or the root of the `m.thread` relation
    /// found by following at most [`MAX_THREAD_HOPS`] relations (a reaction to
    /// a message in a thread belongs to that thread).
    async fn thread_id(&self, pdu: &Pdu) -> String {
        let mut content = pdu.content_value();
        for _ in 0..MAX_THREAD_HOPS {
            let relation = &content["m.relates_to"];
            let Some(target) = relation["event_id"].as_str() else {
                break;
            };
            if relation["rel_type"].as_str() == Some("m.thread") {
                return target.to_owned();
            }
            match storage::events::get(&self.db.pool, target).await {
                Ok(Some(related)) => content = related.pdu.content_value(),
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, event_id = %pdu.event_id, "could not read a related event; counting it in the main timeline");
                    break;
                }
            }
        }
        "main".to_owned()
    }
}

/// The rules that decide a member's outcome for one event.
enum Rules {
    /// The server's default rules.
    Default,
    /// The member's stored rules.
    Own(Arc<Ruleset>),
    /// None: the member ignores the sender.
    Silent,
}

/// Parses stored `m.push_rules` content.
fn parse_push_rules(json: &str) -> Result<Ruleset> {
    #[derive(serde::Deserialize)]
    struct Content {
        global: Ruleset,
    }
    let content: Content = serde_json::from_str(json).map_err(|e| Error::internal("reading push rules", e))?;
    Ok(content.global)
}

/// Local users whose rules apply to the event: the joined members other than
/// the sender, and the local target of an invite. For an event received over
/// federation these are this server's members, not the sender's.
fn recipients(room: &RoomState, pdu: &Pdu, server_name: &ServerName) -> Vec<OwnedUserId> {
    let mut users: Vec<OwnedUserId> = room
        .local_members(server_name)
        .into_iter()
        .filter(|user| *user != pdu.sender && room.is_joined(user))
        .collect();
    if pdu.membership().as_deref() == Some("invite")
        && let Some(target) = pdu.state_key.as_deref().and_then(|key| UserId::parse(key).ok())
        && target.server_name() == server_name
        && !users.contains(&target)
    {
        users.push(target);
    }
    users
}

/// Returns every user id that an event names where the default rules look for one:
/// `m.mentions.user_ids` and the `state_key`.
fn named_users(pdu: &Pdu) -> Vec<String> {
    let content = pdu.content_value();
    let mut named: Vec<String> = content["m.mentions"]["user_ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if let Some(key) = &pdu.state_key {
        named.push(key.clone());
    }
    named
}

/// Builds the power levels that `sender_notification_permission` conditions
/// (such as `@room` mentions) check.
fn power_levels_ctx(room: &RoomState) -> PushConditionPowerLevelsCtx {
    let content = room.content(&StateEventType::RoomPowerLevels, "");
    let int = |value: &Value| match value {
        Value::Number(n) => n.as_i64().and_then(|n| Int::try_from(n).ok()),
        Value::String(s) => s.parse::<i64>().ok().and_then(|n| Int::try_from(n).ok()),
        _ => None,
    };
    let creator = room.create_event().map(|c| c.sender.clone());
    let mut users = std::collections::BTreeMap::new();
    if let Some(map) = content["users"].as_object() {
        for (user, level) in map {
            if let (Ok(user), Some(level)) = (UserId::parse(user.as_str()), int(level)) {
                users.insert(user, level);
            }
        }
    } else if content.is_null()
        && let Some(creator) = &creator
    {
        // Without power levels the creator has 100 and everyone else 0.
        users.insert(creator.clone(), Int::from(100));
    }
    let users_default = int(&content["users_default"]).unwrap_or_default();
    let mut notifications = NotificationPowerLevels::new();
    if let Some(level) = int(&content["notifications"]["room"]) {
        notifications.room = level;
    }
    let mut creators: Vec<OwnedUserId> = creator.into_iter().collect();
    if let Some(create) = room.create_event()
        && let Some(extra) = create.content_value()["additional_creators"].as_array()
    {
        creators.extend(extra.iter().filter_map(|v| v.as_str()).filter_map(|s| UserId::parse(s).ok()));
    }
    let rules = RoomPowerLevelsRules::new(&room.rules.authorization, creators);
    PushConditionPowerLevelsCtx::new(users, users_default, notifications, rules)
}
