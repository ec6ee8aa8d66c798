-- The media repository. Files live under data_dir/media, named by the SHA-256
-- of their content, so several media ids (and thumbnails) may share one file.

-- One row per media id of this server. A row made by POST /_matrix/media/v1/create
-- has no content yet: sha256, size and content_type stay NULL until the upload,
-- and unused_expires_ts says until when the upload may come.
CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    uploader TEXT NOT NULL,
    content_type TEXT,
    size INTEGER,
    filename TEXT,
    sha256 TEXT,
    created_ts INTEGER NOT NULL,
    uploaded_ts INTEGER,
    unused_expires_ts INTEGER
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_uploader ON media (uploader, uploaded_ts);

-- Thumbnails generated from an image, one per requested size and method.
CREATE TABLE media_thumbnails (
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (media_id, width, height, method)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
