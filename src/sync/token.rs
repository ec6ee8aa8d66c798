//! Sync and pagination tokens. They are opaque to clients: `s` followed by the
//! positions of the event, receipt, account data, presence, typing, to-device
//! and device-list streams. Tokens of the older five-part form are accepted,
//! with the last two positions at zero.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: i64,
    pub receipts: i64,
    pub account_data: i64,
    pub presence: i64,
    pub typing: i64,
    pub to_device: i64,
    pub device_lists: i64,
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.receipts,
            self.account_data,
            self.presence,
            self.typing,
            self.to_device,
            self.device_lists
        )
    }
}

impl SyncToken {
    pub fn parse(token: &str, param: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("{param} is not a valid token: {token:?}"));
        let rest = token.strip_prefix('s').ok_or_else(invalid)?;
        let parts: Vec<i64> =
            rest.split('_').map(|p| p.parse::<i64>()).collect::<Result<_, _>>().map_err(|_| invalid())?;
        match parts.as_slice() {
            [events, receipts, account_data, presence, typing] => Ok(Self {
                events: *events,
                receipts: *receipts,
                account_data: *account_data,
                presence: *presence,
                typing: *typing,
                to_device: 0,
                device_lists: 0,
            }),
            [events, receipts, account_data, presence, typing, to_device, device_lists] => Ok(Self {
                events: *events,
                receipts: *receipts,
                account_data: *account_data,
                presence: *presence,
                typing: *typing,
                to_device: *to_device,
                device_lists: *device_lists,
            }),
            _ => Err(invalid()),
        }
    }
}

/// A position in a room's timeline for `/messages`: `t` and a stream position.
/// Sync tokens are accepted too, as the spec allows `prev_batch` and `next_batch` there.
pub fn parse_pagination(token: &str, param: &str) -> Result<i64> {
    if let Some(rest) = token.strip_prefix('t') {
        return rest.parse().map_err(|_| Error::invalid_param(format!("{param} is not a valid token: {token:?}")));
    }
    Ok(SyncToken::parse(token, param)?.events)
}

pub fn pagination_token(stream: i64) -> String {
    format!("t{stream}")
}
