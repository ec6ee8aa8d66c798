-- Pending redactions are looked up by the redaction too: a redaction whose
-- target is not stored yet is kept out of client views.
CREATE INDEX pending_redactions_redaction ON pending_redactions (redaction_id);

-- Gaps in a room's history: a room this server left entirely and joined
-- again lacks the events sent in between. Each row is one event that the
-- rejoin lists (directly or through gap events already fetched) in
-- prev_events but that is not stored. Events fetched for the gap take the
-- stream positions in (floor, ceiling], reserved at the rejoin, from the
-- top down.
CREATE TABLE backfill_gaps (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    floor BIGINT NOT NULL,
    ceiling BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- State events of a gap that the rejoin's state listed, stored at the top of
-- the gap with the join. Backfill moves each to its place when it reaches it.
CREATE TABLE gap_state (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
