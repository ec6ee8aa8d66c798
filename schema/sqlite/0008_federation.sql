-- Federation: the cache of other servers' signing keys, and remote media
-- fetched over federation.

-- One row per (server, key id) learnt from a server's own key response.
-- valid_until_ts is the response's validity for current keys; expired_ts is
-- set for keys the server listed in old_verify_keys. response is the whole
-- signed key response, kept to answer notary queries.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    expired_ts INTEGER,
    fetched_ts INTEGER NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- Media of other servers, cached on first request. The content lives in the
-- same content-addressed store as local media.
CREATE TABLE remote_media (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    filename TEXT,
    sha256 TEXT NOT NULL,
    fetched_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX remote_media_sha256 ON remote_media (sha256);

-- Thumbnails of remote media, as the origin server generated them.
CREATE TABLE remote_media_thumbnails (
    origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    fetched_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
CREATE INDEX remote_media_thumbnails_sha256 ON remote_media_thumbnails (sha256);

-- The outbox of the federation sender: PDUs and EDUs waiting for delivery to
-- one destination, sent in order of id and deleted once the destination
-- accepted the transaction that carried them.
CREATE TABLE federation_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    queued_ts INTEGER NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, kind, id);

-- Delivery state per destination: consecutive failures and the time before
-- which the sender does not retry, kept so that backoff survives a restart.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    retry_after_ts INTEGER NOT NULL,
    last_error TEXT
);
