-- Push notifications: the outcome of push rule evaluation per event and
-- user, the pushers that deliver it, and the email addresses (3PIDs) of
-- accounts with their pending verifications.

-- One row per event and local user whose push rules returned actions that
-- notify or highlight. thread_id is 'main' for the main timeline, else the
-- thread root's event id, as in threaded read receipts.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    actions TEXT NOT NULL,
    highlight BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_ordering);
CREATE INDEX event_push_actions_event ON event_push_actions (event_id);

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- Secret of the unsubscribe link in the emails of an email pusher.
    unsubscribe_token TEXT,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);
CREATE UNIQUE INDEX pushers_unsubscribe ON pushers (unsubscribe_token);

CREATE TABLE user_threepids (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    validated_ts BIGINT NOT NULL,
    added_ts BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- Email verification sessions of /account/3pid/email/requestToken.
CREATE TABLE threepid_validations (
    sid TEXT PRIMARY KEY,
    client_secret TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    token TEXT NOT NULL,
    send_attempt BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    validated_ts BIGINT
);
CREATE INDEX threepid_validations_secret ON threepid_validations (client_secret, address);

-- The last notification email per user and room, for the per-conversation
-- limit, and the newest event it covered.
CREATE TABLE email_notifications_sent (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    sent_ts BIGINT NOT NULL,
    last_stream BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
