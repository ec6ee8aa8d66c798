-- End-to-end encryption: device and cross-signing keys, one-time and fallback
-- keys, signatures, the device-list and to-device streams, and key backups.

CREATE TABLE device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- `upload_seq` orders one-time keys by upload, so claims hand out the oldest first.
CREATE TABLE one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    upload_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX one_time_keys_claim ON one_time_keys (user_id, device_id, algorithm, upload_seq);

CREATE TABLE fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- key_type: master, self_signing or user_signing.
CREATE TABLE cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload. The target is a device
-- id or the public key of a cross-signing key.
CREATE TABLE key_signatures (
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (signer_user_id, signer_key_id, target_user_id, target_key_id)
);
CREATE INDEX key_signatures_target ON key_signatures (target_user_id, target_key_id);

-- One row per change of a user's devices or keys; stream_id is the device-list stream.
CREATE TABLE device_list_changes (
    stream_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (stream_id, user_id)
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id);

CREATE TABLE to_device_messages (
    stream_id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX to_device_recipient ON to_device_messages (user_id, device_id, stream_id);

CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE backup_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
