-- turnstore schema, version 1, SQLite. The same tables and constraints as
-- schema/postgres/0001_initial.sql, in SQLite's dialect:
--   * JSON is TEXT checked with json_valid/json_type; times are unix seconds (REAL);
--   * the deferred foreign keys below are enforced on connections that run
--     PRAGMA foreign_keys = ON (turnstore's own connections always do); the CHECK
--     constraints, unique indexes and triggers hold for every client.

CREATE TABLE turnstore_conversations (
    id          TEXT    PRIMARY KEY CHECK (id <> '' AND length(id) <= 256),
    epoch       INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

CREATE TABLE turnstore_turns (
    id               TEXT    PRIMARY KEY,
    conversation_id  TEXT    NOT NULL REFERENCES turnstore_conversations (id),
    idempotency_key  TEXT    CHECK (idempotency_key <> ''),
    content_hash     TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN
                         ('queued', 'running', 'finished', 'failed', 'interrupted',
                          'expired', 'refused')),
    epoch            INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT    NOT NULL,
    lease_expires_at REAL    NOT NULL,
    steps            INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at       REAL,
    ended_at         REAL,
    UNIQUE (id, conversation_id),
    UNIQUE (conversation_id, idempotency_key)
);

CREATE UNIQUE INDEX turnstore_turns_one_running
    ON turnstore_turns (conversation_id) WHERE status = 'running';
CREATE INDEX turnstore_turns_waiting
    ON turnstore_turns (conversation_id, created_at) WHERE status IN ('queued', 'running');
CREATE INDEX turnstore_turns_by_content
    ON turnstore_turns (conversation_id, content_hash);

CREATE TABLE turnstore_messages (
    conversation_id  TEXT    NOT NULL,
    position         INTEGER NOT NULL CHECK (position >= 0),
    role             TEXT    NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    turn_id          TEXT    NOT NULL,
    step             INTEGER NOT NULL CHECK (step >= 0),
    step_position    INTEGER NOT NULL,
    tool_call_count  INTEGER NOT NULL DEFAULT 0 CHECK (tool_call_count >= 0),
    content          TEXT    NOT NULL CHECK (json_valid(content) AND json_type(content) = 'array'),
    tool_call_id     TEXT    CHECK (tool_call_id <> ''),
    tool_name        TEXT    CHECK (tool_name <> ''),
    tool_arguments   TEXT    CHECK (tool_arguments IS NULL OR
                                 (json_valid(tool_arguments) AND json_type(tool_arguments) = 'object')),
    tool_call_data   TEXT    CHECK (tool_call_data IS NULL OR json_valid(tool_call_data)),
    is_error         INTEGER NOT NULL DEFAULT 0 CHECK (is_error IN (0, 1)),
    created_at       REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),

    -- The turn a user message opens; a turn's other messages follow it (see the checker).
    user_turn_id     TEXT GENERATED ALWAYS AS (CASE WHEN role = 'user' THEN turn_id END) STORED,
    prev_position    INTEGER GENERATED ALWAYS AS (NULLIF(position, 0) - 1) STORED,
    chain_position   INTEGER GENERATED ALWAYS AS
                         (CASE WHEN role = 'tool' THEN position - 1 END) STORED,
    last_call_position INTEGER GENERATED ALWAYS AS
                         (CASE WHEN role = 'assistant' AND tool_call_count > 0
                               THEN position + tool_call_count END) STORED,

    PRIMARY KEY (conversation_id, position),
    UNIQUE (conversation_id, position, step_position, tool_call_count, step),
    UNIQUE (conversation_id, tool_call_id),
    -- Checked once per turn, on its user message (a check on every row costs a row lock
    -- of the turn per message).
    FOREIGN KEY (user_turn_id, conversation_id) REFERENCES turnstore_turns (id, conversation_id),

    CONSTRAINT turnstore_message_shape CHECK (CASE role
        WHEN 'user' THEN step = 0 AND step_position = position AND tool_call_count = 0
             AND tool_call_id IS NULL AND tool_name IS NULL AND tool_arguments IS NULL
             AND tool_call_data IS NULL AND NOT is_error
        WHEN 'assistant' THEN step >= 1 AND step_position = position
             AND tool_call_id IS NULL AND tool_name IS NULL AND tool_arguments IS NULL
             AND tool_call_data IS NULL AND NOT is_error
        ELSE step >= 1 AND step_position < position
             AND position <= step_position + tool_call_count
             AND tool_call_id IS NOT NULL AND tool_name IS NOT NULL
             AND tool_arguments IS NOT NULL
        END),
    CONSTRAINT turnstore_dense_positions
        FOREIGN KEY (conversation_id, prev_position)
        REFERENCES turnstore_messages (conversation_id, position)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT turnstore_result_follows_its_step
        FOREIGN KEY (conversation_id, chain_position, step_position, tool_call_count, step)
        REFERENCES turnstore_messages (conversation_id, position, step_position,
                                       tool_call_count, step)
        DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT turnstore_every_call_answered
        FOREIGN KEY (conversation_id, last_call_position, position, tool_call_count, step)
        REFERENCES turnstore_messages (conversation_id, position, step_position,
                                       tool_call_count, step)
        DEFERRABLE INITIALLY DEFERRED
);

CREATE TRIGGER turnstore_messages_no_update BEFORE UPDATE ON turnstore_messages
BEGIN
    SELECT RAISE(ABORT, 'turnstore: UPDATE on turnstore_messages is refused: committed history is append-only');
END;
CREATE TRIGGER turnstore_messages_no_delete BEFORE DELETE ON turnstore_messages
BEGIN
    SELECT RAISE(ABORT, 'turnstore: DELETE on turnstore_messages is refused: committed history is append-only');
END;

CREATE TABLE turnstore_staged_steps (
    turn_id     TEXT    NOT NULL REFERENCES turnstore_turns (id),
    step        INTEGER NOT NULL CHECK (step >= 1),
    payload     TEXT    NOT NULL CHECK (json_valid(payload)),
    updated_at  REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (turn_id, step)
);
