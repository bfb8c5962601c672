-- turnstore schema, version 13, PostgreSQL: the keys of version 15 built as unique
-- indexes, concurrently (a build lets reads and writes through; it waits for the
-- transactions that were running when it started). See 0012_keys_by_conversation.sql.
-- 15 makes the first two the primary keys of their tables (USING INDEX: no second build)
-- and the third a unique constraint. This release's staged step upsert (ON CONFLICT
-- (conversation_id, turn_id, step)) needs the first: this release's code runs from 14 on.
--
-- turnstore: expand
-- turnstore: no-transaction

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS turnstore_staged_steps_by_conversation
    ON turnstore_staged_steps (conversation_id, turn_id, step);

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS turnstore_usage_by_conversation_seq
    ON turnstore_usage (conversation_id, turn_id, seq);

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS turnstore_usage_usage_id_key
    ON turnstore_usage (conversation_id, turn_id, usage_id);
