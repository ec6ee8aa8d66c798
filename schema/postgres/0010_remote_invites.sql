-- Invites and knocks of local users in rooms that this server is not in.

-- An invite is kept as this server countersigned it, with the stripped state
-- the inviting server sent, so that /sync can show the invite until the user
-- joins the room or rejects the invite. The memberships table holds the
-- invite's stream position.
CREATE TABLE remote_invites (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    sender TEXT NOT NULL,
    event TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- A knock sent through another server (server), with the stripped state
-- that server returned, shown in /sync until the user is invited, joins or
-- withdraws the knock.
CREATE TABLE remote_knocks (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    server TEXT NOT NULL,
    knock_state TEXT NOT NULL,
    knocked_ts BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
