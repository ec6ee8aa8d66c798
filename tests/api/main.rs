//! Integration tests: each module drives an in-process server over HTTP, on
//! SQLite and, when configured, on PostgreSQL.

mod harness;

mod embedding;
mod smoke;
mod rooms;
mod membership;
mod state;
mod send;
mod messages;
mod sync;
mod ephemeral;
mod directory;
mod discovery;
mod accounts;
mod devices;
mod account_data;
mod filters;
mod profile;
mod presence;
mod user_directory;
mod errors;
mod connections;
mod media;
mod web;
