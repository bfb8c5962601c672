-- turnstore schema, version 15, SQLite: staged steps keyed (conversation_id, turn_id,
-- step) with their conversation NOT NULL, usage keyed by conversation first, as in
-- postgres/0015_keys_by_conversation_contract.sql. Contract, as there: release 11's code
-- upserts staged steps ON CONFLICT (turn_id, step), whose key goes.
--
-- Both tables are rebuilt (SQLite cannot change a primary key in place): a new table, the
-- rows copied, the old table dropped (its indexes and triggers with it: 12's trigger, 13's
-- indexes; nothing references either table), the new one renamed. Staged steps are the
-- checkpoints of running turns (a few rows); usage is a few rows per turn; history is not
-- touched. The rebuild runs inside the migration's transaction, which holds the
-- database's write lock throughout.
--
-- One key differs from PostgreSQL's: turnstore_turns keeps its primary key on id (and its
-- unique (id, conversation_id), which the foreign keys reference). Dropping it would mean
-- rebuilding the turns table, which history references, for a database that is never
-- sharded; a turn id stays unique across conversations here, which refuses nothing the
-- store writes (turn ids are generated, turn_<uuid4>). The index of usage by
-- (conversation_id, turn_id) is built again, as PostgreSQL keeps it.
--
-- turnstore: contract, code from 12

CREATE TABLE turnstore_staged_steps_v15 (
    conversation_id TEXT    NOT NULL,
    turn_id         TEXT    NOT NULL,
    step            INTEGER NOT NULL CHECK (step >= 1),
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    updated_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (conversation_id, turn_id, step),
    FOREIGN KEY (turn_id, conversation_id) REFERENCES turnstore_turns (id, conversation_id)
);
INSERT INTO turnstore_staged_steps_v15 (conversation_id, turn_id, step, payload, updated_at)
SELECT coalesce(s.conversation_id, t.conversation_id), s.turn_id, s.step, s.payload,
       s.updated_at
  FROM turnstore_staged_steps s JOIN turnstore_turns t ON t.id = s.turn_id;
DROP TABLE turnstore_staged_steps;
ALTER TABLE turnstore_staged_steps_v15 RENAME TO turnstore_staged_steps;

CREATE TABLE turnstore_usage_v15 (
    turn_id               TEXT    NOT NULL,
    seq                   INTEGER NOT NULL CHECK (seq >= 1),
    conversation_id       TEXT    NOT NULL,
    step                  INTEGER CHECK (step >= 1),
    usage_id              TEXT    CHECK (usage_id <> '' AND length(usage_id) <= 256),
    model                 TEXT    CHECK (model <> '' AND length(model) <= 256),
    prompt_tokens         INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cache_creation_tokens >= 0),
    cost_nano_usd         INTEGER CHECK (cost_nano_usd >= 0),
    created_at            REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (conversation_id, turn_id, seq),
    UNIQUE (conversation_id, turn_id, usage_id),
    FOREIGN KEY (turn_id, conversation_id)
        REFERENCES turnstore_turns (id, conversation_id) ON DELETE CASCADE
);
INSERT INTO turnstore_usage_v15
SELECT turn_id, seq, conversation_id, step, usage_id, model, prompt_tokens,
       completion_tokens, cache_read_tokens, cache_creation_tokens, cost_nano_usd, created_at
  FROM turnstore_usage;
DROP TABLE turnstore_usage;
ALTER TABLE turnstore_usage_v15 RENAME TO turnstore_usage;
CREATE INDEX turnstore_usage_by_conversation ON turnstore_usage (conversation_id, turn_id);

CREATE TRIGGER turnstore_usage_no_update BEFORE UPDATE ON turnstore_usage
BEGIN
    SELECT RAISE(ABORT, 'turnstore: UPDATE on turnstore_usage is refused: usage is append-only');
END;
CREATE TRIGGER turnstore_usage_no_delete BEFORE DELETE ON turnstore_usage
WHEN NOT EXISTS (SELECT 1 FROM turnstore_erasures WHERE conversation_id = OLD.conversation_id)
BEGIN
    SELECT RAISE(ABORT, 'turnstore: DELETE on turnstore_usage is refused: usage is append-only (a whole conversation is erased with python -m store delete)');
END;
