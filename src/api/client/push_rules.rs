//! Push rules (spec: Client-Server API, "Push Notifications", "Push Rules: API").

use std::sync::Arc;

use axum::{Json, extract::State};
use ruma::{
    OwnedRoomId, OwnedUserId,
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule,
        NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Services,
    api::{Auth, JsonBody, Path, Query},
    error::{Error, Result},
    users::Session,
};

fn check_scope(scope: &str) -> Result<()> {
    if scope != "global" {
        return Err(Error::invalid_param(format!("push rule scope {scope:?} is not supported: use \"global\"")));
    }
    Ok(())
}

fn parse_kind(kind: &str) -> Result<RuleKind> {
    match kind {
        "override" => Ok(RuleKind::Override),
        "underride" => Ok(RuleKind::Underride),
        "sender" => Ok(RuleKind::Sender),
        "room" => Ok(RuleKind::Room),
        "content" => Ok(RuleKind::Content),
        other => Err(Error::invalid_param(format!(
            "push rule kind {other:?} is invalid: expected override, underride, sender, room or content"
        ))),
    }
}

fn rule_not_found(kind: &str, rule_id: &str) -> Error {
    Error::not_found(format!("push rule {kind}/{rule_id} not found"))
}

/// Returns the rule as JSON, or a 404 error.
fn rule_json(rules: &Ruleset, kind: &str, rule_id: &str) -> Result<Value> {
    let rule = rules.get(parse_kind(kind)?, rule_id).ok_or_else(|| rule_not_found(kind, rule_id))?;
    let value = match rule {
        AnyPushRuleRef::Override(rule) | AnyPushRuleRef::Underride(rule) => serde_json::to_value(rule),
        AnyPushRuleRef::Content(rule) => serde_json::to_value(rule),
        AnyPushRuleRef::Room(rule) => serde_json::to_value(rule),
        AnyPushRuleRef::Sender(rule) => serde_json::to_value(rule),
        _ => return Err(rule_not_found(kind, rule_id)),
    };
    value.map_err(|e| Error::internal("serializing a push rule", e))
}

/// GET /_matrix/client/v3/pushrules/
pub async fn get_all(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    Ok(Json(services.push.account_data_content(&session.user_id).await?))
}

/// GET /_matrix/client/v3/pushrules/global/
pub async fn get_global(State(services): State<Arc<Services>>, Auth(session): Auth) -> Result<Json<Value>> {
    let rules = services.push.ruleset(&session.user_id).await?;
    Ok(Json(serde_json::to_value(rules).map_err(|e| Error::internal("serializing push rules", e))?))
}

/// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub async fn get_rule(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let rules = services.push.ruleset(&session.user_id).await?;
    Ok(Json(rule_json(&rules, &kind, &rule_id)?))
}

#[derive(Deserialize)]
pub struct PutRuleQuery {
    before: Option<String>,
    after: Option<String>,
}

#[derive(Deserialize)]
pub struct PutRuleBody {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Option<Vec<PushCondition>>,
    #[serde(default)]
    pattern: Option<String>,
}

/// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub async fn put_rule(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    Query(query): Query<PutRuleQuery>,
    JsonBody(body): JsonBody<PutRuleBody>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let rule = new_rule(parse_kind(&kind)?, &rule_id, body)?;
    let mut rules = services.push.ruleset(&session.user_id).await?;
    // ruma 0.20's `Ruleset::insert` panics when it moves a rule that it
    // replaced to the end of its kind, so an existing rule is removed first.
    // The change is saved only if the insert succeeds.
    if !rule_id.starts_with('.') {
        let _ = rules.remove(rule.kind(), &rule_id);
    }
    rules.insert(rule, query.after.as_deref(), query.before.as_deref()).map_err(|e| match e {
        InsertPushRuleError::UnknownRuleId => {
            Error::not_found("the push rule named by the before or after parameter was not found")
        }
        InsertPushRuleError::ServerDefaultRuleId => Error::invalid_param(format!(
            "rule id {rule_id:?} is invalid: ids starting with '.' are reserved for server-default rules"
        )),
        InsertPushRuleError::InvalidRuleId => {
            Error::invalid_param(format!("rule id {rule_id:?} is invalid: it must not contain '/' or '\\'"))
        }
        other => Error::invalid_param(format!("push rule {kind}/{rule_id} cannot be placed there: {other}")),
    })?;
    save(&services, &session, rules).await?;
    Ok(Json(json!({})))
}

/// Builds the rule a PUT describes, checking the fields its kind needs.
fn new_rule(kind: RuleKind, rule_id: &str, body: PutRuleBody) -> Result<NewPushRule> {
    let PutRuleBody { actions, conditions, pattern } = body;
    Ok(match kind {
        RuleKind::Override | RuleKind::Underride => {
            let rule = NewConditionalPushRule::new(rule_id.to_owned(), conditions.unwrap_or_default(), actions);
            if kind == RuleKind::Override { NewPushRule::Override(rule) } else { NewPushRule::Underride(rule) }
        }
        RuleKind::Content => {
            let pattern =
                pattern.ok_or_else(|| Error::bad_json("pattern: missing field, required for content rules"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id.to_owned(), pattern, actions))
        }
        RuleKind::Room => {
            let room_id = OwnedRoomId::try_from(rule_id).map_err(|e| {
                Error::invalid_param(format!(
                    "rule id {rule_id:?} is invalid: a room rule's id must be a room id ({e})"
                ))
            })?;
            NewPushRule::Room(NewSimplePushRule::new(room_id, actions))
        }
        RuleKind::Sender => {
            let user_id = OwnedUserId::try_from(rule_id).map_err(|e| {
                Error::invalid_param(format!(
                    "rule id {rule_id:?} is invalid: a sender rule's id must be a user id ({e})"
                ))
            })?;
            NewPushRule::Sender(NewSimplePushRule::new(user_id, actions))
        }
        _ => return Err(Error::invalid_param("unsupported push rule kind")),
    })
}

async fn save(services: &Services, session: &Session, rules: Ruleset) -> Result<()> {
    services.push.save_ruleset(&session.user_id, rules).await?;
    services.notifier.wake([&*session.user_id]);
    Ok(())
}

/// DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}
pub async fn delete_rule(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let mut rules = services.push.ruleset(&session.user_id).await?;
    rules.remove(parse_kind(&kind)?, &rule_id).map_err(|e| match e {
        RemovePushRuleError::ServerDefault => {
            Error::invalid_param(format!("push rule {kind}/{rule_id} is a server-default rule and cannot be deleted"))
        }
        _ => rule_not_found(&kind, &rule_id),
    })?;
    save(&services, &session, rules).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled
pub async fn get_enabled(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let rules = services.push.ruleset(&session.user_id).await?;
    let rule = rules.get(parse_kind(&kind)?, &rule_id).ok_or_else(|| rule_not_found(&kind, &rule_id))?;
    Ok(Json(json!({ "enabled": rule.enabled() })))
}

#[derive(Deserialize)]
pub struct EnabledBody {
    enabled: bool,
}

/// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled
pub async fn put_enabled(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<EnabledBody>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let mut rules = services.push.ruleset(&session.user_id).await?;
    rules.set_enabled(parse_kind(&kind)?, &rule_id, body.enabled).map_err(|_| rule_not_found(&kind, &rule_id))?;
    save(&services, &session, rules).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions
pub async fn get_actions(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let rules = services.push.ruleset(&session.user_id).await?;
    let rule = rules.get(parse_kind(&kind)?, &rule_id).ok_or_else(|| rule_not_found(&kind, &rule_id))?;
    Ok(Json(json!({ "actions": rule.actions() })))
}

#[derive(Deserialize)]
pub struct ActionsBody {
    actions: Vec<Action>,
}

/// PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions
pub async fn put_actions(
    State(services): State<Arc<Services>>,
    Auth(session): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<ActionsBody>,
) -> Result<Json<Value>> {
    check_scope(&scope)?;
    let mut rules = services.push.ruleset(&session.user_id).await?;
    rules.set_actions(parse_kind(&kind)?, &rule_id, body.actions).map_err(|_| rule_not_found(&kind, &rule_id))?;
    save(&services, &session, rules).await?;
    Ok(Json(json!({})))
}
