-- Full-text search over message bodies, room names and topics, for
-- `/search`. One row per searchable event, keyed by the event's stream
-- position; storage/search.rs keeps it as events are stored and redacted.
-- The `simple` configuration neither stems nor drops stop words, so that
-- every language is searched alike.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    search_key TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
CREATE INDEX event_search_room ON event_search (room_id, stream_ordering);

-- Fill it from the events stored before this migration.
INSERT INTO event_search (stream_ordering, event_id, room_id, search_key, vector)
    SELECT stream_ordering, event_id, room_id, search_key, to_tsvector('simple', value)
    FROM (
        SELECT stream_ordering, event_id, room_id,
            CASE event_type WHEN 'm.room.message' THEN 'content.body'
                WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END AS search_key,
            pdu::json -> 'content' ->> (CASE event_type WHEN 'm.room.message' THEN 'body'
                WHEN 'm.room.name' THEN 'name' ELSE 'topic' END) AS value
        FROM events
        WHERE redacted_by IS NULL AND (event_type = 'm.room.message'
            OR (event_type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
    ) candidates
    WHERE value IS NOT NULL;
