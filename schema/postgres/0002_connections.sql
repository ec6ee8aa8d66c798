-- The connections index: one row per connection room, a room created with
-- is_direct and one invitee. It is derived from member events (storage/connections.rs).
-- status: pending, connected, declined, withdrawn or removed.

CREATE TABLE connection_rooms (
    room_id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    invitee TEXT NOT NULL,
    note TEXT,
    status TEXT NOT NULL,
    requester_membership TEXT NOT NULL,
    invitee_membership TEXT NOT NULL,
    requested_ts BIGINT NOT NULL,
    accepted_ts BIGINT,
    connected_ts BIGINT,
    closed_ts BIGINT
);
CREATE INDEX connection_rooms_requester ON connection_rooms (requester, status);
CREATE INDEX connection_rooms_invitee ON connection_rooms (invitee, status);

-- A row here asks the next start to rebuild connection_rooms from the stored
-- member events, for databases that held rooms before this migration.
CREATE TABLE connection_index_rebuild (
    requested_ts BIGINT NOT NULL
);
INSERT INTO connection_index_rebuild (requested_ts) VALUES (0);

-- Daily message limits count a sender's messages since a time.
CREATE INDEX events_sender_ts ON events (sender, origin_server_ts);
