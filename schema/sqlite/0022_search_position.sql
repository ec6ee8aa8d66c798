-- How far the search index has followed the event stream. Events are indexed
-- after they commit, in batches; every event at or below this position with
-- searchable text is in `event_search`. Events stored before this migration
-- were indexed as they were stored.
CREATE TABLE search_index_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_ordering BIGINT NOT NULL
);
INSERT INTO search_index_position (id, stream_ordering)
    SELECT 1, COALESCE(MAX(stream_ordering), 0) FROM events;
