//! Read receipts: stored per room, user, type and thread, and delivered to the
//! room's members (`m.read`) or only to their owner (`m.read.private`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::storage::receipts::ReceiptRow;

pub const PUBLIC: &str = "m.read";
pub const PRIVATE: &str = "m.read.private";

/// Builds the content of an `m.receipt` event from receipt rows, hiding other
/// users' private receipts from `viewer`.
pub fn receipt_content(rows: &[ReceiptRow], viewer: &str) -> Option<Value> {
    let mut content: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> = BTreeMap::new();
    for row in rows {
        if row.receipt_type == PRIVATE && row.user_id != viewer {
            continue;
        }
        let mut receipt = json!({ "ts": row.ts });
        if !row.thread_id.is_empty() {
            receipt["thread_id"] = json!(row.thread_id);
        }
        content
            .entry(row.event_id.clone())
            .or_default()
            .entry(row.receipt_type.clone())
            .or_default()
            .insert(row.user_id.clone(), receipt);
    }
    (!content.is_empty()).then(|| json!(content))
}
