-- turnstore schema, version 2, SQLite: the indexes of PostgreSQL's version 2.
--
-- PostgreSQL's planner, before the first ANALYZE, could serve a lookup with an index made
-- for another one and scan a whole conversation (see postgres/0002_stable_plans.sql).
-- SQLite's planner prefers the index that matches the most equality terms and its foreign
-- key checks always use the parent key's index, so it never had that problem; this version
-- keeps the two dialects alike where SQLite allows it:
--   * the content-hash index covers keyless submits only (the only ones that look it up);
--   * every lookup of a turn by id also names its conversation (queries.sql).
-- The uniqueness of tool call ids and of idempotency keys stays a table constraint here:
-- SQLite cannot drop one without rebuilding the table, and the rule it enforces is the
-- same as PostgreSQL's partial unique indexes (NULLs were never equal).

DROP INDEX turnstore_turns_by_content;
CREATE INDEX turnstore_turns_by_content
    ON turnstore_turns (conversation_id, content_hash) WHERE idempotency_key IS NULL;
