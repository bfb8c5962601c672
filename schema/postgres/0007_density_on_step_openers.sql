-- turnstore schema, version 7, PostgreSQL: the density check on the rows that open a step.
--
-- Version 1 checked, for every message, that its predecessor exists (dense positions): a
-- deferred foreign key on prev_position. A tool row is already checked more strictly by
-- turnstore_result_follows_its_step, whose key is the row right before it (position - 1)
-- with the same step: that row exists, so the density check of a tool row never refuses
-- what the other accepts. It still cost a lookup and a row lock (with its WAL record) at
-- every commit, three of the eight per step of three calls.
--
-- prev_position is now NULL on tool rows (NULL keys are not checked), and stays what it
-- was on user and assistant rows. The rules are unchanged: tests/test_db_pairing.py has
-- every refusal, gaps before and inside a step included. Re-adding the column rewrites the
-- table, and re-adding the constraint checks every row once.
ALTER TABLE turnstore_messages DROP CONSTRAINT turnstore_dense_positions;
ALTER TABLE turnstore_messages DROP COLUMN prev_position;
ALTER TABLE turnstore_messages ADD COLUMN prev_position bigint GENERATED ALWAYS AS
    (CASE WHEN role <> 'tool' THEN NULLIF(position, 0) - 1 END) STORED;
ALTER TABLE turnstore_messages ADD CONSTRAINT turnstore_dense_positions
    FOREIGN KEY (conversation_id, prev_position)
    REFERENCES turnstore_messages (conversation_id, position)
    DEFERRABLE INITIALLY DEFERRED;
