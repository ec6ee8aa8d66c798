-- Keys the shared push actions by stream position instead of event id, so
-- that each new row's key goes at the end of the index, not at a random
-- place. The key replaces the separate stream index. Lookups by event id
-- (redactions, the push gateway's read check) go through events.
ALTER TABLE event_push_shared DROP CONSTRAINT event_push_shared_pkey;
DROP INDEX event_push_shared_stream;
ALTER TABLE event_push_shared ADD PRIMARY KEY (stream_ordering);
