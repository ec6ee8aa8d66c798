//! Redactions received from other servers, live or through backfill (spec:
//! room version 3 and later, "Handling redactions"). A redaction applies
//! once both it and its target are known, when its sender's power level
//! reaches the redact level or its sender's server is the target sender's
//! server. A redaction whose target is not stored yet is kept as pending and
//! applied when the target is. Clients get a redaction only once it applies:
//! a pending one, or one that does not apply, stays out of client views
//! (`storage::redactions::HELD_BACK`).

use std::sync::Arc;

use ruma::{OwnedEventId, RoomVersionId, UserId, room_version_rules::RedactionRules};

use super::{pdu::Pdu, version};
use crate::{
    error::{Error, Result},
    storage::{self, WriteTxn, redactions::PendingRedaction},
};

/// The effect of a received redaction on its target.
pub(super) enum ReceivedRedaction {
    /// The target is stored and the redaction applies: its redacted form.
    Apply(OwnedEventId, String),
    /// The target is not stored yet, or the redaction does not apply to it.
    Pending(PendingRedaction),
    /// The target is already redacted.
    Ignored,
}

/// Decides whether a redaction by `sender`, who may or may not redact other users'
/// events, applies to `target`.
pub(super) fn applies(sender: &UserId, may_redact_others: bool, target: &Pdu) -> bool {
    may_redact_others || sender.server_name() == target.sender.server_name()
}

/// Returns the redacted form of `pdu` as canonical JSON.
pub(super) fn redacted_json(pdu: &Pdu, rules: &RedactionRules) -> Result<String> {
    let object = pdu.canonical_object().ok_or_else(|| Error::internal("redacting", "stored PDU is not an object"))?;
    let redacted =
        ruma::canonical_json::redact(object, rules, None).map_err(|e| Error::internal("redacting an event", e))?;
    serde_json::to_string(&redacted).map_err(|e| Error::internal("redacting an event", e))
}

/// Finds the first pending redaction among `pending` that applies to
/// `target`, and returns its id with the target's redacted form.
pub(super) fn first_applying(pending: &[PendingRedaction], target: &Pdu) -> Result<Option<(String, String)>> {
    for redaction in pending {
        let Ok(sender) = UserId::parse(&redaction.sender) else { continue };
        if redaction.room_id != target.room_id.as_str() || !applies(&sender, redaction.may_redact_others, target) {
            continue;
        }
        let rules = RoomVersionId::try_from(redaction.room_version.as_str())
            .ok()
            .and_then(|v| version::rules(&v))
            .ok_or_else(|| Error::internal("redacting an event", "unsupported room version stored"))?;
        return Ok(Some((redaction.redaction_id.clone(), redacted_json(target, &rules.redaction)?)));
    }
    Ok(None)
}

/// Applies the pending redactions of a timeline event that was just
/// inserted, in the same transaction. Those that apply are dropped, which
/// shows them to clients; the first of them redacts the event. Those that do
/// not apply stay, out of client views.
pub(super) async fn apply_pending(txn: &mut WriteTxn, target: &Pdu) -> Result<()> {
    let pending = storage::redactions::of_target(&mut txn.conn, target.event_id.as_str()).await?;
    if pending.is_empty() {
        return Ok(());
    }
    if let Some((redaction_id, json)) = first_applying(&pending, target)? {
        tracing::info!(event_id = %target.event_id, %redaction_id, "applying a redaction that arrived before its target");
        storage::events::redact(&mut txn.conn, target.event_id.as_str(), &json, &redaction_id).await?;
        // A redacted message no longer counts as unread or appears in `/notifications`.
        storage::push::delete_actions_of_event(&mut txn.conn, target.event_id.as_str()).await?;
    }
    for redaction in &pending {
        if first_applying(std::slice::from_ref(redaction), target)?.is_some() {
            storage::redactions::delete(&mut txn.conn, &redaction.target_id, &redaction.redaction_id).await?;
        }
    }
    Ok(())
}

/// Applies a redaction that backfill just stored, in the same transaction:
/// to its target when that is stored and the redaction applies to it. Else
/// the redaction is kept as pending, out of client views, as a received one
/// is. Returns whether a stored event was redacted.
pub(super) async fn apply_backfilled(txn: &mut WriteTxn, redaction: &PendingRedaction) -> Result<bool> {
    let target = storage::events::get_in_txn(&mut txn.conn, &redaction.target_id).await?;
    let applying = match &target {
        Some(target) => first_applying(std::slice::from_ref(redaction), &target.pdu)?,
        None => None,
    };
    let (Some(target), Some((redaction_id, json))) = (target, applying) else {
        storage::redactions::insert(&mut txn.conn, redaction).await?;
        redact_stored_outlier(txn, redaction).await?;
        return Ok(false);
    };
    if target.redacted_by.is_some() {
        return Ok(false);
    }
    tracing::info!(event_id = %target.pdu.event_id, %redaction_id, "applying a backfilled redaction");
    storage::events::redact(&mut txn.conn, &redaction.target_id, &json, &redaction_id).await?;
    storage::push::delete_actions_of_event(&mut txn.conn, &redaction.target_id).await?;
    Ok(true)
}

/// Redacts an outlier that a new pending redaction applies to. The
/// pending redaction stays, because the event may still enter the timeline.
pub(super) async fn redact_stored_outlier(txn: &mut WriteTxn, pending: &PendingRedaction) -> Result<()> {
    let Some(outlier) = storage::outliers::pdu_in_txn(&mut txn.conn, &pending.target_id).await? else {
        return Ok(());
    };
    if let Some((_, json)) = first_applying(std::slice::from_ref(pending), &outlier)? {
        storage::outliers::redact(&mut txn.conn, &pending.target_id, &json).await?;
    }
    Ok(())
}

/// Returns the form of an outlier to store: redacted when a pending
/// redaction applies to it. The pending redactions stay, because the event may still
/// enter the timeline.
pub(super) async fn outlier_form(txn: &mut WriteTxn, pdu: &Arc<Pdu>) -> Result<Arc<Pdu>> {
    let pending = storage::redactions::of_target(&mut txn.conn, pdu.event_id.as_str()).await?;
    if pending.is_empty() {
        return Ok(pdu.clone());
    }
    match first_applying(&pending, pdu)? {
        Some((_, json)) => Pdu::from_json(pdu.event_id.clone(), &json, &pdu.room_id)
            .map(Arc::new)
            .map_err(|e| Error::internal("redacting an event", e)),
        None => Ok(pdu.clone()),
    }
}

#[cfg(test)]
mod tests {
    use ruma::{OwnedEventId, room_id};

    use super::*;

    /// A message of `sender` in `!room:a.test`, in room version 11.
    fn message(sender: &str) -> Pdu {
        let json = serde_json::json!({
            "auth_events": [],
            "content": { "body": "secret", "msgtype": "m.text" },
            "depth": 5,
            "hashes": { "sha256": "unchecked" },
            "origin_server_ts": 1,
            "prev_events": [],
            "room_id": "!room:a.test",
            "sender": sender,
            "signatures": {},
            "type": "m.room.message",
        });
        let id = OwnedEventId::try_from("$target").unwrap();
        Pdu::from_json(id, &json.to_string(), room_id!("!room:a.test")).unwrap()
    }

    fn pending(sender: &str, room_id: &str, may_redact_others: bool) -> PendingRedaction {
        PendingRedaction {
            target_id: "$target".into(),
            redaction_id: "$redaction".into(),
            room_id: room_id.into(),
            room_version: "11".into(),
            sender: sender.into(),
            may_redact_others,
        }
    }

    #[test]
    fn pending_redaction_from_target_server_applies() {
        let target = message("@carol:c.test");
        let applied = first_applying(&[pending("@dave:c.test", "!room:a.test", false)], &target).unwrap();
        let (redaction_id, json) = applied.expect("the same server may redact");
        assert_eq!(redaction_id, "$redaction");
        let redacted: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(redacted["content"], serde_json::json!({}));
        assert_eq!(redacted["sender"], "@carol:c.test");
    }

    #[test]
    fn pending_redaction_needs_power_from_other_server() {
        let target = message("@carol:c.test");
        let without_power = [pending("@mallory:m.test", "!room:a.test", false)];
        assert!(first_applying(&without_power, &target).unwrap().is_none());
        let with_power = [pending("@mallory:m.test", "!room:a.test", true)];
        assert!(first_applying(&with_power, &target).unwrap().is_some());
    }

    #[test]
    fn pending_redaction_from_other_room_ignored() {
        let target = message("@carol:c.test");
        let elsewhere = [pending("@carol:c.test", "!other:a.test", true)];
        assert!(first_applying(&elsewhere, &target).unwrap().is_none());
    }
}
