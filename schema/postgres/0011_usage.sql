-- turnstore schema, version 11, PostgreSQL: token and cost accounting (usage).
--
-- Each row is one report of what a model call (or a whole turn) cost: prompt, completion,
-- cache read and cache creation tokens, and the cost in billionths of a US dollar (an exact
-- integer: sums never drift; NULL when the caller does not know the cost). A row belongs
-- to a turn, and optionally to one of its steps (NULL: the turn as a whole, as a runtime
-- that reports one aggregate after its loop does). Rows are numbered per turn (seq) under
-- the conversation's lock, and may carry the caller's id for the report (usage_id), so
-- that a report retried after a lost reply is recognised, never counted twice.
--
-- Usage is append-only like history: recorded, never updated in place. A correction is a
-- new row (the sums are what counts). Rows leave only with their whole conversation: the
-- erasure deletes the conversation's turns, which cascades here, and the trigger lets that
-- DELETE through only for a conversation the erasing transaction recorded
-- (0010_session_marks_and_erasure.sql). Sums per turn and per conversation are read with
-- history (store/usage.py).

CREATE TABLE turnstore_usage (
    turn_id               text        NOT NULL,
    seq                   integer     NOT NULL CHECK (seq >= 1),
    conversation_id       text        NOT NULL,
    step                  integer     CHECK (step >= 1),
    usage_id              text        CHECK (usage_id <> '' AND length(usage_id) <= 256),
    model                 text        CHECK (model <> '' AND length(model) <= 256),
    prompt_tokens         bigint      NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens     bigint      NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cache_read_tokens     bigint      NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0),
    cache_creation_tokens bigint      NOT NULL DEFAULT 0 CHECK (cache_creation_tokens >= 0),
    cost_nano_usd         bigint      CHECK (cost_nano_usd >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (turn_id, seq),
    UNIQUE (turn_id, usage_id),
    FOREIGN KEY (turn_id, conversation_id)
        REFERENCES turnstore_turns (id, conversation_id) ON DELETE CASCADE
);
CREATE INDEX turnstore_usage_by_conversation ON turnstore_usage (conversation_id, turn_id);

CREATE TRIGGER turnstore_usage_no_update
    BEFORE UPDATE ON turnstore_usage
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_change();
CREATE TRIGGER turnstore_usage_no_delete
    BEFORE DELETE ON turnstore_usage
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_delete_unless_erasing();
CREATE TRIGGER turnstore_usage_no_truncate
    BEFORE TRUNCATE ON turnstore_usage
    FOR EACH STATEMENT EXECUTE FUNCTION turnstore_refuse_change();
