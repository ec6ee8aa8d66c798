-- Keys push actions by event first, so that the rows of one event (one per
-- notified member) are adjacent in the primary key. Appending an event to a
-- large room then writes one region of the key instead of one per member.
-- Deleting the rows of a redacted event uses the key, so the separate
-- event_id index goes.
ALTER TABLE event_push_actions DROP CONSTRAINT event_push_actions_pkey;
ALTER TABLE event_push_actions ADD PRIMARY KEY (event_id, user_id);
DROP INDEX event_push_actions_event;
