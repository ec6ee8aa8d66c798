-- Relations between events (`m.relates_to` with a `rel_type`): one row per
-- child event, kept by storage/events.rs as events are stored, and removed
-- when the child is redacted. `/relations`, `/threads` and the bundled
-- aggregations in `unsigned.m.relations` read them.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    relates_to TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations (relates_to, rel_type, stream_ordering);
CREATE INDEX event_relations_threads ON event_relations (room_id, rel_type, stream_ordering);

-- Fill it from the events stored before this migration. The json type (not
-- jsonb) reads every stored PDU, escaped NUL characters included.
INSERT INTO event_relations
    (event_id, room_id, relates_to, rel_type, event_type, sender, origin_server_ts, stream_ordering)
    SELECT event_id, room_id, relation ->> 'event_id', relation ->> 'rel_type',
        event_type, sender, origin_server_ts, stream_ordering
    FROM (
        SELECT event_id, room_id, event_type, sender, origin_server_ts, stream_ordering,
            pdu::json -> 'content' -> 'm.relates_to' AS relation
        FROM events
        WHERE redacted_by IS NULL AND pdu LIKE '%m.relates_to%'
    ) candidates
    WHERE json_typeof(relation) = 'object'
        AND json_typeof(relation -> 'event_id') = 'string'
        AND json_typeof(relation -> 'rel_type') = 'string';
