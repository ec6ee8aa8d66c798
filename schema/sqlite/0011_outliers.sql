-- Events this server holds outside the room's timeline: state and auth events
-- fetched from other servers to check a received event, and received events
-- that were soft-failed. Clients never see them; state resolution and the
-- checks on receipt read them.
CREATE TABLE outlier_events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    pdu TEXT NOT NULL,
    -- The state group of the state after the event, 0 when it is not known.
    state_group INTEGER NOT NULL,
    soft_failed INTEGER NOT NULL
);
