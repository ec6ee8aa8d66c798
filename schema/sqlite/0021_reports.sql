-- Reports of events, rooms and users that users send to the server's
-- operators (`/report`), listed by `lattice reports`.
CREATE TABLE reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ts INTEGER NOT NULL,
    reporter TEXT NOT NULL,
    -- `event`, `room` or `user`.
    kind TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    user_id TEXT,
    reason TEXT
);
