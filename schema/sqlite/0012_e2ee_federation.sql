-- End-to-end encryption over federation: the device-list updates announced
-- for local users, the cached device lists of users on other servers, and the
-- ids of to-device messages received from other servers.

-- One row per `m.device_list_update` of a local user. `stream_id` is the
-- position on the device-list stream; the previous row of the same user is
-- the update's `prev_id`.
CREATE TABLE device_list_outbound (
    user_id TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (user_id, stream_id)
);

-- Users of other servers whose device list is cached. `stream_id` is the
-- origin's stream id of the newest update applied.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    updated_ts INTEGER NOT NULL
);

CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- key_type: master or self_signing (a user-signing key never leaves its server).
CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- `message_id` of each `m.direct_to_device` EDU taken in, so a retried
-- transaction delivers its messages once.
CREATE TABLE inbound_to_device_ids (
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, message_id)
);
