-- turnstore schema, version 2, PostgreSQL: plans that stay fast before the first ANALYZE.
--
-- Until autovacuum first analyzes the tables, the planner cannot tell apart indexes that
-- start with the same column, and a connection keeps the generic plans it made then (the
-- foreign-key checks' plans for as long as it lives). Version 1 left it choices that cost
-- a scan of the whole conversation per lookup: the deferred pairing checks and the
-- next-position read could use the (conversation_id, tool_call_id) index, filtering on
-- position; a lookup by idempotency key or by turn id could use the content-hash index;
-- a lookup by turn id and status could walk every running turn of every conversation.
-- A fresh database (or a benchmark's) ran every write with those plans.
--
-- Now an index serves only the lookups it was made for, whatever the statistics say:
--   * the uniqueness of tool call ids and of idempotency keys is kept by partial unique
--     indexes that only a query naming a call id (or a key) can use; the content-hash
--     index covers keyless submits only, the only ones that look it up;
--   * every lookup of a turn by id also names its conversation, so that the partial
--     indexes on status, whose leading column is conversation_id, are bounded too
--     (queries.sql, and the functions of version 3, which replace those of version 1).
-- tests/test_plans.py checks every statement a write runs, with generic plans on a fresh
-- schema. Uniqueness is unchanged (NULLs were never equal).

ALTER TABLE turnstore_messages
    DROP CONSTRAINT turnstore_messages_conversation_id_tool_call_id_key;
CREATE UNIQUE INDEX turnstore_messages_call_ids
    ON turnstore_messages (conversation_id, tool_call_id) WHERE tool_call_id IS NOT NULL;

ALTER TABLE turnstore_turns
    DROP CONSTRAINT turnstore_turns_conversation_id_idempotency_key_key;
CREATE UNIQUE INDEX turnstore_turns_by_key
    ON turnstore_turns (conversation_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

DROP INDEX turnstore_turns_by_content;
CREATE INDEX turnstore_turns_by_content
    ON turnstore_turns (conversation_id, content_hash) WHERE idempotency_key IS NULL;
