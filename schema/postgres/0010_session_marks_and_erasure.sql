-- turnstore schema, version 10, PostgreSQL: pop and clear on append-only history, and the
-- erasure of a whole conversation.
--
-- 1. Session marks. A session of the OpenAI Agents SDK (store/integrations/openai_agents.py)
-- shows a conversation as the SDK's items and must offer pop_item() and clear_session().
-- History is never rewritten for them: each is recorded here, as a mark, and the session
-- leaves out what its marks hide (see store/integrations/agents_log.py):
--   kind 'clear': every item at a position below `position` (the conversation's next
--                 position when it was cleared);
--   kind 'pop':   one item of the message at `position`: `slot` is its place among the
--                 items that message holds (a tool row holds two: its call, slot 0, and its
--                 result, slot 1).
-- Marks are written under the conversation's advisory lock, like every write, so two
-- sessions popping at once each pop a different item. Like history, marks are append-only.
-- turnstore_session_writes records each write of a session by an id of its own, so that a
-- write retried after a lost reply is answered with its first outcome, never applied twice.
--
-- 2. Erasure. Store.delete_conversation(id) (python -m store delete) removes every row of
-- one conversation, in one transaction: the one path by which rows leave. The append-only
-- triggers now let a DELETE through for a conversation that the same transaction recorded
-- in turnstore_erasures first (the erasure removes that record before it commits). UPDATE
-- and TRUNCATE stay refused, and so does a DELETE of any other conversation.

CREATE TABLE turnstore_session_marks (
    conversation_id text        NOT NULL REFERENCES turnstore_conversations (id),
    seq             bigint      NOT NULL CHECK (seq >= 1),
    kind            text        NOT NULL CHECK (kind IN ('clear', 'pop')),
    position        bigint      NOT NULL CHECK (position >= 0),
    slot            integer     CHECK (slot >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq),
    CONSTRAINT turnstore_mark_shape CHECK ((kind = 'clear') = (slot IS NULL))
);
CREATE INDEX turnstore_session_marks_by_kind
    ON turnstore_session_marks (conversation_id, kind, position);

-- The writes a session made (add_items, pop_item, clear_session), by the id the session
-- gave each: a write retried after its reply was lost finds its own record and is answered
-- with the outcome recorded (a pop returns the item it popped), never applied twice.
CREATE TABLE turnstore_session_writes (
    conversation_id text        NOT NULL,
    write_id        text        NOT NULL CHECK (write_id <> ''),
    outcome         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, write_id)
);

-- A conversation being erased, for the length of the erasing transaction.
CREATE TABLE turnstore_erasures (
    conversation_id text PRIMARY KEY
);

CREATE FUNCTION turnstore_refuse_delete_unless_erasing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM turnstore_erasures e
                WHERE e.conversation_id = OLD.conversation_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'turnstore: DELETE on % is refused: committed history is append-only (a whole conversation is erased with python -m store delete)',
        TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation';
END $$;

DROP TRIGGER turnstore_messages_append_only ON turnstore_messages;
CREATE TRIGGER turnstore_messages_no_update
    BEFORE UPDATE ON turnstore_messages
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_change();
CREATE TRIGGER turnstore_messages_no_delete
    BEFORE DELETE ON turnstore_messages
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_delete_unless_erasing();

CREATE TRIGGER turnstore_session_marks_no_update
    BEFORE UPDATE ON turnstore_session_marks
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_change();
CREATE TRIGGER turnstore_session_marks_no_delete
    BEFORE DELETE ON turnstore_session_marks
    FOR EACH ROW EXECUTE FUNCTION turnstore_refuse_delete_unless_erasing();
CREATE TRIGGER turnstore_session_marks_no_truncate
    BEFORE TRUNCATE ON turnstore_session_marks
    FOR EACH STATEMENT EXECUTE FUNCTION turnstore_refuse_change();
