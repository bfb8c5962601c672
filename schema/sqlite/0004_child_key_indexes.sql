-- turnstore schema, version 4, SQLite: indexes on the child keys of the pairing checks.
--
-- A step's rows reference each other in a cycle (the assistant message its last tool row,
-- each tool row the row before it), so while a step is being inserted one of SQLite's
-- deferred foreign-key checks is always outstanding. While one is, SQLite checks every row
-- it inserts as a possible parent: it looks for child rows that reference it, which,
-- without an index on the child key, is a scan of the whole table. Versions 1 to 3 made
-- every step cost a scan of the table per row (13 ms per step with 12,000 messages stored).
-- These indexes make those lookups index probes; they are partial, holding only the rows
-- whose child key is set.
--
-- PostgreSQL checks only the child side of a foreign key on INSERT (the parent side on
-- UPDATE or DELETE, which the append-only triggers refuse), so it needs none of these.

CREATE INDEX turnstore_messages_prev_key
    ON turnstore_messages (conversation_id, prev_position)
    WHERE prev_position IS NOT NULL;
CREATE INDEX turnstore_messages_chain_key
    ON turnstore_messages (conversation_id, chain_position, step_position, tool_call_count, step)
    WHERE chain_position IS NOT NULL;
CREATE INDEX turnstore_messages_last_call_key
    ON turnstore_messages (conversation_id, last_call_position, position, tool_call_count, step)
    WHERE last_call_position IS NOT NULL;
