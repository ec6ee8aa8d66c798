-- Backward extremities: events that timeline events of a room list in
-- prev_events but that this server has not placed in the timeline yet.
-- Backfill requests the history before them from other servers in the room.
CREATE TABLE backfill_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
