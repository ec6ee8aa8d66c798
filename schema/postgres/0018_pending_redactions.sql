-- Received redactions whose target event this server had not stored when
-- the redaction arrived. The redaction applies once the target is stored,
-- if the redaction's sender may redact it (room versions 3 and later check
-- this only when both events are known).
CREATE TABLE pending_redactions (
    target_id TEXT NOT NULL,
    redaction_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    sender TEXT NOT NULL,
    -- 1 when the sender's power level reached the redact level in the state
    -- before the redaction, so that it may redact any user's event.
    may_redact_others BIGINT NOT NULL,
    PRIMARY KEY (target_id, redaction_id)
);
