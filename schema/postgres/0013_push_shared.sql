-- Push actions shared by the members of a room: a message to a room whose
-- members all have the default outcome writes one row instead of one per
-- member.

-- The outcome of an event for every local member who was joined when it was
-- stored, except its sender and the members with a row of their own in
-- event_push_actions for the same event.
CREATE TABLE event_push_shared (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL
);
CREATE INDEX event_push_shared_room ON event_push_shared (room_id, stream_ordering);
CREATE INDEX event_push_shared_stream ON event_push_shared (stream_ordering);

-- A row of event_push_actions now overrides the shared row of its event for
-- its user. notify = 0 marks a member whom the event does not notify (a
-- muted room, for example) although it notifies the others. Existing rows
-- all notify.
ALTER TABLE event_push_actions ADD COLUMN notify BIGINT NOT NULL DEFAULT 1;

-- The stream position of the join that began a member's current membership,
-- so that profile changes (join after join) keep it. A shared row applies to
-- members who joined before it.
ALTER TABLE memberships ADD COLUMN joined_stream BIGINT NOT NULL DEFAULT 0;
UPDATE memberships SET joined_stream = stream_ordering;

-- Read positions that a user's own messages set: a message reads everything
-- before it in its thread for its sender. thread_id '' reads every thread;
-- it holds the positions of the rule before this migration, under which a
-- message read the whole room, so that stored counts do not change.
CREATE TABLE push_read_marks (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
INSERT INTO push_read_marks (user_id, room_id, thread_id, stream_ordering)
    SELECT e.sender, e.room_id, '', MAX(e.stream_ordering) FROM events e
    JOIN memberships m ON m.room_id = e.room_id AND m.user_id = e.sender
    GROUP BY e.sender, e.room_id;

-- The stream position up to which a background sender (the push gateway
-- sender) has handled push actions, so that it continues there after a
-- restart.
CREATE TABLE push_sender_positions (
    name TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);
