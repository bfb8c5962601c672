-- turnstore schema, version 11, SQLite: token and cost accounting (usage). The same table
-- and rules as postgres/0011_usage.sql (read it for what they mean): one row per usage
-- report of a turn (optionally of one of its steps), numbered per turn, costs in
-- billionths of a US dollar; append-only, deleted only with the whole conversation (the
-- erasure's DELETE of its turns cascades here, on connections with foreign keys on, as
-- turnstore's always are).

CREATE TABLE turnstore_usage (
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
    PRIMARY KEY (turn_id, seq),
    UNIQUE (turn_id, usage_id),
    FOREIGN KEY (turn_id, conversation_id)
        REFERENCES turnstore_turns (id, conversation_id) ON DELETE CASCADE
);
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
