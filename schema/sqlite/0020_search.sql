-- Full-text search over message bodies, room names and topics, for
-- `/search`. One row per searchable event, whose rowid is the event's stream
-- position; storage/search.rs keeps it as events are stored and redacted.
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    event_id UNINDEXED,
    room_id UNINDEXED,
    search_key UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Fill it from the events stored before this migration.
INSERT INTO event_search (rowid, value, event_id, room_id, search_key)
    SELECT stream_ordering, json_extract(pdu, '$.content.body'), event_id, room_id, 'content.body'
    FROM events
    WHERE event_type = 'm.room.message' AND redacted_by IS NULL
        AND json_type(pdu, '$.content.body') = 'text';
INSERT INTO event_search (rowid, value, event_id, room_id, search_key)
    SELECT stream_ordering, json_extract(pdu, '$.content.name'), event_id, room_id, 'content.name'
    FROM events
    WHERE event_type = 'm.room.name' AND state_key = '' AND redacted_by IS NULL
        AND json_type(pdu, '$.content.name') = 'text';
INSERT INTO event_search (rowid, value, event_id, room_id, search_key)
    SELECT stream_ordering, json_extract(pdu, '$.content.topic'), event_id, room_id, 'content.topic'
    FROM events
    WHERE event_type = 'm.room.topic' AND state_key = '' AND redacted_by IS NULL
        AND json_type(pdu, '$.content.topic') = 'text';
