-- Application service delivery: how far each registration has been sent the
-- event, receipt and presence streams, and the transaction not yet
-- acknowledged. A pending transaction is resent with the same id after a
-- restart, and positions move only when the next transaction is stored.
CREATE TABLE appservice_streams (
    appservice_id TEXT PRIMARY KEY,
    event_stream BIGINT NOT NULL,
    receipt_stream BIGINT NOT NULL,
    presence_stream BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL,
    pending_txn_id BIGINT,
    pending_body TEXT
);
