-- turnstore schema, version 15, PostgreSQL: the keys by conversation take over from the
-- keys without it (see 0012_keys_by_conversation.sql). After it every primary and unique
-- key of a conversation's tables includes conversation_id, as Citus requires to
-- distribute them (python -m store migrate distributes a Citus coordinator's tables once
-- 15 is applied: docs/scaling.md).
--
-- Contract: release 11's code upserts staged steps ON CONFLICT (turn_id, step), whose key
-- goes, and inserts them without their conversation, which is now NOT NULL. Release 12's
-- code (and later) uses neither. On a database that processes of release 11 still serve,
-- migrate to 14 during the deploy (python -m store migrate --to 14) and apply 15 once no
-- release-11 process runs (python -m store migrate).
--
-- Locks: ACCESS EXCLUSIVE on turnstore_staged_steps, turnstore_turns and turnstore_usage,
-- each for a catalog change only: SET NOT NULL skips its scan (14 validated CHECK
-- (conversation_id IS NOT NULL)), the primary keys are the indexes 13 built (USING INDEX:
-- no build), constraints and keys dropped are not scanned. The turns' replica identity
-- (logical replication, and Citus's shard moves, need one) becomes the unique (id,
-- conversation_id) that the foreign keys reference; turn ids are generated (turn_<uuid4>),
-- so nothing relied on the database to refuse a turn id used in two conversations. The
-- pair keeps its column order (id first): reordering it would build a new index and
-- check every foreign key that references it again, on the largest tables.
-- turnstore_usage_by_conversation (conversation_id, turn_id), a prefix of usage's new key
-- now, stays: dropping an index takes CONCURRENTLY, in a migration of its own.
--
-- turnstore: contract, code from 12

ALTER TABLE turnstore_staged_steps ALTER COLUMN conversation_id SET NOT NULL;

ALTER TABLE turnstore_staged_steps
    DROP CONSTRAINT turnstore_staged_steps_conversation_set,
    DROP CONSTRAINT turnstore_staged_steps_turn_id_fkey,
    DROP CONSTRAINT turnstore_staged_steps_pkey;

ALTER TABLE turnstore_staged_steps
    ADD CONSTRAINT turnstore_staged_steps_pkey
        PRIMARY KEY USING INDEX turnstore_staged_steps_by_conversation;

DROP TRIGGER turnstore_staged_steps_conversation ON turnstore_staged_steps;

DROP FUNCTION turnstore_staged_step_conversation();

ALTER TABLE turnstore_turns DROP CONSTRAINT turnstore_turns_pkey;

ALTER TABLE turnstore_turns REPLICA IDENTITY USING INDEX turnstore_turns_id_conversation_id_key;

ALTER TABLE turnstore_usage
    DROP CONSTRAINT turnstore_usage_pkey,
    DROP CONSTRAINT turnstore_usage_turn_id_usage_id_key;

ALTER TABLE turnstore_usage
    ADD CONSTRAINT turnstore_usage_pkey PRIMARY KEY USING INDEX turnstore_usage_by_conversation_seq,
    ADD CONSTRAINT turnstore_usage_usage_id_key UNIQUE USING INDEX turnstore_usage_usage_id_key;
