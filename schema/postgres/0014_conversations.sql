-- What the messaging metrics need about each room's messages, kept by
-- storage/connections.rs as messages are stored, so that the metrics read one
-- row per room instead of searching each room's events.
-- Messages are events of type m.room.message, m.room.encrypted and m.sticker.

-- The first message of each room: the one with the lowest stream position.
CREATE TABLE conversation_starts (
    room_id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);

-- One row per room and sender of messages there: the earliest
-- origin_server_ts of the sender's messages in the room. For anyone but the
-- room's first sender, that is their first reply to the first message.
CREATE TABLE conversation_senders (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    earliest_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Fill both from the messages stored before this migration.
INSERT INTO conversation_starts (room_id, sender, stream_ordering, origin_server_ts)
    SELECT e.room_id, e.sender, e.stream_ordering, e.origin_server_ts
    FROM events e JOIN (
        SELECT room_id, MIN(stream_ordering) AS first_ordering FROM events
        WHERE event_type IN ('m.room.message', 'm.room.encrypted', 'm.sticker')
        GROUP BY room_id
    ) firsts ON e.stream_ordering = firsts.first_ordering;

INSERT INTO conversation_senders (room_id, user_id, earliest_ts)
    SELECT room_id, sender, MIN(origin_server_ts) FROM events
    WHERE event_type IN ('m.room.message', 'm.room.encrypted', 'm.sticker')
    GROUP BY room_id, sender;
