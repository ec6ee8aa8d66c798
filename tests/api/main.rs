//! Integration tests: each module drives an in-process server over HTTP, on
//! SQLite and, when configured, on PostgreSQL.

mod harness;

mod account_data;
mod accounts;
mod connections;
mod devices;
mod directory;
mod discovery;
mod embedding;
mod ephemeral;
mod errors;
mod filters;
mod media;
mod membership;
mod messages;
mod presence;
mod profile;
mod push_rules;
mod pushers;
mod rooms;
mod send;
mod smoke;
mod state;
mod sync;
mod threepid;
mod user_directory;
