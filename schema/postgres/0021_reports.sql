-- Reports of events, rooms and users that users send to the server's
-- operators (`/report`), listed by `lattice reports`.
CREATE TABLE reports (
    id BIGSERIAL PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    reporter TEXT NOT NULL,
    -- `event`, `room` or `user`.
    kind TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT
);
