-- Keys push actions by event first, so that the rows of one event (one per
-- notified member) are adjacent in the primary key. Appending an event to a
-- large room then writes one region of the key instead of one per member.
-- Deleting the rows of a redacted event uses the key, so the separate
-- event_id index goes.
-- SQLite cannot change a primary key in place, so the table is rebuilt.
CREATE TABLE event_push_actions_new (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    actions TEXT NOT NULL,
    highlight INTEGER NOT NULL,
    PRIMARY KEY (event_id, user_id)
);
INSERT INTO event_push_actions_new
    SELECT user_id, event_id, room_id, thread_id, stream_ordering, ts, actions, highlight FROM event_push_actions;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_new RENAME TO event_push_actions;
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_ordering);
