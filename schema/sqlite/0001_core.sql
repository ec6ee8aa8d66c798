-- Core tables: accounts, rooms, events and their state, and the per-user streams.
-- Flags are 0/1 integers so that the same DML runs on SQLite and PostgreSQL.

CREATE TABLE signing_keys (
    key_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    expired_ts INTEGER
);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    displayname TEXT,
    avatar_url TEXT,
    created_ts INTEGER NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts INTEGER,
    last_seen_ip TEXT,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id INTEGER NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_id);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public INTEGER NOT NULL DEFAULT 0,
    created_ts INTEGER NOT NULL,
    -- JSON array of the event ids that new events point at (forward extremities).
    extremities TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE events (
    stream_ordering INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    depth INTEGER NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    pdu TEXT NOT NULL,
    state_group INTEGER NOT NULL,
    redacted_by TEXT,
    replaces_state TEXT,
    mentions TEXT,
    txn_id TEXT,
    txn_device TEXT,
    -- The transaction id scoped to its request path, to spot retransmissions.
    txn_key TEXT
);
CREATE INDEX events_room_order ON events (room_id, stream_ordering);
CREATE INDEX events_room_state ON events (room_id, event_type, state_key);
CREATE INDEX events_room_sender ON events (room_id, sender, stream_ordering);
CREATE UNIQUE INDEX events_txn ON events (sender, txn_device, txn_key);

CREATE TABLE state_groups (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group INTEGER,
    chain_length INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    state_group INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    forgotten INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, membership);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts INTEGER NOT NULL,
    stream_id INTEGER NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_id);
