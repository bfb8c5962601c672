-- turnstore schema, version 3, SQLite: group commit and hand-over.
--
-- The writes that a process sends at the same moment are applied in one BEGIN IMMEDIATE
-- transaction (store/group_commit.py), each decided as if it ran alone; if one is refused
-- the batch rolls back and its writes are applied one by one. That needs no schema.
--
-- A turn that ends hands its conversation over, in the same transaction, to the next turn
-- waiting in line, which starts without waiting for its submitter to poll: a queued turn
-- keeps its user message until then.

ALTER TABLE turnstore_turns ADD COLUMN pending_content TEXT
    CHECK (pending_content IS NULL OR (json_valid(pending_content)
                                       AND json_type(pending_content) = 'array'));
