-- Counting a user's messages since a time (the professional policy's daily
-- limit, checked on every send) reads only this index.
CREATE INDEX events_sender_type_ts ON events (sender, event_type, origin_server_ts);
