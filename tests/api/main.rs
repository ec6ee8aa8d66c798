//! Integration tests: each module drives an in-process server over HTTP, on
//! SQLite and, when configured, on PostgreSQL.

mod harness;

mod smoke;
