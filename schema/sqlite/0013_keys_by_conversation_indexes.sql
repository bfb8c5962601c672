-- turnstore schema, version 13, SQLite: the keys of version 15 as unique indexes, as in
-- postgres/0013_keys_by_conversation_indexes.sql (SQLite builds them inside the
-- migration's transaction; the tables are small: staged steps, usage). This release's
-- staged step upsert (ON CONFLICT (conversation_id, turn_id, step)) needs the first.
--
-- turnstore: expand
-- turnstore: no-transaction

CREATE UNIQUE INDEX IF NOT EXISTS turnstore_staged_steps_by_conversation
    ON turnstore_staged_steps (conversation_id, turn_id, step);

CREATE UNIQUE INDEX IF NOT EXISTS turnstore_usage_by_conversation_seq
    ON turnstore_usage (conversation_id, turn_id, seq);

CREATE UNIQUE INDEX IF NOT EXISTS turnstore_usage_usage_id_key
    ON turnstore_usage (conversation_id, turn_id, usage_id);
