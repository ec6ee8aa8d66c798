-- Keys the shared push actions by stream position instead of event id. The
-- rows of consecutive events then share table pages. Random event ids spread
-- them over the whole key, so each commit wrote about one more page per event
-- to the write-ahead log. The rowid is the stream position, which also
-- replaces the separate stream index. Lookups by event id (redactions, the
-- push gateway's read check) go through events.
CREATE TABLE event_push_shared_new (
    stream_ordering INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    ts INTEGER NOT NULL,
    actions TEXT NOT NULL,
    highlight INTEGER NOT NULL
);
INSERT INTO event_push_shared_new (stream_ordering, event_id, room_id, thread_id, sender, ts, actions, highlight)
    SELECT stream_ordering, event_id, room_id, thread_id, sender, ts, actions, highlight FROM event_push_shared;
DROP TABLE event_push_shared;
ALTER TABLE event_push_shared_new RENAME TO event_push_shared;
CREATE INDEX event_push_shared_room ON event_push_shared (room_id, stream_ordering);
