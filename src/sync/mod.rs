//! `/sync`: assembling what changed for a user since a token, and waiting for
//! changes through the [`notifier`].

pub mod assemble;
pub mod filter;
pub mod notifier;
pub mod response;
pub mod token;
