//! Integration tests: each module drives an in-process server over HTTP, on
//! SQLite and, when configured, on PostgreSQL.

mod harness;

mod account_data;
mod accounts;
mod appservice;
mod connections;
mod devices;
mod directory;
mod discovery;
mod embedding;
mod ephemeral;
mod errors;
mod federation_auth;
mod federation_backfill;
mod federation_e2ee;
mod federation_keys;
mod federation_media;
mod federation_membership;
mod federation_query;
mod federation_rooms;
mod federation_sender;
mod federation_state;
mod filters;
mod key_backup;
mod keys;
mod media;
mod membership;
mod messages;
mod presence;
mod profile;
mod push_counts;
mod push_rules;
mod pushers;
mod rooms;
mod send;
mod smoke;
mod state;
mod sync;
mod threepid;
mod to_device;
mod user_directory;
mod web;
